"""Conversations: find conversations by date, text, id, source, rating and tag; read, annotate,
replay and export them.

The list, its totals, the search and every filter are questions to the SQL engine
(:mod:`chatcore.store.questions`); the browser receives one page of rows. Exports are
built only when a download is asked for."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from chatcore.log import annotations
from chatcore.remote.client import SpaceClient, space_health
from chatcore.store.conversation_frames import (DATE_PRESETS, RATING_FILTERS, export_file_name, export_turns, format_duration,
                                    markdown_transcript, preset_range, rating_counts, ratings_by_turn)
from chatcore.dashboard.views import escape_markdown, excerpt, format_ms, format_time, tz_name
from chatcore.log.pii import mask_frame, mask_pii
from chatcore.log.records import ID_PATTERN
from chatcore.config import display_url
from chatcore.store.frames import _to_pandas
from chatcore.store.questions import Filters
from pages._shared import (PAGES, current_user, header, load_annotations, load_questions, settings, through_entry,
                           viewer_tz)

through_entry()

cfg = settings()
tz = viewer_tz()
ss = st.session_state
# to the minute: a rolling range ("Last 7 days") then stays the same question for a minute,
# and the engine's answer is reused by every rerun and session in that minute
now = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
questions = load_questions(cfg.log_path)
try:
    feedback, feedback_version = annotations.feedback_state(cfg.log_path)
except Exception:  # a broken annotations file must not take the page down
    feedback, feedback_version = pd.DataFrame(columns=["ts", "conversation_id", "turn", "rating", "by", "source"]), -1
notes = load_annotations(cfg.log_path)


@st.cache_resource(show_spinner=False, max_entries=4)
def _ratings(path: str, version: int, _feedback: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Ratings per turn and per conversation, computed once per version of the feedback file."""
    return ratings_by_turn(_feedback), rating_counts(_feedback)


rated, rated_counts = _ratings(str(cfg.log_path), feedback_version, feedback)
if questions is not None:
    questions.set_ratings(rated_counts, feedback_version)
TAG_SUGGESTIONS = ["escalated", "bug", "resolved"]
TIMEOUT = cfg.dashboard_timeout
PAGE_SIZES = (25, 50, 100, 250)
SORTS = {"Last turn, newest first": ("last_ts", True), "Last turn, oldest first": ("last_ts", False),
         "First turn, newest first": ("first_ts", True), "Most turns": ("turns", True),
         "Longest": ("duration_s", True), "Most errors": ("errors", True), "Most rated down": ("down", True)}

# A conversation picked elsewhere (the Live page) arrives as ?conversation=<id>.
wanted = st.query_params.get("conversation")
if wanted and wanted != ss.get("conv_from_link"):
    ss.conv_from_link = wanted
    ss.conv_selected = wanted
    ss.conv_force = wanted  # shown in the transcript picker once; the viewer may pick another

header("Conversations", ":material/forum:", f"Grouped by conversation_id · times in {tz_name(tz)}")
t1, t2 = st.columns([1, 1])
mask = t1.toggle("Mask personal data", key="conv_mask",
                 help="Hide e-mail addresses, phone and card numbers in the table, the transcript and every export")
include_test = t2.toggle("Include test traffic", key="conv_include_test",
                         help="Replays and simulated visitors; only real visitors' conversations when off")
known_tags = sorted({t for entry in notes.values() for t in entry["tags"]})

with st.container(border=True):
    c1, c2, c3 = st.columns([1.2, 2, 1.5])
    preset = c1.selectbox("Date range", DATE_PRESETS, index=DATE_PRESETS.index("Last 7 days"), key="conv_preset")
    query = c2.text_input("Search questions, replies and ids", key="conv_search",
                          placeholder="e.g. password, or the start of a conversation id",
                          help="Text in a question or reply (any case), or the first characters of a "
                               "conversation id; a full id opens that conversation")
    sources = questions.sources() if questions is not None else []
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
    r1, r2, r3, r4 = st.columns([1.2, 2, 1.5, 1.2])
    rating = r1.selectbox("Rating", RATING_FILTERS, key="conv_rating")
    note_query = r2.text_input("Search tags and notes", key="conv_note_search", placeholder="e.g. refund")
    tag = r3.selectbox("Tag", known_tags, index=None, key="conv_tag", placeholder="Any tag")
    versions = [v for v in questions.distinct("prompt_version") if v] if questions is not None else []
    version = r4.selectbox("Prompt version", versions, index=None, key="conv_prompt_version",
                           placeholder="Any prompt", help="Conversations with a reply written by this system "
                                                          "prompt (CHAT_PROMPT_VERSION, or a hash of the prompt)")

query = (query or "").strip()
# a pasted full conversation id opens that conversation
if (query and query != ss.get("conv_query_opened") and questions is not None and ID_PATTERN.match(query)
        and questions.has_conversation(query)):
    ss.conv_query_opened = query
    ss.conv_selected = query
    ss.conv_force = query
ids = None
if tag or (note_query or "").strip():
    ids = frozenset(annotations.conversations_with(notes, tag=tag or None, text=(note_query or "").strip() or None))
if version:
    by_version = questions.prompt_version_ids(version, Filters(since=since, until=until))
    ids = by_version if ids is None else ids & by_version
filters = Filters(since=since, until=until, search=query, sources=tuple(chosen), rating=rating, ids=ids,
                  include_test=include_test)
listing = questions.conversations(filters) if questions is not None else None
total = listing.total if listing is not None else 0

m1, m2, m3 = st.columns(3)
m1.metric("Conversations", f"{total:,}")
m2.metric("Turns", f"{listing.turns if listing is not None else 0:,}")
m3.metric("Errors", f"{listing.errors if listing is not None else 0:,}")


def export_view(fmt: str, flt: Filters, masked: bool):
    """The turns of every listed conversation as CSV or JSONL: a callable, so Streamlit
    builds the file only when the download is asked for, not on every rerun."""
    def build() -> str:
        turns = _to_pandas(questions.turns_of(flt))
        return export_turns(mask_frame(turns) if masked else turns, fmt)
    return build


page_rows = pd.DataFrame()
with st.container(border=True):
    st.subheader("Matching conversations", anchor=False)
    if not total:
        hidden = not include_test and questions is not None and questions.conversations(replace(filters, include_test=True)).total
        st.info("No conversations match these filters" + (f" among real visitors ({hidden:,} test conversation(s) "
                "do: switch on “Include test traffic”)." if hidden else "."), icon=":material/search_off:")
    else:
        o1, o2, o3, o4 = st.columns([2, 1, 1, 2], vertical_alignment="bottom")
        sort = o1.selectbox("Sort by", list(SORTS), key="conv_sort")
        size = o2.selectbox("Rows per page", PAGE_SIZES, index=1, key="conv_page_size")
        pages = max(1, -(-total // size))
        signature = (preset, custom, query, tuple(chosen), rating, tag, note_query, version, sort, size, include_test)
        if ss.get("conv_page", 1) > pages or ss.get("conv_page_for") != signature:
            ss.conv_page = 1  # other filters, order or page size: back to the first page
        ss.conv_page_for = signature
        page = o3.number_input("Page", min_value=1, max_value=pages, step=1, key="conv_page")
        o4.caption(f"{min(total, (page - 1) * size + 1):,}–{min(total, page * size):,} of {total:,} conversations")
        by, descending = SORTS[sort]
        page_rows = listing.page((page - 1) * size, size, by=by, descending=descending).to_pandas()
        questions_text = page_rows["first_user_text"].map(mask_pii) if mask else page_rows["first_user_text"]
        costs = questions.conversation_costs(list(page_rows["conversation_id"]))
        # the first question and the last turn come first: they fit a 1366 px wide window
        shown = {
            "last": [format_time(t, tz, now) for t in page_rows["last_ts"]],
            "first question": [excerpt(t, 90) for t in questions_text],
            "turns": [int(t) for t in page_rows["turns"]],
            "rated down": [int(d) for d in page_rows["down"]],
            "errors": [int(e) for e in page_rows["errors"]],
            "source": [s or "" for s in page_rows["source"]],
            "tags": [", ".join(sorted(notes.get(c, {}).get("tags", ()))) for c in page_rows["conversation_id"]],
            "duration": [format_duration(d) for d in page_rows["duration_s"]],
            "cost": [costs.get(c) for c in page_rows["conversation_id"]],
            "first": [format_time(t, tz, now) for t in page_rows["first_ts"]],
            "conversation_id": list(page_rows["conversation_id"]),
        }
        config = {
            "last": st.column_config.TextColumn("last", width=130),
            "first question": st.column_config.TextColumn("first question", width=420),
            "turns": st.column_config.NumberColumn("turns", width=55),
            "rated down": st.column_config.NumberColumn("rated down", width=85,
                                                        help="Turns a visitor or staff member rated down"),
            "errors": st.column_config.NumberColumn("errors", width=55),
            "source": st.column_config.TextColumn("source", width=90),
            "tags": st.column_config.TextColumn("tags", width=110),
            "duration": st.column_config.TextColumn("duration", width=90),
            "cost": st.column_config.NumberColumn("cost", width=80, format="$%.4f",
                                                  help="What the model charged for the whole conversation "
                                                       "(CHAT_PRICES); empty without a price or usage"),
            "first": st.column_config.TextColumn("first", width=130),
            "conversation_id": st.column_config.TextColumn("conversation_id", width=130),
        }
        event = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row",
                             key="conv_table", column_config=config, height=min(420, 38 + 35 * len(page_rows)))
        rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
        if rows and rows[0] < len(page_rows):
            picked = page_rows["conversation_id"].iloc[rows[0]]
            if picked != ss.get("conv_table_pick"):
                ss.conv_table_pick = picked
                ss.conv_selected = picked
                ss.conv_force = picked
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button("Export CSV", export_view("csv", filters, mask), file_name="conversations.csv",
                       mime="text/csv", icon=":material/download:", key="conv_csv", disabled=not total)
    d2.download_button("Export JSONL", export_view("jsonl", filters, mask), file_name="conversations.jsonl",
                       mime="application/x-ndjson", icon=":material/download:", key="conv_jsonl",
                       disabled=not total)

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
    from chatcore.staff.replay import diff_html

    left, right = diff_html(old or "", new or "")
    paint = lambda h: _BOX.format(h.replace("<del>", _DEL).replace("<ins>", _INS))  # noqa: E731
    return paint(left), paint(right)


def run_replay(cid: str, original: pd.DataFrame) -> None:
    from chatcore.staff.replay import new_replay_id, replay_conversation

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


# --------------------------------------------------------------------------- forget


def _forget(cid: str) -> None:
    from chatcore.staff.forget import forget_conversation

    ss.conv_forget_confirm = ""
    try:
        res = forget_conversation(cfg.log_path, cid, by=current_user())
    except (ValueError, OSError) as exc:
        ss.conv_forget_error = f"Nothing was forgotten: {exc}"
        return
    ss.conv_forget_done = (f"Forgot {cid}: {res['lines']} turn(s) from {len(res['shards'])} shard(s), "
                           f"{res['annotations']} annotation(s), {len(res['replays'])} replay(s).")
    ss.conv_selected = None


def forget_panel(cid: str) -> None:
    with st.expander("Forget this conversation", icon=":material/delete_forever:"):
        st.caption("Deletes every turn, rating and note of this conversation from the log folder and its "
                   "caches, for good. An audit line keeps who did it and when, not the content.")
        if ss.get("conv_forget_error"):
            st.error(ss.pop("conv_forget_error"))
        typed = st.text_input("Type the conversation id to confirm", key="conv_forget_confirm")
        st.button("Forget for good", type="primary", icon=":material/delete_forever:", key="conv_forget_btn",
                  disabled=(typed or "").strip() != cid, on_click=_forget, args=(cid,))


# ----------------------------------------------------------------------- transcript


@st.cache_data(ttl=2, show_spinner=False)
def staff_events(log_path: str, cid: str) -> list[dict]:
    """Staff messages and handoff events of one conversation (schema v2 lines of the log)."""
    from chatcore.staff.handoff_log import conversation_events

    return conversation_events(log_path, cid)


def show_event(event: dict, mask: bool) -> None:
    """A staff message, a visitor's message to staff, or a handoff step, shown as text."""
    kind, staff = event.get("kind"), str(event.get("staff") or "staff")
    text = str(event.get("text") or "")
    text = mask_pii(text) if mask else text
    when = format_time(pd.Timestamp(event.get("ts")), tz, now) if event.get("ts") else ""
    if kind == "staff_message":
        with st.chat_message("assistant", avatar=":material/support_agent:"):
            st.text(text)
            st.caption(f"{when} · staff: {escape_markdown(staff)}")
    elif kind == "visitor_message":
        with st.chat_message("user"):
            st.text(text)
            st.caption(f"{when} · to staff (the bot was not asked)")
    else:
        what = {"handoff_requested": "The visitor asked for a person",
                "handoff_taken": f"{staff} took over",
                "handoff_returned": f"{staff} handed back to the bot",
                "handoff_timeout": "Nobody took it in time: the bot carried on"}.get(kind, str(kind))
        st.caption(f":material/support_agent: {escape_markdown(what)} · {when}")



if ss.get("conv_forget_done"):
    st.success(ss.pop("conv_forget_done"), icon=":material/delete_forever:")

ids = list(page_rows["conversation_id"]) if not page_rows.empty else []
selected = ss.get("conv_selected")
if (selected and selected not in ids and questions is not None
        and (selected in (ss.get("conv_from_link"), ss.get("conv_query_opened")) or selected == ss.get("conv_force"))
        and questions.has_conversation(selected)):
    ids = [selected] + ids  # opened from a link or a pasted id, maybe outside the current filters or page
if ids:
    force = ss.pop("conv_force", None)
    if force in ids:
        ss.conv_pick = force
    elif ss.get("conv_pick") not in ids:
        ss.conv_pick = selected if selected in ids else ids[0]
    firsts = {}
    if not page_rows.empty:
        texts = page_rows["first_user_text"].map(mask_pii) if mask else page_rows["first_user_text"]
        firsts = dict(zip(page_rows["conversation_id"], texts))
    cid = st.selectbox("Transcript of", ids, key="conv_pick",
                       format_func=lambda c: f"{c}  ·  {excerpt(firsts.get(c), 60)}" if firsts.get(c) else c)
    ss.conv_selected = cid
    original_turns = _to_pandas(questions.transcript(cid))
    turns = mask_frame(original_turns) if mask else original_turns
    with st.container(border=True):
        top, dl = st.columns([4, 1], vertical_alignment="center")
        with top:
            st.subheader("Transcript", anchor=False)
            st.code(cid, language=None)
            first, last = turns["ts"].iloc[0], turns["ts"].iloc[-1]
            st.caption(f"{len(turns)} turn(s) · {format_time(first, tz, now)} – {format_time(last, tz, now)} · "
                       f"{format_duration((last - first).total_seconds())}")
        # the store counts the log's event lines as it reads them: without any, the log is not
        # searched for them (a first search reads every byte of the log)
        events = staff_events(str(cfg.log_path), cid) if questions.store.stats.get("events") else []
        dl.download_button("Markdown", lambda t=turns, e=events: markdown_transcript(t, e),
                           file_name=export_file_name(cid, "md"),
                           mime="text/markdown", icon=":material/download:", key="conv_md")
        pending = sorted(events, key=lambda e: e.get("at_turn") or 0)
        for row in turns.itertuples(index=False):
            while pending and not pd.isna(row.turn) and (pending[0].get("at_turn") or 0) <= int(row.turn):
                show_event(pending.pop(0), mask)
            with st.chat_message("user"):
                st.text(row.user_text or "")
                turn = "?" if pd.isna(row.turn) else int(row.turn)
                st.caption(f"{format_time(row.ts, tz, now)} · turn {turn} · {escape_markdown(str(row.source))}")
            with st.chat_message("assistant"):
                st.text(row.response or "")
                thumbs = {"up": " · rated up", "down": " · rated down"}.get(
                    rated.get((cid, turn)) if turn != "?" else None, "")
                st.caption(f"reply time {format_ms(row.latency_ms)}{thumbs}")
                if isinstance(row.error, str) and row.error:
                    st.error("Error logged for this turn", icon=":material/error:")
                    st.text(row.error)

        for event in pending:
            show_event(event, mask)

    annotate(cid)
    replay_panel(cid, original_turns)
    from pages._suites import suite_panel  # the regression-suite block (add to a suite, ideal answers)
    suite_panel(cid, original_turns, cfg.log_path, current_user())
    forget_panel(cid)
