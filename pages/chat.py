"""Chat: send test prompts to the Space as an operator and watch the reply stream, optionally
with a draft system prompt the Space uses for these replies only."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import streamlit as st

from chatcore.log.annotations import record_feedback
from chatcore.remote.client import SpaceClient, SpaceError
from chatcore.dashboard.views import escaped_stream, format_ms, format_time, health_summary
from chatcore.config import display_url
from chatcore.llm.prompts import draft_version, encode_draft
from pages._shared import through_entry, header, health, log_check, settings, viewer_tz

through_entry()

cfg = settings()
tz = viewer_tz()
ss = st.session_state
TIMEOUT = cfg.dashboard_timeout

def start_conversation_state() -> None:
    """A fresh conversation id and an empty page for it."""
    ss.chat_cid = str(uuid.uuid4())
    ss.chat_history = []
    ss.chat_pending = None
    ss.chat_error = None
    ss.chat_turns_used = 0
    ss.chat_fb_error = None


if "chat_cid" not in ss:
    start_conversation_state()


def draft_prompt() -> str | None:
    """The draft system prompt typed on this page (None: the Space's own prompt)."""
    text = ss.get("chat_draft") or ""
    return text if text.strip() else None


def client() -> SpaceClient:
    """One SpaceClient per browser session (it holds the Space's session) and draft prompt."""
    current = ss.get("chat_client")
    draft = draft_prompt()
    if current is None or current.url != cfg.space_url.rstrip("/") or current.system_prompt != draft:
        if current is not None:
            current.close()
        current = SpaceClient(cfg.space_url, timeout=TIMEOUT, log_path=cfg.log_path, system_prompt=draft)
        ss.chat_client = current
    return current


def new_conversation() -> None:
    start_conversation_state()
    if ss.get("chat_client") is not None:
        ss.chat_client.reset()


def rate(turn: int, key: str) -> None:
    """Save the thumbs of one reply as staff feedback for that turn of the conversation."""
    value = ss.get(key)
    if value is None:  # un-clicked: the last rating stays on record
        return
    try:
        record_feedback(cfg.log_path, ss.chat_cid, turn, "up" if value == 1 else "down",
                        by="staff", source="dashboard")
        ss.chat_fb_error = None
    except Exception as exc:  # a message, never a traceback
        ss.chat_fb_error = f"The rating was not saved ({exc})."


def retry() -> None:
    ss.chat_retry = True


def discard() -> None:
    ss.chat_pending = None
    ss.chat_error = None


header("Chat", ":material/chat:", "Test prompts against the Space. Turns are logged with source = operator.")

h = health_summary(health(cfg.space_url))
with st.container(border=True):
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    with left:
        st.caption("Conversation ID")
        st.code(ss.chat_cid, language=None)
    with right:
        st.button("New conversation", icon=":material/add_comment:", on_click=new_conversation,
                  key="chat_new", width="stretch")
    if h["ok"]:
        st.caption(f":green[●] Space reachable at {display_url(cfg.space_url)} · {h['detail']}")
    else:
        st.caption(f":red[●] Space not reachable at {display_url(cfg.space_url)}")

with st.expander("Draft system prompt", icon=":material/edit_note:", expanded=bool(draft_prompt())):
    st.caption("Try a system prompt before it goes live: the Space uses it for the replies to this page "
               "only (sent with the staff token), and logs them with the draft's prompt version. "
               "Leave it empty for the Space's own prompt.")
    st.text_area("Draft system prompt", key="chat_draft", height=140, label_visibility="collapsed",
                 placeholder="You are the support assistant of …")
    draft_error = None
    if draft_prompt():
        try:
            encode_draft(draft_prompt())
            st.caption(f"Replies use this draft · prompt version `{draft_version(draft_prompt())}`")
        except ValueError as exc:
            draft_error = str(exc)
            st.error(draft_error, icon=":material/error:")

logs = log_check(cfg.space_url, str(cfg.log_path)) if h["ok"] else {"status": "down"}
if logs["status"] == "different":
    st.warning(f"The Space writes a different log from the one this dashboard reads: {logs['reason']}. "
               "Prompts sent here will not appear on Live or Conversations.", icon=":material/warning:")
elif logs["status"] == "unknown":
    st.warning(f"The logs could not be compared: {logs['reason']}. If the Space writes another log, prompts "
               "sent here will not appear on Live or Conversations.", icon=":material/help:")

for msg in ss.chat_history:
    with st.chat_message(msg["role"]):
        st.text(msg["text"])
        if msg["role"] == "assistant":
            st.caption(f"{format_time(msg['ts'], tz)} · round trip {format_ms(msg['latency_ms'])}",
                       help="Measured by this page: from sending the prompt to the last word shown. "
                            "The Space logs its own reply time, which the Live and Conversations pages show.")
            if msg.get("turn") is not None:
                key = f"chat_fb_{ss.chat_cid}_{msg['turn']}"
                st.feedback("thumbs", key=key, on_change=rate, args=(msg["turn"], key))

if ss.get("chat_fb_error"):
    st.warning(ss.chat_fb_error, icon=":material/warning:")

if ss.chat_error:
    with st.container(border=True, key="chat_error_box"):
        st.error(ss.chat_error, icon=":material/error:")
        if ss.chat_pending:
            st.caption("Your prompt was kept:")
            st.code(ss.chat_pending, language=None)
            a, b, _ = st.columns([1, 1, 4])
            a.button("Retry", icon=":material/refresh:", on_click=retry, key="chat_retry_btn", type="primary")
            b.button("Discard", on_click=discard, key="chat_discard_btn")

prompt = st.chat_input("Type a test prompt…", key="chat_prompt")
if ss.pop("chat_retry", False) and ss.chat_pending:
    prompt = ss.chat_pending

if prompt and draft_error:
    ss.chat_pending = prompt
    ss.chat_error = f"Not sent: {draft_error}"
    st.rerun()

if prompt:
    with st.chat_message("user"):
        st.text(prompt)
    with st.chat_message("assistant"):
        raw: list[str] = []
        started = time.perf_counter()
        error = None
        try:
            st.write_stream(escaped_stream(client().stream(prompt, ss.chat_cid, source="operator"), raw))
        except SpaceError as exc:
            error = str(exc)
            if exc.kind == "timeout":  # the Space started the turn (and logs it): its number is used
                ss.chat_turns_used = ss.get("chat_turns_used", 0) + 1
        except Exception as exc:  # anything else: a message, never a traceback
            error = f"The Space call failed ({type(exc).__name__}). Try again."
    if error:
        ss.chat_pending = prompt
        ss.chat_error = error
    else:
        now = datetime.now(timezone.utc)
        ss.chat_history += [
            {"role": "user", "text": prompt, "ts": now, "latency_ms": None},
            {"role": "assistant", "text": "".join(raw), "ts": now,
             "latency_ms": (time.perf_counter() - started) * 1000, "turn": ss.get("chat_turns_used", 0)},
        ]
        ss.chat_turns_used = ss.get("chat_turns_used", 0) + 1
        ss.chat_pending = None
        ss.chat_error = None
    st.rerun()
