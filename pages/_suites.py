"""The "Regression suites" block of a transcript: add the conversation to a suite, write ideal answers.

Called with one line from pages/conversations.py; the logic is in ``chatcore.staff.suites``.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from chatcore.staff import suites as sx


def suite_panel(cid: str, turns: pd.DataFrame, log_path, author: str = "staff") -> None:
    """``turns``: the conversation's logged turns (the references a suite keeps)."""
    ss = st.session_state
    try:
        known = sx.load_suites(log_path)
    except Exception:  # a broken suites file must not take the page down
        known = {}
    holding = sorted(name for name, s in known.items() if cid in s.conversations)
    with st.container(border=True, key="suite_box"):
        st.subheader("Regression suites", anchor=False)
        st.caption("Add this conversation to a suite to replay it before a prompt or model change "
                   "(Evaluate page, or python -m chatcore eval). "
                   + (f"In: {', '.join(holding)}." if holding else "In no suite yet."))
        names = sorted(known)
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        with left:
            name = st.text_input("Suite", key="suite_name", max_chars=64, placeholder="e.g. refunds",
                                 help=("Existing: " + ", ".join(names)) if names else None)
        with right:
            add = st.button("Add to suite", icon=":material/playlist_add:", key="suite_add_btn",
                            disabled=turns.empty)
        golden = st.checkbox("Golden suite: every turn is a known-good answer", key="suite_golden",
                             help="Otherwise ratings say which turns are known-bad (rated down, or the visitor "
                                  "asked for a person right after) and known-good (rated up).")
        if add:
            try:
                frame = turns.assign(conversation_id=cid)
                added = sx.add_conversations(log_path, (name or "").strip(), frame, [cid],
                                             filter="picked by hand", author=author)
                if added and golden:
                    sx.set_options(log_path, name.strip(), golden=True, author=author)
            except (ValueError, OSError) as exc:
                ss.suite_msg = ("error", str(exc))
            else:
                ss.suite_msg = ("ok", f"Added to suite {name.strip()}.") if added else \
                    ("error", "This conversation has no turns to add.")
            st.rerun()
        if holding:
            which = st.selectbox("Remove from", holding, key="suite_remove_pick")
            if st.button("Remove from suite", icon=":material/playlist_remove:", key="suite_remove_btn"):
                try:
                    sx.remove_conversation(log_path, which, cid, author=author)
                    ss.suite_msg = ("ok", f"Removed from suite {which}.")
                except (ValueError, OSError) as exc:
                    ss.suite_msg = ("error", str(exc))
                st.rerun()

        if not turns.empty:
            ideals = sx.load_ideals(log_path)
            count = len(turns)
            turn = st.selectbox("Ideal answer for turn", list(range(count)), key="suite_ideal_turn",
                                format_func=lambda t: f"turn {t}" + (" · has an ideal answer"
                                                                     if (cid, t) in ideals else ""))
            current = ideals.get((cid, turn), "")
            text = st.text_area("Ideal answer", value=current, key=f"suite_ideal_text_{cid}_{turn}",
                                max_chars=sx.MAX_IDEAL, height=90,
                                help="What the reply should have said; eval runs score replies against it too. "
                                     "Empty clears it.")
            if st.button("Save ideal answer", icon=":material/check:", key="suite_ideal_btn"):
                try:
                    sx.set_ideal(log_path, cid, int(turn), text, author=author)
                    ss.suite_msg = ("ok", f"Ideal answer {'saved' if text.strip() else 'cleared'} for turn {turn}.")
                except (ValueError, OSError) as exc:
                    ss.suite_msg = ("error", str(exc))
                st.rerun()
        msg = ss.pop("suite_msg", None)
        if msg:
            (st.success if msg[0] == "ok" else st.error)(msg[1])
