"""Live: turns appear here as the Space writes them (newest first)."""
from __future__ import annotations


import streamlit as st

from chatcore.dashboard.views import (catch_up, distinct_id, escape_markdown, filter_live, format_ago, id_prefix,
                                     latest_records, live_table, merge_live, merge_live_counted, short_id,
                                     staff_display_name, tz_name)
from pages._shared import through_entry, PAGES, header, live_feed, load_questions, settings, viewer_tz

through_entry()

cfg = settings()
tz = viewer_tz()
ss = st.session_state
REFRESH = cfg.live_refresh
path = str(cfg.log_path)
feed = live_feed(path)

if ss.get("live_path") != path:
    # The cursor first, then the snapshot: nothing written in between is missed
    # (a turn in both is shown once).
    cursor = feed.seq
    first_rows = latest_records(load_questions(path), 50)
    ss.live_path = path
    ss.live_epoch = feed.epoch
    ss.live_cursor = cursor
    ss.live_count = 0
    ss.live_dropped = 0
    ss.live_rows = merge_live([], first_rows)
    ss.live_selected = None

header("Live", ":material/sensors:", f"New turns as they are written · times in {tz_name(tz)}")

LIVE_MINUTES = cfg.live_minutes


@st.cache_resource
def live_conversations(path: str):
    from chatcore.staff.inbox import LiveConversations

    return LiveConversations(path)


def my_staff_name() -> str:
    """Who is speaking: the signed-in identity (st.login) when there is one, else the name typed
    on this page (a shared password or no login says nothing about who is at the keyboard)."""
    user = ss.get("dashboard_user")
    if user and user != "staff":
        return staff_display_name(user)
    return (ss.get("staff_name") or "").strip()


def staff_act(route: str, cid: str, **extra) -> None:
    """One staff action on the Space; what it did is shown above the open conversation."""
    from chatcore.remote.client import staff_call
    from chatcore.config import operator_token

    ok, message = staff_call(cfg.space_url, operator_token(cfg.log_path), route,
                             {"conversation_id": cid, "staff": my_staff_name(), **extra})
    if ok:
        message = {"take": "You have this conversation: the bot stays silent until you hand it back.",
                   "handback": "Handed back: the bot answers the visitor again."}.get(route)
        if route == "resolve":  # it leaves the list; the open panel stays until another is picked
            st.toast("Marked resolved: it left the list (until the visitor writes again).",
                     icon=":material/task_alt:")
    ss.staff_notice = (cid, "ok" if ok else "error", message) if message else None


def send_staff_text() -> None:
    """The composer's Enter: one message per submission. The composer is a chat input, whose
    value is delivered to one run only (a text box's value would be sent again by any rerun
    that starts before the browser hears it was cleared); the request id makes a resend of
    this very message harmless on the Space too."""
    import uuid

    cid = ss.get("now_open")
    text = (ss.get("staff_text") or "").strip()
    if cid and text:
        staff_act("say", cid, text=text, request_id=uuid.uuid4().hex)


def canned_replies() -> list[dict]:
    """The team's canned replies (:func:`chatcore.log.annotations.load_snippets`); none on a read error."""
    from chatcore.log.annotations import load_snippets

    try:
        return load_snippets(cfg.log_path)
    except Exception:  # a broken annotations file must not take the page down
        return []


def insert_snippet() -> None:
    """A canned reply clicked: into the composer, where the agent edits it and Enter sends it
    (a chat input set through the session state shows the text without sending it)."""
    sid = ss.get("now_snippet")
    ss.now_snippet = None
    snippet = next((s for s in canned_replies() if s["snippet_id"] == sid), None)
    if snippet is not None:
        ss.staff_text = snippet["text"]


#: Played and shown in the browser (st.html runs it once, when it first appears): a short tone
#: and a notification. Nothing from a visitor goes into it but a checked, shortened id.
ALERT_JS = """<script>(function () {
  var body = %s, tag = %s;
  try {
    var A = window.AudioContext || window.webkitAudioContext;
    if (A) {
      var ctx = new A(), o = ctx.createOscillator(), g = ctx.createGain();
      o.type = "sine"; o.frequency.value = 880; g.gain.value = 0.15;
      o.connect(g); g.connect(ctx.destination); o.start(); o.stop(ctx.currentTime + 0.3);
    }
  } catch (e) {}
  try {
    if ("Notification" in window) {
      var show = function () { new Notification("A visitor asks for a person", {body: body, tag: tag}); };
      if (Notification.permission === "granted") show();
      else if (Notification.permission !== "denied") Notification.requestPermission().then(function (p) {
        if (p === "granted") show();
      });
    }
  } catch (e) {}
})();</script>"""

ASK_PERMISSION_JS = """<script>try { if ("Notification" in window && Notification.permission === "default")
  Notification.requestPermission(); } catch (e) {}</script>"""


def alert_new_requests(rows: list[dict]) -> None:
    """With the alert switched on: a tone and a browser notification for each request for a
    person that appeared since the last look (requests already waiting when it was switched
    on are in the table, not announced)."""
    import json
    import re

    waiting = {f"{r['conversation_id']}@{r['requested_at']}": r for r in rows if r.get("requested_at")}
    if not ss.get("now_alert"):
        ss.pop("now_alerted", None)
        return
    if "now_alerted" not in ss:
        ss.now_alerted = set(waiting)
        st.html(ASK_PERMISSION_JS, unsafe_allow_javascript=True)
        return
    new = [key for key in waiting if key not in ss.now_alerted]
    if not new:
        return
    ss.now_alerted |= set(new)
    ids = [re.sub(r"[^A-Za-z0-9_.@-]", "", distinct_id(waiting[k]["conversation_id"])) for k in new]
    body = f"{len(new)} new: " + ", ".join(ids[:5]) if len(new) > 1 else f"Conversation {ids[0]}"
    st.html(ALERT_JS % (json.dumps(body), json.dumps(re.sub(r"[^A-Za-z0-9_.@-]", "", new[-1])[:80])),
            unsafe_allow_javascript=True)


def show_transcript(lc, cid: str) -> None:
    for m in lc.transcript(cid):
        if m["role"] == "event":
            st.caption(f"— {escape_markdown(m['text'])} —")
            continue
        role = {"visitor": "user", "bot": "assistant", "staff": "assistant"}[m["role"]]
        with st.chat_message(role, avatar=":material/support_agent:" if m["role"] == "staff" else None):
            if m["role"] == "staff":
                st.caption(f"staff: {escape_markdown(m['who'])}")
            st.text(m["text"])


@st.fragment(run_every=REFRESH)
def conversations_now() -> None:
    """Conversations active now: who has them, who waits; the open one's transcript grows live.

    The picker's options are conversation ids shown as themselves: Streamlit sends a select
    box's choice back as its label, so a label that changes with the status (``· waiting`` to
    ``· with Kim``) no longer matched, and the page went on with the old label as the id.
    """
    import time as _time

    import pandas as pd

    lc = live_conversations(path)
    include_test = bool(ss.get("now_include_test"))
    rows = lc.active(LIVE_MINUTES, include_test=include_test)
    st.subheader(f"Conversations now · active in the last {LIVE_MINUTES:g} min", divider="gray")
    t1, t2, t3 = st.columns([1, 1.2, 1.6], vertical_alignment="center")
    shown = t1.segmented_control("Show", ["all", "mine"], key="now_show", default="all",
                                 help="mine: the conversations you hold") or "all"
    t2.toggle("Include test traffic", key="now_include_test",
              help="Replays and simulated visitors; real visitors only when off")
    t2.toggle("Sound and notification", key="now_alert",
              help="A tone and a browser notification when a visitor asks for a person "
                   "(your browser asks whether this page may show notifications)")
    alert_new_requests(rows)
    me = my_staff_name()
    if ss.get("dashboard_user") and ss.get("dashboard_user") != "staff":
        t3.caption(f"You speak as **{escape_markdown(me)}**")
    else:
        ss.setdefault("staff_name", cfg.staff_name)
        t3.text_input("Your staff name", key="staff_name", placeholder="shown to the visitor")
    if shown == "mine":
        rows = [r for r in rows if me and r["holder"] == me]
    current = ss.get("now_open")
    if not rows and not current:
        st.caption("You hold no conversation now." if shown == "mine" else "No conversation is active now.")
        return
    waiting = sum(1 for r in rows if r["status"] == "waiting for a person")
    if waiting:
        st.warning(f"{waiting} conversation(s) waiting for a person.", icon=":material/support_agent:")
    now = _time.time()
    if rows:
        table = pd.DataFrame([{
            "status": r["status"],
            "waiting": format_ago(r["waiting_s"]),
            "conversation": distinct_id(r["conversation_id"]),
            "last_message": r["last_message"],
            "source": r["source"],
            "thumbs_down": r["thumbs_down"],
            "idle": format_ago(now - r["last_activity"]),
        } for r in rows])
        st.dataframe(table, hide_index=True, height=min(320, 40 + 35 * len(rows)),
                     column_config={"status": st.column_config.TextColumn("Status", width=150),
                                    "waiting": st.column_config.TextColumn("Waiting", width=70),
                                    "conversation": st.column_config.TextColumn("Conversation", width=120),
                                    "last_message": st.column_config.TextColumn(
                                        "Last message", width=240, help="What the visitor last said"),
                                    "source": st.column_config.TextColumn("Source", width=80),
                                    "thumbs_down": st.column_config.NumberColumn("Rated down", width=90),
                                    "idle": st.column_config.TextColumn("Idle", width=70)})
    ids = [r["conversation_id"] for r in rows]
    options = ids if current in ids or not current else [current, *ids]
    cid = st.selectbox("Open a conversation", options, key="now_open", index=None, placeholder="pick one")
    if not cid:
        return
    status = lc.status(cid)
    with st.container(border=True):
        if status.status == "staff":
            line = "With you" if status.staff == me else f"With {escape_markdown(status.staff)}"
        elif status.status == "waiting":
            waited = format_ago(now - status.requested_at) if status.requested_at else ""
            line = f"Waiting for a person{' · ' + waited if waited else ''}"
            line += (" · the bot keeps answering until someone takes over" if lc.bot_while_waiting
                     else " · the bot is silent: the visitor's messages wait for you")
        else:
            line = "With the bot"
        st.markdown(f"**{line}**")
        b1, b2, b4, b3 = st.columns([1, 1, 1.2, 2], vertical_alignment="center")
        if status.status == "staff" and status.staff != me:
            b3.info(f"{escape_markdown(status.staff)} has this conversation.", icon=":material/lock:")
        elif not me:
            b3.caption("Type your staff name above to take over.")
        b1.button("Take over", key="now_take", disabled=status.status == "staff" or not me,
                  on_click=staff_act, args=("take", cid), type="primary")
        b2.button("Hand back", key="now_back", disabled=not (status.status == "staff" and status.staff == me),
                  on_click=staff_act, args=("handback", cid))
        b4.button("Mark resolved", key="now_resolve", icon=":material/task_alt:",
                  disabled=not me or (status.status == "staff" and status.staff != me),
                  on_click=staff_act, args=("resolve", cid),
                  help="Done: it leaves the list (and goes back to the bot) until the visitor writes again")
        notice = ss.get("staff_notice")
        if notice and notice[0] == cid:
            (st.success if notice[1] == "ok" else st.error)(escape_markdown(notice[2]))
        show_transcript(lc, cid)
        if status.status == "staff" and status.staff == me:
            snippets = {s["snippet_id"]: s for s in canned_replies()}
            if snippets:
                st.pills("Canned replies", list(snippets), key="now_snippet", on_change=insert_snippet,
                         format_func=lambda sid: escape_markdown(snippets[sid]["title"]) if sid in snippets else sid,
                         help="Puts the reply in the message box (in place of what is there): edit it, "
                              "then Enter sends it")
            st.chat_input("Message to the visitor", key="staff_text", on_submit=send_staff_text)


NEW_SNIPPET = "new"


def pick_snippet() -> None:
    """Another canned reply picked to edit: its title and text into the form (empty for a new one)."""
    chosen = next((s for s in canned_replies() if s["snippet_id"] == ss.get("snip_pick")), None)
    ss.snip_title = chosen["title"] if chosen else ""
    ss.snip_text = chosen["text"] if chosen else ""
    ss.snip_error = None


def save_snippet() -> None:
    from chatcore.log.annotations import save_snippet as save

    sid = ss.get("snip_pick")
    try:
        rec = save(cfg.log_path, ss.get("snip_title") or "", ss.get("snip_text") or "",
                   snippet_id=None if sid in (None, NEW_SNIPPET) else sid, author=my_staff_name() or "staff")
    except (ValueError, OSError) as exc:
        ss.snip_error = str(exc)
        return
    ss.snip_error = None
    ss.snip_pick = rec["snippet_id"]
    st.toast(f"Saved “{escape_markdown(rec['title'])}”", icon=":material/quickreply:")


def delete_snippet() -> None:
    from chatcore.log.annotations import delete_snippet as delete

    sid = ss.get("snip_pick")
    try:
        delete(cfg.log_path, sid, author=my_staff_name() or "staff")
    except (ValueError, OSError) as exc:
        ss.snip_error = str(exc)
        return
    ss.snip_pick = NEW_SNIPPET
    pick_snippet()


def manage_snippets() -> None:
    """Add, change and delete the team's canned replies (shared by every dashboard of this log)."""
    snippets = {s["snippet_id"]: s for s in canned_replies()}
    with st.expander(f"Canned replies ({len(snippets)})", icon=":material/quickreply:"):
        st.caption("Saved replies every agent can put in the message box with one click while holding "
                   "a conversation.")
        if ss.get("snip_pick") not in (NEW_SNIPPET, *snippets):
            ss.snip_pick = NEW_SNIPPET
            pick_snippet()
        st.selectbox("Canned reply", [NEW_SNIPPET, *snippets], key="snip_pick", on_change=pick_snippet,
                     format_func=lambda sid: "New canned reply" if sid == NEW_SNIPPET
                     else snippets[sid]["title"] if sid in snippets else sid)
        with st.form("snip_form", border=False):
            from chatcore.log.annotations import MAX_SNIPPET, MAX_SNIPPET_TITLE

            st.text_input("Title", key="snip_title", max_chars=MAX_SNIPPET_TITLE, placeholder="e.g. Shipping times")
            st.text_area("Text", key="snip_text", max_chars=MAX_SNIPPET, height=100,
                         placeholder="What the visitor reads")
            st.form_submit_button("Save canned reply", icon=":material/save:", on_click=save_snippet)
        st.button("Delete canned reply", icon=":material/delete:", key="snip_delete", on_click=delete_snippet,
                  disabled=ss.get("snip_pick") not in snippets)
        if ss.get("snip_error"):
            st.error(escape_markdown(ss.snip_error), icon=":material/error:")


# The inbox first: what waits for a person comes before the stream of every turn.
conversations_now()
manage_snippets()


def pick_row() -> None:
    state = ss.get("live_table")
    rows = state.selection.rows if state is not None else []
    shown = ss.get("live_shown_ids") or []
    if rows and rows[0] < len(shown):
        ss.live_selected = shown[rows[0]]


def only_this() -> None:
    ss.live_conv = ss.live_selected or ""


with st.container(border=True):
    c1, c2, c3 = st.columns([1, 2, 1.4], vertical_alignment="bottom")
    paused = c1.toggle("Pause", key="live_paused", help="Stop updating; new turns wait until you resume")
    conv = c2.text_input("Conversation", key="live_conv", placeholder="all (an ID or its first characters)",
                         help="A conversation ID, or its first characters as the table shows them")
    seen_sources = sorted({r.get("source") or "" for r in ss.live_rows} | {"widget", "operator", "api", "simulated"})
    source = c3.selectbox("Source", ["all", *seen_sources], key="live_source")


@st.fragment(run_every=None if paused else REFRESH)
def live_view() -> None:
    waiting = 0
    if "live_rows" not in ss:  # this session's state was cleared: start the page again
        st.rerun()
    feed = live_feed(path)  # the shared feed may have been rebuilt since the page ran (a cleared cache)
    if ss.get("live_epoch") != feed.epoch and not ss.get("live_paused"):
        cursor = feed.seq  # as on first load: the cursor first, then the log
        ss.live_rows, added = catch_up(ss.live_rows, load_questions(path))
        ss.live_count += added
        ss.live_cursor, ss.live_epoch = cursor, feed.epoch
    if not ss.get("live_paused"):
        new, ss.live_cursor, dropped = feed.poll(ss.live_cursor)
        # a turn written while a rebuilt feed was caught up from the log is in both: counted once
        ss.live_rows, added = merge_live_counted(feed.drop_forgotten(ss.live_rows), new)
        ss.live_count += added
        ss.live_dropped += dropped
    else:
        waiting = max(0, feed.seq - ss.live_cursor)
    conv_filter = (ss.get("live_conv") or "").strip() or None
    source_filter = ss.get("live_source")
    rows = filter_live(ss.live_rows, conv_filter, None if source_filter in (None, "all") else source_filter)
    m1, m2, m3 = st.columns(3)
    m1.metric("New turns since opening", ss.live_count)
    m2.metric("Shown", len(rows))
    m3.metric("Waiting (paused)" if ss.get("live_paused") else "Status",
              waiting if ss.get("live_paused") else "live")
    if conv_filter:
        matching = len({r.get("conversation_id") for r in rows})
        st.caption(f"{matching} conversation(s) shown whose ID starts with "
                   f"“{escape_markdown(id_prefix(conv_filter))}”")
    if ss.live_dropped:
        st.warning(f"{ss.live_dropped} turn(s) were skipped while paused for long.", icon=":material/warning:")
    selected = ss.get("live_selected")
    with st.container(border=True):
        if selected:
            a, b, c = st.columns([3, 1.2, 1.2], vertical_alignment="center")
            a.code(selected, language=None)
            with b:
                st.page_link(PAGES["conversations"], label=f"Open {short_id(selected)}",
                             icon=":material/forum:", query_params={"conversation": selected})
            c.button("Show only this one", on_click=only_this, key="live_only")
        else:
            st.caption("Select a row to open its conversation.")
    table = live_table(rows, tz)
    ss.live_shown_ids = list(table["conversation_id"])
    st.dataframe(
        table.drop(columns=["conversation_id"]),
        hide_index=True,
        key="live_table",
        on_select=pick_row,
        selection_mode="single-row",
        column_config={
            # Widths in px add up to what a 1366 px screen with the sidebar open has room for
            # (wider screens share out the rest), so reply time and error are never off-screen.
            "time": st.column_config.TextColumn("Time", width=75),
            "conversation": st.column_config.TextColumn("Conversation", width=100),
            "source": st.column_config.TextColumn("Source", width=85),
            "user_text": st.column_config.TextColumn("User", width=170),
            "reply": st.column_config.TextColumn("Reply", width=170),
            "latency_ms": st.column_config.NumberColumn(
                "Reply time (ms)", format="%d", width=115,
                help="The Space's time to produce the reply, as logged (network and browser not included)"),
            "error": st.column_config.TextColumn("Error", width=130),
        },
        height=520,
    )
    if not rows:
        st.caption("Waiting for turns… send one from the Chat page or run `python -m chatcore simulate`.")


live_view()
