"""Chat Operator — the operator dashboard (Streamlit multipage app).

Run with ``python -m chatcore dashboard`` (starts a local Space too) or
``streamlit run dashboard.py`` with ``CHAT_LOG_PATH`` / ``CHAT_SPACE_URL`` set.
"""
from __future__ import annotations

import streamlit as st

from chatcore.dashboard import health_summary, tz_name
from pages._shared import PAGES, health, settings, viewer_tz

st.set_page_config(page_title="Chat Operator", page_icon=":material/support_agent:", layout="wide")


def require_login() -> bool:
    """Login gate: return True when the viewer may see the dashboard.

    Hook for authentication (password or OIDC via ``st.login`` / ``st.user``).
    Until it is implemented everyone is let in; whoever adds it should render a
    login form here and call ``st.stop()`` for viewers who are not signed in.
    """
    return True


if not require_login():
    st.stop()

cfg = settings()

pages = st.navigation([
    st.Page(PAGES["overview"], title="Overview", icon=":material/dashboard:", default=True),
    st.Page(PAGES["chat"], title="Chat", icon=":material/chat:"),
    st.Page(PAGES["live"], title="Live", icon=":material/sensors:"),
    st.Page(PAGES["conversations"], title="Conversations", icon=":material/forum:"),
])

with st.sidebar:
    st.markdown("**Chat Operator**")
    h = health_summary(health(cfg.space_url))
    with st.container(border=True):
        if h["ok"]:
            st.badge("Space reachable", icon=":material/check_circle:", color="green")
        else:
            st.badge("Space unreachable", icon=":material/error:", color="red")
        st.caption("Space URL")
        st.code(cfg.space_url, language=None, wrap_lines=True)
        st.caption("Log")
        st.code(str(cfg.log_path), language=None, wrap_lines=True)
        st.caption(f"Time zone: {tz_name(viewer_tz())}")

pages.run()
