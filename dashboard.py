"""Chat Operator — the operator dashboard (Streamlit multipage app).

Run with ``python -m chatcore dashboard`` (starts a local Space too) or
``streamlit run dashboard.py`` with ``CHAT_LOG_PATH`` / ``CHAT_SPACE_URL`` set.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import streamlit as st

from chatcore.dashboard.auth import LOGIN_THROTTLE, login_config, verify_password
from chatcore.dashboard.views import health_summary, tz_name
from chatcore.config import display_url
from pages import _guard
from pages._shared import PAGES, health, settings, viewer_tz

# Before anything is cached: sessions that have not logged in cannot clear the shared
# caches or fetch exports (see pages/_guard.py).
_guard.install()

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


def _log_out() -> None:
    for key in ("dashboard_login", "dashboard_user"):
        st.session_state.pop(key, None)
    _guard.set_authenticated(False)


def client_address() -> str:
    """The viewer's address for the login throttle (``local`` for loopback)."""
    try:
        ip = st.context.ip_address
    except Exception:  # no browser context
        ip = None
    return ip[:64] if isinstance(ip, str) and ip else "local"


def require_login() -> bool:
    """Login gate: return True when the viewer may see the dashboard.

    The mode comes from :func:`chatcore.dashboard.auth.login_config` (environment and
    ``.streamlit/secrets.toml``): ``oidc`` uses ``st.login``/``st.user``,
    ``password`` a password form checked against the stored scrypt hash, and
    ``none`` lets everyone in (the launcher only binds loopback then).
    Viewers who are not signed in see the login screen and nothing else.
    """
    ss = st.session_state
    allowed = _login_gate(ss)
    _guard.set_authenticated(allowed)
    return allowed


def _login_gate(ss) -> bool:
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

    # password
    if ss.get("dashboard_login") is True:
        ss.dashboard_user = "staff"
        with st.sidebar:
            st.button("Log out", icon=":material/logout:", on_click=_log_out, key="logout_password")
        return True
    _login_screen()
    with st.form("login_form", clear_on_submit=True, border=True):
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", icon=":material/login:", type="primary")
    if submitted:
        address = client_address()
        wait = LOGIN_THROTTLE.attempt(address)  # shared by every session of this server
        if wait:
            st.error(f"Too many login attempts. Try again in {math.ceil(wait)} s.", icon=":material/lock_clock:")
            return False
        if password and verify_password(password, config.password_hash):
            LOGIN_THROTTLE.succeeded(address)
            ss.dashboard_login = True
            _guard.set_authenticated(True)
            st.rerun()
        st.error("Wrong password.", icon=":material/lock:")
    return False


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
