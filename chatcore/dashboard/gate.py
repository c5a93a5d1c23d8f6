"""The dashboard's login gate, in front of Streamlit (``st.App(middleware=…, routes=…)``).

With a password or staff accounts (:func:`chatcore.dashboard.auth.login_config`):

* ``GET /login`` shows a plain HTML form (name and password with accounts, else the password);
  ``POST /login`` checks it, throttled by :func:`chatcore.dashboard.auth.login_throttle`, and sets
  the signed session cookie (HttpOnly, SameSite=Strict); ``/logout`` clears and revokes it.
* :class:`GateMiddleware` refuses, without a valid session cookie, the websocket
  (``/_stcore/stream``: no script run, no cache clearing, no download), ``/media/…``, uploads and
  every other route, and sends a browser asking for a page to ``/login``. Streamlit's health
  checks and its static assets (the same for everyone) stay open.

With OIDC (``st.login``) the script itself asks the browser to sign in, so a websocket without the
session cookie is let through, but only the messages ``messages_before_login`` allows (script runs):
Streamlit's login and callback routes stay open, and the session cookie is added to the answer of
its callback once that has signed someone in, so downloads, media and uploads work after that.

This module never imports streamlit: the app file (``dashboard_app.py``) passes in what is
Streamlit's.
"""
from __future__ import annotations

import html
import logging
import math
from http.cookies import SimpleCookie
from typing import Callable
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from chatcore.dashboard.auth import LoginConfig, SessionCookies, login_config, login_throttle

log = logging.getLogger("chatcore.dashboard.gate")

LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
#: Open to anyone: health checks, the server's own settings for the page, the page's assets.
OPEN_PATHS = frozenset({LOGIN_PATH, LOGOUT_PATH, "/_stcore/health", "/_stcore/script-health-check",
                        "/_stcore/host-config", "/favicon.png", "/manifest.json", "/robots.txt"})
OPEN_PREFIXES = ("/static/",)
#: Streamlit's own routes for st.login (open in OIDC mode only).
OIDC_PATHS = frozenset({"/auth/login", "/auth/logout", "/oauth2callback"})
#: Routes that are data, not a page: refused (403) without a session rather than sent to /login.
DATA_PREFIXES = ("/_stcore/", "/media/", "/component/", "/bidi-components/", "/app/static/")
STREAMLIT_USER_COOKIE = "_streamlit_user"
#: A login form's body at most (a name, a password, where to go next).
MAX_FORM_BYTES = 16_384


def _cookie_from_headers(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header names nobody
                continue
            if name in jar:
                return jar[name].value
    return None


def _safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this server, never another site."""
    value = (value or "/").strip()
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value[:512]


class Gate:
    """The login configuration and session cookies one dashboard process uses."""

    def __init__(self, config: LoginConfig, cookies: SessionCookies, *, secure: bool = False,
                 config_source: Callable[[], LoginConfig] | None = None,
                 messages_before_login: Callable[[bytes | None, str | None], bool] | None = None):
        self.config = config
        self.cookies = cookies
        self.secure = secure
        # The accounts are read again at each login, so an added account works without a restart.
        self._config_source = config_source or (lambda: config)
        self.messages_before_login = messages_before_login or (lambda data, text: False)

    @property
    def mode(self) -> str:
        return self.config.mode

    def user_of(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        return self.cookies.user(_cookie_from_headers(headers, SessionCookies.NAME))

    def set_cookie(self, response: Response, user: str, via: str) -> None:
        response.set_cookie(SessionCookies.NAME, self.cookies.make(user, via), max_age=self.cookies.max_age,
                            path="/", httponly=True, samesite="strict", secure=self.secure)

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(SessionCookies.NAME, path="/", httponly=True, samesite="strict", secure=self.secure)

    # ------------------------------------------------------------------ routes

    def routes(self) -> list[Route]:
        return [Route(LOGIN_PATH, self.login, methods=["GET", "POST"]),
                Route(LOGOUT_PATH, self.logout, methods=["GET", "POST"])]

    async def login(self, request: Request) -> Response:
        if self.mode != "password":  # nothing to log in to here (no login, or st.login)
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return self.page(next_path=_safe_next(request.query_params.get("next")))
        if not _same_origin(request):
            return PlainTextResponse("A login form is only accepted from this dashboard's own page.",
                                     status_code=403)
        try:
            length = int(request.headers.get("content-length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_FORM_BYTES:  # read by nobody yet: refused before it is received
            return PlainTextResponse("A login form is a few short fields; this request is not one.", status_code=413)
        form = await request.form(max_files=0, max_fields=8, max_part_size=4096)
        name, password = str(form.get("name") or "")[:128], str(form.get("password") or "")[:1024]
        next_path = _safe_next(str(form.get("next") or "/"))
        address = _client_address(request)
        wait = login_throttle().attempt(address)  # shared by every browser of this process
        if wait:
            return self.page(f"Too many login attempts. Try again in {math.ceil(wait)} s.", next_path,
                             name=name, status=429)
        try:
            config = await run_in_threadpool(self._config_source)
        except ValueError as exc:  # e.g. a broken accounts file: say which line, never a hash
            return self.page(f"The dashboard login is misconfigured: {exc}", next_path, status=500)
        user = await run_in_threadpool(config.check, name, password)  # scrypt: off the event loop
        if user is None:
            wrong = "Wrong name or password." if config.accounts else "Wrong password."
            return self.page(wrong, next_path, name=name, status=401)
        login_throttle().succeeded(address)
        log.info("dashboard login: %s", user if user != "staff" else "shared password")
        response = RedirectResponse(next_path, status_code=303)
        self.set_cookie(response, user, "account" if user != "staff" else "password")
        return response

    async def logout(self, request: Request) -> Response:
        self.cookies.revoke(request.cookies.get(SessionCookies.NAME))
        response = RedirectResponse(LOGIN_PATH if self.mode == "password" else "/", status_code=303)
        self.clear_cookie(response)
        return response

    def page(self, error: str = "", next_path: str = "/", *, name: str = "", status: int = 200) -> HTMLResponse:
        """The login form (no script, no outside resource; the password is never written back)."""
        try:
            accounts = bool(self._config_source().accounts) if self.mode == "password" else False
        except ValueError as exc:
            accounts, error = False, error or f"The dashboard login is misconfigured: {exc}"
        name_field = (f'<label for="name">Name</label><input id="name" name="name" autocomplete="username" '
                      f'value="{html.escape(name, quote=True)}" autofocus>') if accounts else ""
        error_html = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Chat Operator · Log in</title>
<style>
body{{font-family:system-ui,sans-serif;background:#f6f7f9;color:#262730;margin:0;display:flex;
min-height:100vh;align-items:center;justify-content:center}}
form{{background:#fff;border:1px solid #d6d9de;border-radius:.6rem;padding:2rem;width:min(22rem,90vw)}}
h1{{font-size:1.4rem;margin:0 0 .3rem}} h2{{font-size:1rem;font-weight:400;margin:0 0 1.4rem;color:#555}}
label{{display:block;font-size:.9rem;margin:.8rem 0 .3rem}}
input{{width:100%;box-sizing:border-box;padding:.5rem;border:1px solid #c3c7cf;border-radius:.4rem;font-size:1rem}}
button{{margin-top:1.3rem;width:100%;padding:.6rem;border:0;border-radius:.4rem;background:#ff4b4b;color:#fff;
font-size:1rem;cursor:pointer}}
.error{{background:#fdecec;color:#7d1a1a;border-radius:.4rem;padding:.5rem .7rem}}
</style></head><body>
<form method="post" action="{LOGIN_PATH}">
<h1>Chat Operator</h1><h2>Log in to the operator dashboard</h2>
{error_html}{name_field}
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password"{'' if accounts else ' autofocus'}>
<input type="hidden" name="next" value="{html.escape(next_path, quote=True)}">
<button type="submit">Log in</button>
</form></body></html>"""
        return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store",
                                                               "Content-Security-Policy": "default-src 'none'; "
                                                               "style-src 'unsafe-inline'; form-action 'self'; "
                                                               "frame-ancestors 'none'"})


def _client_address(request: Request) -> str:
    """The client's address for the throttle (the server believes X-Forwarded-For only from
    CHAT_TRUSTED_PROXIES, see the launcher)."""
    host = request.client.host if request.client else ""
    return host[:64] or "local"


def _same_origin(request: Request) -> bool:
    """A login POST comes from this server's own form: an Origin header, when the browser sends
    one, names this host."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


class GateMiddleware:
    """Pure ASGI middleware (so websockets pass through it too); see the module docstring."""

    def __init__(self, app, gate: Gate):
        self.app = app
        self.gate = gate

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self.gate.mode == "none":
            return await self.app(scope, receive, send)
        path = scope.get("path") or "/"
        user = self.gate.user_of(scope.get("headers") or [])
        oidc = self.gate.mode == "oidc"
        if kind == "websocket":
            if user is not None:
                return await self.app(scope, receive, send)
            if oidc:  # the script shows st.login; nothing else may be asked for before that
                return await self.app(scope, self._before_login(receive), send)
            log.warning("refused a websocket without a dashboard session")
            await send({"type": "websocket.close", "code": 1008})
            return None
        if oidc and path in OIDC_PATHS:
            return await self.app(scope, receive, self._after_oidc(scope, send, path))
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or user is not None:
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD") and not path.startswith(DATA_PREFIXES):
            if oidc:  # the page shell; its script shows the sign-in
                return await self.app(scope, receive, send)
            return await self._to_login(scope, receive, send)
        log.warning("refused %s %s without a dashboard session", scope.get("method"), path.split("/")[1][:32])
        await PlainTextResponse("Log in first: open the dashboard's /login page.", status_code=403)(
            scope, receive, send)
        return None

    async def _to_login(self, scope, receive, send) -> None:
        request = Request(scope)
        if request.headers.get("sec-fetch-site") == "cross-site":
            # A link from another site: the browser held back the SameSite=Strict cookie. Ask
            # again from this page (the cookie goes along then); /login comes only if there is none.
            response: Response = HTMLResponse('<!doctype html><meta http-equiv="refresh" content="0">',
                                              headers={"Cache-Control": "no-store"})
        else:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(f"{LOGIN_PATH}?next={_quote(target)}", status_code=303)
        await response(scope, receive, send)

    def _before_login(self, receive):
        allowed = self.gate.messages_before_login

        async def filtered():
            while True:
                message = await receive()
                if message["type"] != "websocket.receive" or allowed(message.get("bytes"), message.get("text")):
                    return message
                log.warning("ignored a websocket message from a browser that has not logged in")

        return filtered

    def _after_oidc(self, scope, send, path: str):
        """Add (or clear) the session cookie on Streamlit's sign-in callback (or sign-out)."""
        gate = self.gate
        request_cookie = _cookie_from_headers(scope.get("headers") or [], SessionCookies.NAME)

        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                extra = Response()
                if path == "/auth/logout":
                    gate.cookies.revoke(request_cookie)
                    gate.clear_cookie(extra)
                elif path == "/oauth2callback" and _signs_in(headers):
                    gate.set_cookie(extra, "oidc", "oidc")  # who it is, st.user says (verified by Streamlit)
                headers += [(k, v) for k, v in extra.raw_headers if k == b"set-cookie"]
                message = {**message, "headers": headers}
            await send(message)

        return wrapped


def _signs_in(headers: list[tuple[bytes, bytes]]) -> bool:
    """Streamlit's callback answer sets its user cookie (it does so only after a sign-in succeeded)."""
    for key, value in headers:
        if key.lower() == b"set-cookie":
            text = value.decode("latin-1")
            name, _, rest = text.partition("=")
            cookie_value = rest.split(";", 1)[0].strip().strip('"')
            if name.strip() == STREAMLIT_USER_COOKIE and cookie_value and "max-age=0" not in text.lower():
                return True
    return False


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def build_gate(secrets: dict, messages_before_login=None, env=None) -> Gate:
    """The gate for this process: the login configuration from the environment and ``secrets``
    (a misconfiguration is raised here, before the server starts), this process's cookies."""
    from chatcore.dashboard.auth import prepare_login, session_cookies

    config = login_config(env=env, secrets=secrets)
    if config.mode == "password":
        prepare_login()
    return Gate(config, session_cookies(), config_source=lambda: login_config(env=env, secrets=secrets),
                messages_before_login=messages_before_login)
