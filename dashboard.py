"""Chat Operator — the operator dashboard (Streamlit multipage app).

Run with ``python -m chatcore dashboard`` (starts a local Space too) or
``streamlit run dashboard_app.py`` with ``CHAT_LOG_PATH`` / ``CHAT_SPACE_URL`` set: that file
serves this script behind the login gate (``chatcore/dashboard/gate.py``).
"""
from __future__ import annotations

import html
from pathlib import Path

import streamlit as st

from chatcore.dashboard.auth import SessionCookies, login_config, session_cookies
from chatcore.dashboard.gate import LOGIN_PATH, LOGOUT_PATH
from chatcore.dashboard.views import health_summary, tz_name
from chatcore.config import display_url
from pages._shared import PAGES, health, settings, viewer_tz

# A file of ours, not an emoji or ":material/…:" icon: Streamlit fetches those favicons from a CDN,
# and the dashboard must work with no request leaving the machine.
FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.svg"
st.set_page_config(page_title="Chat Operator", page_icon=str(FAVICON), layout="wide")


def _secrets() -> dict:
    """``st.secrets`` as a plain dict; empty when there is no secrets.toml (st.secrets raises then)."""
    try:
        return st.secrets.to_dict()
    except Exception:
        return {}


def page_list() -> list:
    return [
        st.Page(PAGES["overview"], title="Overview", icon=":material/dashboard:", default=True),
        st.Page(PAGES["chat"], title="Chat", icon=":material/chat:"),
        st.Page(PAGES["live"], title="Live", icon=":material/sensors:"),
        st.Page(PAGES["conversations"], title="Conversations", icon=":material/forum:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    ]


def sidebar_value(text: str, breaks: bool) -> str:
    """A setting shown in the sidebar as escaped HTML, in a small monospace font.

    ``breaks=False`` (a URL) keeps it on one line, cut with … when too long and whole in the
    tooltip: never broken inside the host or port. ``breaks=True`` (a path) wraps after a ``/``.
    """
    safe = html.escape(text, quote=True)
    style = "font-family:'Source Code Pro',monospace;font-size:0.8rem;margin:0;"
    if breaks:
        shown = safe.replace("/", "/<wbr>")
        style += "overflow-wrap:anywhere;"
    else:
        shown = safe
        style += "white-space:nowrap;overflow:hidden;text-overflow:ellipsis;"
    return f'<p class="sidebar-value" title="{safe}" style="{style}">{shown}</p>'


def _session_cookie() -> str | None:
    try:
        return st.context.cookies.get(SessionCookies.NAME)
    except Exception:  # no browser context
        return None


def require_login() -> bool:
    """Login gate: return True when the viewer may see the dashboard.

    The mode comes from :func:`chatcore.dashboard.auth.login_config` (environment and
    ``.streamlit/secrets.toml``): ``oidc`` uses ``st.login``/``st.user``; ``password`` (a shared
    password or staff accounts) is the ``/login`` page of the gate in front of Streamlit
    (``dashboard_app.py``), which lets only browsers with a session cookie reach this script;
    the cookie also says who logged in. ``none`` lets everyone in (the launcher only binds
    loopback then). Viewers who are not signed in see the login screen and nothing else.
    """
    ss = st.session_state
    try:
        config = login_config(secrets=_secrets())
    except ValueError as exc:
        st.error(f"The dashboard login is misconfigured: {exc}", icon=":material/error:")
        return False

    if config.mode == "none":
        ss.dashboard_user = "staff"
        return True

    if config.mode == "oidc":
        if not st.user.get("is_logged_in", False):
            ss.pop("dashboard_user", None)
            _login_screen()
            st.caption("Sign in with your organisation's account.")
            st.button("Log in", icon=":material/login:", on_click=st.login, key="login_oidc", type="primary")
            return False
        ss.dashboard_user = str(st.user.get("name") or st.user.get("email") or "staff")[:64]
        with st.sidebar:
            st.caption(f"Signed in as {ss.dashboard_user}")
            st.button("Log out", icon=":material/logout:", on_click=st.logout, key="logout_oidc")
        return True

    # password: checked again here (fails closed when the script is served without the gate,
    # e.g. by a bare `streamlit run dashboard.py`, or after a logout elsewhere)
    user = session_cookies().user(_session_cookie())
    if user is None:
        ss.pop("dashboard_user", None)
        _login_screen()
        st.caption("Your session has ended or was never started here.")
        st.link_button("Log in", LOGIN_PATH, icon=":material/login:", type="primary")
        return False
    ss.dashboard_user = user
    with st.sidebar:
        if user != "staff":
            st.caption(f"Signed in as {user}")
        st.link_button("Log out", LOGOUT_PATH, icon=":material/logout:")
    return True


def _login_screen() -> None:
    # Declare the pages (hidden, none of them runs) so Streamlit neither lists the
    # pages/ folder in the sidebar nor loses the page URL the viewer asked for.
    st.navigation(page_list(), position="hidden")
    st.title(":material/support_agent: Chat Operator", anchor=False)
    st.subheader("Log in to the operator dashboard", anchor=False)


if not require_login():
    st.stop()

cfg = settings()

pages = st.navigation(page_list())

with st.sidebar:
    st.markdown("**Chat Operator**")
    h = health_summary(health(cfg.space_url))
    with st.container(border=True):
        if h["ok"]:
            st.badge("Space reachable", icon=":material/check_circle:", color="green")
        else:
            st.badge("Space unreachable", icon=":material/error:", color="red")
        st.caption("Space URL")
        with st.container(key="sidebar_space_url"):
            st.html(sidebar_value(display_url(cfg.space_url), breaks=False))
        st.caption("Log")
        with st.container(key="sidebar_log_path"):
            st.html(sidebar_value(str(cfg.log_path), breaks=True))
        st.caption(f"Time zone: {tz_name(viewer_tz())}")

pages.run()
