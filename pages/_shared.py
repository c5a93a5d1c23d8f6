"""Streamlit glue shared by the dashboard pages: cached loaders, settings, headers.

Only this file and the page scripts import streamlit; the logic is in
``chatcore.dashboard.views`` and ``chatcore.store.conversation_frames``.
"""
from __future__ import annotations

import streamlit as st

from chatcore.remote.client import space_health
from chatcore.dashboard.views import LiveFeed, SharedStore, check_space_log, resolve_timezone
from chatcore.config import Settings
from chatcore.remote.log_settings import load_settings

PAGES = {
    "overview": "pages/overview.py",
    "chat": "pages/chat.py",
    "live": "pages/live.py",
    "conversations": "pages/conversations.py",
}


def through_entry() -> None:
    """Make sure the page runs inside ``dashboard.py`` (its st.navigation, sidebar, login gate).

    Streamlit treats a folder named ``pages/`` beside the entry script as the old
    multipage layout until some run of the entry calls ``st.navigation``; a page
    URL opened first on a fresh server would run the page script on its own.
    Switch that mode off and rerun, so the entry script takes over.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - layout of other Streamlit versions
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def settings() -> Settings:
    """Settings from the environment (``CHAT_LOG_PATH`` or ``CHAT_LOG_URL``, ``CHAT_SPACE_URL``, …)."""
    try:
        return load_settings()
    except Exception as exc:
        # the mirror module is loaded only by a remote log: a local one never needs it
        from chatcore.remote.mirror import MirrorError

        if not isinstance(exc, MirrorError):
            raise
        # a remote log that cannot be read: say why, show nothing else
        st.error(f"The log cannot be read: {exc}", icon=":material/cloud_off:")
        st.stop()


def viewer_tz():
    """The browser's time zone when it told us, else $CHAT_TIMEZONE, else UTC."""
    try:
        browser = st.context.timezone
    except Exception:  # no browser context (tests, bare mode)
        browser = None
    return resolve_timezone(browser)


@st.cache_resource(show_spinner=False)
def shared_store(path: str) -> SharedStore:
    return SharedStore(path)


@st.cache_resource(show_spinner=False, on_release=lambda feed: feed.close())
def live_feed(path: str) -> LiveFeed:
    return LiveFeed(path)


#: Show a progress bar when this much of the log is still to be read (a first load, a big burst).
PROGRESS_FROM_BYTES = 20_000_000


class _ReadingProgress:
    """A progress bar shown only while a large part of the log is being read."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_FROM_BYTES:
            return
        if self.bar is None:
            self.bar = st.progress(0.0)
        self.bar.progress(min(1.0, done / total),
                          text=f"Reading the log: {done / 1e6:,.0f} of {total / 1e6:,.0f} MB")

    def done(self) -> None:
        if self.bar is not None:
            self.bar.empty()


def load_questions(path):
    """The SQL questions over the log (:mod:`chatcore.store.questions`), brought up to date
    (only new bytes are parsed); None when there is no log yet. A progress bar shows while
    a large log is first read."""
    progress = _ReadingProgress()
    questions = shared_store(str(path)).questions(progress=progress)
    progress.done()
    return questions


@st.cache_data(ttl=5, show_spinner=False)
def health(url: str) -> dict:
    return space_health(url, timeout=2.0)


@st.cache_data(ttl=10, show_spinner=False)
def log_check(url: str, log_path: str) -> dict:
    """Does the Space write the log the dashboard reads? (:func:`chatcore.dashboard.views.check_space_log`)"""
    check = check_space_log(url, log_path, timeout=2.0)
    return {"status": check.status, "reason": check.reason}


def header(title: str, icon: str, caption: str | None = None) -> None:
    st.title(f"{icon} {title}", anchor=False)
    if caption:
        st.caption(caption)


def current_user() -> str:
    """Who is signed in (set by the login gate in dashboard.py); ``staff`` without a name."""
    return str(st.session_state.get("dashboard_user") or "staff")


def load_feedback(path):
    """Current ratings of the log's turns (``chatcore.log.annotations.load_feedback``); empty on a read error."""
    import pandas as pd

    from chatcore.log import annotations

    try:
        return annotations.load_feedback(path)
    except Exception:  # a broken annotations file must not take the page down
        return pd.DataFrame(columns=["ts", "conversation_id", "turn", "rating", "by", "source"])


def load_annotations(path) -> dict:
    """Tags, notes and replay links per conversation; empty on a read error."""
    from chatcore.log import annotations

    try:
        return annotations.load_annotations(path)
    except Exception:
        return {}
