"""Conversations: find conversations by date, text, source, rating and tag; read, annotate,
replay and export them."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from chatcore import annotations
from chatcore.client import SpaceClient, space_health
from chatcore.conversations import (DATE_PRESETS, RATING_FILTERS, conversation_table, conversations_matching,
                                    export_file_name, export_turns, filter_annotated, filter_dates, filter_rated, filter_sources,
                                    format_duration, markdown_transcript, preset_range, ratings_by_turn,
                                    with_annotations)
from chatcore.dashboard import escape_markdown, excerpt, format_ms, format_time, tz_name
from chatcore.pii import mask_frame, mask_pii
from chatcore.replay import diff_html, new_replay_id, replay_conversation
from chatcore.settings import display_url
from pages._shared import (PAGES, current_user, header, load_annotations, load_feedback, load_frame, settings,
                           through_entry, viewer_tz)

through_entry()

cfg = settings()
tz = viewer_tz()
ss = st.session_state
now = datetime.now(timezone.utc)
frame, stats = load_frame(cfg.log_path)
feedback = load_feedback(cfg.log_path)
notes = load_annotations(cfg.log_path)
rated = ratings_by_turn(feedback)
TAG_SUGGESTIONS = ["escalated", "bug", "resolved"]
TIMEOUT = float(os.environ.get("CHAT_DASHBOARD_TIMEOUT", "30") or 30)

# A conversation picked elsewhere (the Live page) arrives as ?conversation=<id>.
wanted = st.query_params.get("conversation")
if wanted and wanted != ss.get("conv_from_link"):
    ss.conv_from_link = wanted
    ss.conv_selected = wanted
    ss.conv_force = wanted  # shown in the transcript picker once; the viewer may pick another

header("Conversations", ":material/forum:", f"Grouped by conversation_id · times in {tz_name(tz)}")
mask = st.toggle("Mask personal data", key="conv_mask",
                 help="Hide e-mail addresses, phone and card numbers in the table, the transcript and every export")
known_tags = sorted({t for entry in notes.values() for t in entry["tags"]})

with st.container(border=True):
    c1, c2, c3 = st.columns([1.2, 2, 1.5])
    preset = c1.selectbox("Date range", DATE_PRESETS, index=DATE_PRESETS.index("Last 7 days"), key="conv_preset")
    query = c2.text_input("Search questions and replies", key="conv_search", placeholder="e.g. password")
    sources = sorted({str(s) for s in frame["source"].dropna().unique()}) if not frame.empty else []
    chosen = c3.multiselect("Source", sources, key="conv_sources", placeholder="All sources")
    custom = None
    if preset == "Custom":
        today = now.astimezone(tz).date()
        picked = st.date_input("Days", value=(today - timedelta(days=7), today), key="conv_days")
        if isinstance(picked, (tuple, list)):
            custom = (picked[0] if len(picked) > 0 else None, picked[1] if len(picked) > 1 else None)
        else:
            custom = (picked, picked)
    since, until = preset_range(preset, now=now, tz=tz, custom=custom)
    r1, r2, r3 = st.columns([1.2, 2, 1.5])
    rating = r1.selectbox("Rating", RATING_FILTERS, key="conv_rating")
    note_query = r2.text_input("Search tags and notes", key="conv_note_search", placeholder="e.g. refund")
    tag = r3.selectbox("Tag", known_tags, index=None, key="conv_tag", placeholder="Any tag")

view = filter_sources(filter_dates(frame, since, until), chosen)
view = conversations_matching(view, query)
table = with_annotations(conversation_table(view), feedback, notes)
table = filter_annotated(filter_rated(table, rating), notes, tag=tag, text=note_query)
view = view[view["conversation_id"].astype(str).isin(set(table["conversation_id"]))]
if mask:
    view = mask_frame(view)
    table = table.assign(first_user_text=table["first_user_text"].map(mask_pii))

m1, m2, m3 = st.columns(3)
m1.metric("Conversations", len(table))
m2.metric("Turns", len(view))
m3.metric("Errors", int(table["errors"].sum()) if len(table) else 0)

with st.container(border=True):
    st.subheader("Matching conversations", anchor=False)
    if table.empty:
        st.info("No conversations match these filters.", icon=":material/search_off:")
    else:
        shown = {
            "conversation_id": list(table["conversation_id"]),
            "turns": [int(t) for t in table["turns"]],
            "first": [format_time(t, tz, now) for t in table["first_ts"]],
            "last": [format_time(t, tz, now) for t in table["last_ts"]],
            "duration": [format_duration(d) for d in table["duration_s"]],
            "source": list(table["source"]),
            "errors": [int(e) for e in table["errors"]],
            "👎": [int(d) for d in table["down"]],
            "tags": [", ".join(t) for t in table["tags"]],
            "first question": [excerpt(t, 90) for t in table["first_user_text"]],
        }
        event = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row",
                             key="conv_table", height=min(420, 38 + 35 * len(table)))
        rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
        if rows and rows[0] < len(table):
            picked = table["conversation_id"].iloc[rows[0]]
            if picked != ss.get("conv_table_pick"):
                ss.conv_table_pick = picked
                ss.conv_selected = picked
                ss.conv_force = picked
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button("Export CSV", export_turns(view, "csv"), file_name="conversations.csv",
                       mime="text/csv", icon=":material/download:", key="conv_csv", disabled=view.empty)
    d2.download_button("Export JSONL", export_turns(view, "jsonl"), file_name="conversations.jsonl",
                       mime="application/x-ndjson", icon=":material/download:", key="conv_jsonl",
                       disabled=view.empty)

# ------------------------------------------------------------------ tags and notes


def _save(action, *args) -> bool:
    try:
        action(cfg.log_path, *args, author=current_user())
    except (ValueError, OSError) as exc:
        ss.conv_note_error = str(exc)
        return False
    ss.conv_note_error = None
    return True


def _add_tag(cid: str) -> None:
    tag = (ss.get("conv_new_tag") or "").strip()
    if tag and _save(annotations.add_tag, cid, tag):
        ss.conv_new_tag = ""


def _add_suggested(cid: str, key: str) -> None:
    tag = ss.get(key)
    if tag:
        _save(annotations.add_tag, cid, tag)
    ss[key] = None


def _remove_tag(cid: str, key: str) -> None:
    tag = ss.get(key)
    if tag and _save(annotations.remove_tag, cid, tag):
        ss[key] = None


def annotate(cid: str) -> None:
    """Tags (pills; select one to remove it), a tag picker with suggestions, and notes."""
    entry = notes.get(cid) or {"tags": set(), "notes": [], "replays": []}
    with st.container(border=True, key="conv_notes_box"):
        st.subheader("Tags and notes", anchor=False)
        tags = sorted(entry["tags"])
        pill_key = f"conv_tags_{cid}"
        if tags:
            if ss.get(pill_key) not in (None, *tags):
                ss[pill_key] = None
            picked = st.pills("Tags", tags, key=pill_key, format_func=escape_markdown,
                              help="Select a tag to remove it")
            if picked:
                st.button(f"Remove tag {escape_markdown(picked)}", icon=":material/close:", key="conv_untag",
                          on_click=_remove_tag, args=(cid, pill_key))
        else:
            st.caption("No tags yet.")
        a, b = st.columns([3, 1], vertical_alignment="bottom")
        a.text_input("Add a tag", key="conv_new_tag", max_chars=32, placeholder="e.g. escalated")
        b.button("Add tag", icon=":material/sell:", key="conv_add_tag", on_click=_add_tag, args=(cid,),
                 width="stretch")
        offered = sorted((set(TAG_SUGGESTIONS) | set(known_tags)) - entry["tags"])
        if offered:
            st.pills("Suggestions (click to add)", offered, key=f"conv_tag_suggest_{cid}", default=None,
                     format_func=escape_markdown, on_change=_add_suggested, args=(cid, f"conv_tag_suggest_{cid}"))
        with st.form("conv_note_form", clear_on_submit=True, border=False):
            text = st.text_area("Add a note", key="conv_note_text", max_chars=annotations.MAX_NOTE, height=80,
                                placeholder="What happened, what was done, who follows up…")
            if st.form_submit_button("Save note", icon=":material/note_add:"):
                if _save(annotations.add_note, cid, text):
                    st.rerun()
        if ss.get("conv_note_error"):
            st.error(ss.conv_note_error, icon=":material/error:")
        for ts, author, text in reversed(entry["notes"]):
            st.caption(f"{format_time(pd.Timestamp(ts), tz, now)} · {escape_markdown(str(author))}")
            st.text(mask_pii(text) if mask else text)


# -------------------------------------------------------------------------- replay

_DEL = '<del style="background:#fee4e2;color:#b42318;text-decoration:line-through">'
_INS = '<ins style="background:#dcfae6;color:#067647;text-decoration:none">'
_BOX = '<div class="replay-diff" style="white-space:pre-wrap;font-size:0.95rem;line-height:1.5">{}</div>'


def styled_diff(old: str, new: str) -> tuple[str, str]:
    """``diff_html`` (escaped text) with inline colours on its <del> and <ins> tags."""
    left, right = diff_html(old or "", new or "")
    paint = lambda h: _BOX.format(h.replace("<del>", _DEL).replace("<ins>", _INS))  # noqa: E731
    return paint(left), paint(right)


def run_replay(cid: str, original: pd.DataFrame) -> None:
    store = ss.setdefault("conv_replays", {})
    n = len(original)
    with st.status(f"Replaying {n} turn(s) against {display_url(cfg.space_url)} …", expanded=True) as status:
        if space_health(cfg.space_url, timeout=3.0).get("status") != "ok":
            status.update(label="Replay not started: the Space is not reachable", state="error", expanded=False)
            store[cid] = {"error": f"Cannot reach the Space at {display_url(cfg.space_url)}. Start it or check the Space URL "
                                   "in the settings; nothing was replayed."}
            return
        bar = st.progress(0.0, text=f"Turn 0 of {n}")
        done: list = []

        def on_turn(item) -> None:
            done.append(item)
            state = "error" if item.error else ("same" if item.same else "changed")
            bar.progress(len(done) / n, text=f"Turn {len(done)} of {n}: {state}")

        client = SpaceClient(cfg.space_url, timeout=TIMEOUT, log_path=cfg.log_path)
        try:
            result = replay_conversation(original, client, replay_id=new_replay_id(), on_turn=on_turn)
        except Exception as exc:  # a message, never a traceback
            status.update(label="Replay failed", state="error", expanded=False)
            store[cid] = {"error": f"The replay failed: {exc}"}
            return
        finally:
            client.close()
        answered = [t for t in result.turns if t.error is None]
        if answered:
            try:
                annotations.link_replay(cfg.log_path, cid, result.replay_id, author=current_user())
            except (ValueError, OSError):
                pass  # the replay is still shown; only the link is missing
        store[cid] = {"result": result,
                      "error": None if answered else "The Space answered none of the turns; see below."}
        status.update(label=f"Replay done: {result.changed} of {len(result.turns)} turn(s) changed",
                      state="complete" if answered else "error", expanded=False)


def replay_panel(cid: str, original: pd.DataFrame) -> None:
    entry = notes.get(cid) or {"replays": []}
    with st.container(border=True, key="conv_replay_box"):
        st.subheader("Replay", anchor=False)
        st.caption("Send this conversation's questions to the current Space again and compare the replies. "
                   "The replay is a new conversation (source = replay), linked here.")
        clicked = st.button("Replay against the current Space", icon=":material/replay:", key="conv_replay_btn",
                            disabled=original.empty)
        if clicked:
            run_replay(cid, original)
        shown = (ss.get("conv_replays") or {}).get(cid)
        replays = list(entry.get("replays") or [])
        if shown and shown.get("result") is not None and shown["result"].replay_id not in replays \
                and shown["result"].replay_id:
            replays.append(shown["result"].replay_id)
        if replays:
            st.caption(f"Replays of this conversation ({len(replays)}):")
            for rid in reversed(replays):
                st.page_link(PAGES["conversations"], label=f"Open {rid}", icon=":material/forum:",
                             query_params={"conversation": rid})
        if not shown:
            return
        if shown.get("error"):
            st.error(shown["error"], icon=":material/error:")
        result = shown.get("result")
        if result is None:
            return
        st.markdown(f"**{result.changed} of {len(result.turns)} turns changed**")
        st.caption(f"Replay {result.replay_id}")
        for item in result.turns:
            with st.container(border=True):
                label = "error" if item.error else ("unchanged" if item.same else
                                                    f"changed · {100 * item.similarity:.0f} % similar")
                st.caption(f"Turn {item.turn} · {label}")
                st.text(mask_pii(item.user_text) if mask else item.user_text)
                if item.error:
                    st.error("This turn was not replayed", icon=":material/error:")
                    st.text(item.error)
                    continue
                old, new = (mask_pii(item.old), mask_pii(item.new)) if mask else (item.old, item.new)
                left_html, right_html = styled_diff(old or "", new or "")
                left, right = st.columns(2)
                with left:
                    st.caption("Logged reply")
                    st.html(left_html)
                with right:
                    st.caption("Reply now")
                    st.html(right_html)


# ----------------------------------------------------------------------- transcript

ids = list(table["conversation_id"]) if not table.empty else []
selected = ss.get("conv_selected")
if (selected and selected not in ids and selected == ss.get("conv_from_link")
        and not frame.empty and (frame["conversation_id"] == selected).any()):
    ids = [selected] + ids  # opened from a link but outside the current filters
if ids:
    force = ss.pop("conv_force", None)
    if force in ids:
        ss.conv_pick = force
    elif ss.get("conv_pick") not in ids:
        ss.conv_pick = selected if selected in ids else ids[0]
    firsts = dict(zip(table["conversation_id"], table["first_user_text"])) if not table.empty else {}
    cid = st.selectbox("Transcript of", ids, key="conv_pick",
                       format_func=lambda c: f"{c}  ·  {excerpt(firsts.get(c), 60)}" if firsts.get(c) else c)
    ss.conv_selected = cid
    original_turns = frame[frame["conversation_id"] == cid].sort_values("ts", kind="stable")
    turns = mask_frame(original_turns) if mask else original_turns
    with st.container(border=True):
        top, dl = st.columns([4, 1], vertical_alignment="center")
        with top:
            st.subheader("Transcript", anchor=False)
            st.code(cid, language=None)
            first, last = turns["ts"].iloc[0], turns["ts"].iloc[-1]
            st.caption(f"{len(turns)} turn(s) · {format_time(first, tz, now)} – {format_time(last, tz, now)} · "
                       f"{format_duration((last - first).total_seconds())}")
        dl.download_button("Markdown", markdown_transcript(turns), file_name=export_file_name(cid, "md"),
                           mime="text/markdown", icon=":material/download:", key="conv_md")
        for row in turns.itertuples(index=False):
            with st.chat_message("user"):
                st.text(row.user_text or "")
                turn = "?" if pd.isna(row.turn) else int(row.turn)
                st.caption(f"{format_time(row.ts, tz, now)} · turn {turn} · {escape_markdown(str(row.source))}")
            with st.chat_message("assistant"):
                st.text(row.response or "")
                thumbs = {"up": " · 👍 rated up", "down": " · 👎 rated down"}.get(
                    rated.get((cid, turn)) if turn != "?" else None, "")
                st.caption(f"latency {format_ms(row.latency_ms)}{thumbs}")
                if isinstance(row.error, str) and row.error:
                    st.error("Error logged for this turn", icon=":material/error:")
                    st.text(row.error)

    annotate(cid)
    replay_panel(cid, original_turns)
