"""The login gate in front of Streamlit (chatcore/dashboard/gate.py, served by
``streamlit run dashboard_app.py``), attacked over HTTP and Streamlit's websocket.

The server runs as a real process on a free loopback port, without a Space (the pages only
need the log for what is checked here).
"""
from __future__ import annotations

import asyncio
import os
import re
import subprocess

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from chatcore.dashboard.auth import SessionCookies, hash_password
from conftest import PYTHON, ROOT, free_port, wait_http, stop_group
from st_ws import SESSION_COOKIE, LoginRefused, StreamlitSession, http_login

PASSWORD = "gate-test-password"
SECRET = "cookie-secret-" + "k9Qx7ZpL2mVw4RtY8sNb3HcJ" * 2


class Dashboard:
    def __init__(self, tmp_path, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = tmp_path / "dashboard.out"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "STREAMLIT_"))}
        self.env = {**base, "PYTHONUNBUFFERED": "1", "CHAT_TIMEZONE": "UTC", "FORWARDED_ALLOW_IPS": "",
                    "CHAT_LOG_PATH": str(tmp_path / "chat.jsonl"), "CHAT_SPACE_URL": f"http://127.0.0.1:{free_port()}",
                    **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Dashboard":
        out = open(self.output, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "streamlit", "run", str(ROOT / "dashboard_app.py"), "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        wait_http(self.url + "/_stcore/health", timeout=60, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_group(self.proc, 20)

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def dash_env():
    return {"CHAT_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD), "CHAT_DASHBOARD_COOKIE_SECRET": SECRET,
            "CHAT_LOGIN_WINDOW": "3600"}


@pytest.fixture
def dash(tmp_path, dash_env):
    server = Dashboard(tmp_path, dash_env)
    try:
        yield server.start()
    finally:
        server.stop()


async def ws_status(url: str, cookie: str | None) -> int:
    """What the websocket handshake answers: 101 when it opens, else the refusal's status."""
    s = StreamlitSession(url, cookie=cookie)
    try:
        await s.connect()
    except InvalidStatus as exc:
        return exc.response.status_code
    await s.ws.close()
    return 101


def tampered(cookie: str) -> list[str]:
    payload, stamp, signature = cookie.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    import base64
    import json

    other_user = base64.urlsafe_b64encode(json.dumps({"user": "Mallory", "via": "account", "sid": "x"}).encode())
    return [f"{payload}.{stamp}.{flipped}",                                   # signature changed
            f"{other_user.decode().rstrip('=')}.{stamp}.{signature}",         # payload changed
            SessionCookies("another secret, 32 characters long!").make("Mallory", "account"),  # forged
            "Mallory", ""]


def test_the_login_page_logs_in_and_out(dash):
    url = dash.url
    first = httpx.get(url + "/conversations", timeout=10)
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/conversations"
    form = httpx.get(url + "/login?next=/conversations", timeout=10)
    assert form.status_code == 200 and "Log in to the operator dashboard" in form.text
    assert 'name="name"' not in form.text  # one shared password: no name asked
    assert "default-src 'none'" in form.headers["content-security-policy"]

    wrong = httpx.post(url + "/login", data={"password": "not-the-password", "next": "/conversations"}, timeout=30)
    assert wrong.status_code == 401 and 'role="alert">Wrong password.<' in wrong.text
    assert "not-the-password" not in wrong.text and SESSION_COOKIE not in wrong.cookies

    ok = httpx.post(url + "/login", data={"password": PASSWORD, "next": "/conversations"}, timeout=30)
    assert ok.status_code == 303 and ok.headers["location"] == "/conversations"
    set_cookie = ok.headers["set-cookie"]
    assert set_cookie.startswith(SESSION_COOKIE + "=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
        assert attribute.lower() in set_cookie.lower(), set_cookie
    cookie = ok.cookies[SESSION_COOKIE]
    assert httpx.get(url + "/conversations", cookies={SESSION_COOKIE: cookie}, timeout=10).status_code == 200

    async def pages() -> tuple[dict, int]:
        async with StreamlitSession(url, cookie=cookie) as s:
            overview = await s.run()
            conv = await s.run(page="conversations")
        return {**overview.metrics, **conv.metrics}, 0

    metrics, _ = asyncio.run(pages())
    assert "Conversations today" in metrics and "Conversations" in metrics

    out = httpx.get(url + "/logout", cookies={SESSION_COOKIE: cookie}, timeout=10)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert 'chat_operator_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    # The cookie itself no longer opens anything (it was revoked, not only deleted from the browser).
    assert asyncio.run(ws_status(url, cookie)) == 403
    assert httpx.get(url + "/conversations", cookies={SESSION_COOKIE: cookie}, timeout=10).status_code == 303


def test_without_a_valid_session_only_login_and_health_answer(dash):
    url = dash.url
    good = asyncio.run(http_login(url, PASSWORD))
    assert asyncio.run(ws_status(url, good)) == 101
    # The websocket: no cookie, a tampered, forged or made-up one are all refused at the handshake,
    # so no script run, clear_cache or download request can be sent.
    for cookie in [None, *tampered(good)]:
        assert asyncio.run(ws_status(url, cookie)) == 403, cookie

    xsrf_page = httpx.get(url + "/_stcore/health", timeout=10)
    assert xsrf_page.status_code == 200  # health stays open
    for bad in [None, *tampered(good)]:
        cookies = {SESSION_COOKIE: bad} if bad else {}
        # a media file (an export's link), an upload, the metrics: refused before Streamlit sees them
        assert httpx.get(url + "/media/0123456789abcdef.csv", cookies=cookies, timeout=10).status_code == 403
        upload = httpx.put(f"{url}/_stcore/upload_file/some-session/file-1", cookies=cookies, timeout=10,
                           files={"file": ("x.bin", b"x" * 1000, "application/octet-stream")})
        assert upload.status_code == 403
        assert httpx.get(url + "/_stcore/metrics", cookies=cookies, timeout=10).status_code == 403
        assert httpx.get(url + "/live", cookies=cookies, timeout=10).status_code == 303  # to /login

    # A link from another site (the browser held back the SameSite=Strict cookie) is asked again
    # from this site, not sent to /login at once.
    bounce = httpx.get(url + "/live", headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert bounce.status_code == 200 and 'http-equiv="refresh"' in bounce.text and "Chat Operator" not in bounce.text

    # The login form only from this dashboard's page; after it, only a path on this server.
    foreign = httpx.post(url + "/login", data={"password": PASSWORD}, headers={"Origin": "http://evil.example"},
                         timeout=30)
    assert foreign.status_code == 403 and SESSION_COOKIE not in foreign.cookies
    for target in ("//evil.example/x", "http://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        r = httpx.post(url + "/login", data={"password": PASSWORD, "next": target}, timeout=30)
        assert r.status_code == 303 and r.headers["location"] == "/", target
    huge = httpx.post(url + "/login", content=b"password=" + b"x" * 100_000, timeout=30,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413
    assert "refused a websocket without a dashboard session" in dash.text()


@pytest.mark.parametrize("dash_env", [{"CHAT_DASHBOARD_PASSWORD": PASSWORD}], ids=["plain-password"])
def test_wrong_passwords_are_throttled_then_even_the_right_one_waits(dash):
    """Five attempts a minute from one address (a plain CHAT_DASHBOARD_PASSWORD works too); the
    sixth is refused without checking the password, and says how long to wait."""
    for i in range(5):
        with pytest.raises(LoginRefused) as refused:
            asyncio.run(http_login(dash.url, f"guess-{i}"))
        assert (refused.value.status, refused.value.alert) == (401, "Wrong password."), i
    with pytest.raises(LoginRefused) as refused:
        asyncio.run(http_login(dash.url, PASSWORD))  # right, but too soon
    wait = re.fullmatch(r"Too many login attempts\. Try again in (\d+) s\.", refused.value.alert)
    assert refused.value.status == 429 and wait and 0 < int(wait.group(1)) <= 60, refused.value.alert


def test_the_cookie_secret_never_appears_in_a_page_a_log_or_an_error(dash, tmp_path):
    url = dash.url
    seen: list[str] = []
    for r in (httpx.get(url + "/login", timeout=10), httpx.get(url + "/live", timeout=10),
              httpx.post(url + "/login", data={"password": "wrong"}, timeout=30),
              httpx.get(url + "/media/x.csv", timeout=10),
              httpx.get(url + "/media/x.csv", cookies={SESSION_COOKIE: "forged." + SECRET}, timeout=10)):
        seen.append(r.text + str(r.headers))
    cookie = asyncio.run(http_login(url, PASSWORD))

    async def every_page() -> str:
        async with StreamlitSession(url, cookie=cookie) as s:
            runs = [await s.run()] + [await s.run(page=p) for p in ("chat", "live", "conversations", "evaluate")]
        return "\n".join("\n".join(r.markdown + r.alerts + list(r.metrics.values())) for r in runs)

    seen.append(every_page_text := asyncio.run(every_page()))
    assert "Conversations today" in every_page_text or every_page_text  # the pages ran
    seen.append(dash.text())
    for text in seen:
        assert SECRET not in text
    assert SECRET not in cookie  # signed with it, not carrying it

    # A secret too short is an error that names the setting, not the value.
    short = Dashboard(tmp_path / "short", {"CHAT_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD),
                                           "CHAT_DASHBOARD_COOKIE_SECRET": "short-secret-value"})
    (tmp_path / "short").mkdir()
    with pytest.raises(RuntimeError):
        short.start()
    short.stop()
    assert "CHAT_DASHBOARD_COOKIE_SECRET must be at least 32" in short.text()
    assert "short-secret-value" not in short.text()


def test_staff_accounts_log_in_by_name(dash_env, tmp_path):
    accounts = tmp_path / "staff-accounts"
    accounts.write_text(f"Ann Lee:{hash_password('ann-password-1')}\nbob@example.org:{hash_password('bob-pw-22')}\n")
    server = Dashboard(tmp_path, {"CHAT_STAFF_ACCOUNTS": str(accounts), "CHAT_LOGIN_WINDOW": "3600"})
    try:
        server.start()
        form = httpx.get(server.url + "/login", timeout=10)
        assert 'name="name"' in form.text
        for name, password in (("Ann Lee", "bob-pw-22"), ("Nobody", "ann-password-1"), ("", "ann-password-1")):
            with pytest.raises(LoginRefused) as refused:
                asyncio.run(http_login(server.url, password, name))
            assert refused.value.alert == "Wrong name or password.", name
        cookie = asyncio.run(http_login(server.url, "ann-password-1", "Ann Lee"))

        async def sidebar() -> str:
            async with StreamlitSession(server.url, cookie=cookie) as s:
                run = await s.run()
            return "\n".join(run.markdown)

        assert "Signed in as Ann Lee" in asyncio.run(sidebar())
        # An account added while the dashboard runs works at once.
        with open(accounts, "a") as f:
            f.write(f"Cy:{hash_password('cy-password-3')}\n")
        assert asyncio.run(http_login(server.url, "cy-password-3", "Cy"))
        # A broken file is said (which line), with no hash in the answer.
        with open(accounts, "a") as f:
            f.write("Dee has no hash\n")
        with pytest.raises(LoginRefused) as refused:
            asyncio.run(http_login(server.url, "cy-password-3", "Cy"))
        assert refused.value.status == 500 and "line 4" in refused.value.alert and "scrypt" not in refused.value.alert
    finally:
        server.stop()
    assert "ann-password-1" not in server.text()
