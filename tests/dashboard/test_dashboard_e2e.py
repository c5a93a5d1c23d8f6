"""End to end in headless Chromium: ``python -m chatcore dashboard`` starts a Space and
``streamlit run dashboard.py`` on free loopback ports; a prompt sent on the Chat page
shows on the Live page and is in the log.

The README's dashboard images come from ``docs/screenshots.py`` (the demo), not from here.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import PYTHON, ROOT, free_port, wait_http

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_REMOTE = "![x](http://127.0.0.1:9/p.png)"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")


def port_open(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except httpx.HTTPError:
        return False


@pytest.fixture
def stack_env():
    """Extra environment for the dashboard command (a test may set a login here first)."""
    return {}


@pytest.fixture
def stack(tmp_path, stack_env):
    """The dashboard command (Space + Streamlit) on free loopback ports; stopped by SIGTERM."""
    log = tmp_path / "logs" / "chat_logs.jsonl"
    dash_port, space_port = free_port(), free_port()
    out = open(tmp_path / "dashboard.out", "wb")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CHAT_DASHBOARD_PASSWORD_HASH", "CHAT_DASHBOARD_PASSWORD")}
    env = {**env, "PYTHONUNBUFFERED": "1", "CHAT_TIMEZONE": "UTC", "CHAT_ECHO_DELAY": "0.01", **stack_env}
    proc = subprocess.Popen(
        [PYTHON, "-m", "chatcore", "dashboard", "--port", str(dash_port), "--host", "127.0.0.1",
         "--space-url", f"http://127.0.0.1:{space_port}", "--log", str(log)],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    out.close()
    info = {"url": f"http://127.0.0.1:{dash_port}", "space": f"http://127.0.0.1:{space_port}", "log": log,
            "dash_port": dash_port, "space_port": space_port, "output": tmp_path / "dashboard.out"}
    try:
        wait_http(info["space"] + "/healthz", timeout=60, proc=proc)
        wait_http(info["url"] + "/_stcore/health", timeout=60, proc=proc)
        yield info
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the command stops its children
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    # Every child is gone with it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (port_open(dash_port) or port_open(space_port)):
        time.sleep(0.2)
    assert not port_open(dash_port) and not port_open(space_port)


def log_records(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def wait_page(page) -> None:
    """Until Streamlit has finished the current run."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=30_000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"] [data-testid=\"stStatusWidgetRunningIcon\"]')",
        timeout=30_000)


def test_chat_turn_shows_live_and_in_the_log(stack):
    dialogs: list[str] = []
    bad_requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1440, "height": 1000},
                                      timezone_id="UTC")
            page = ctx.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: bad_requests.append(r.url)
                    if "127.0.0.1:9/" in r.url or r.url.startswith("javascript:") or r.url.endswith("/x") else None)

            # A page URL opened first on a fresh server still runs through dashboard.py.
            page.goto(stack["url"] + "/chat")
            box = page.get_by_placeholder("Type a test prompt…")
            box.wait_for(timeout=30_000)
            page.get_by_text("Space reachable", exact=False).first.wait_for(timeout=15_000)
            cid = page.locator('[data-testid="stMainBlockContainer"] [data-testid="stCode"]').first.inner_text().strip()
            assert re.fullmatch(r"[0-9a-f-]{36}", cid), cid
            prompt = f"e2e hello {XSS_IMG} {XSS_REMOTE}"
            box.fill(prompt)
            box.press("Enter")
            page.get_by_text("You said: e2e hello", exact=False).first.wait_for(timeout=30_000)
            page.get_by_text("round trip", exact=False).first.wait_for(timeout=10_000)
            assert page.locator("img[src='x']").count() == 0
            assert page.locator("img[src*='127.0.0.1:9']").count() == 0
            assert page.locator('[data-testid="stMainBlockContainer"] [data-testid="stCode"]').first.inner_text().strip() == cid  # kept

            # The line is in the log, with this session's conversation id and source=operator.
            mine = [r for r in log_records(stack["log"]) if r["conversation_id"] == cid]
            assert [(r["turn"], r["source"], r["user_text"]) for r in mine][:1] == [(0, "operator", prompt)]

            # The Live page (client-side navigation keeps the session) shows it.
            page.locator('[data-testid="stSidebarNav"] a', has_text="Live").click()
            grid = page.locator('[data-testid="stDataFrame"]').first  # the stream of turns (then Conversations now)
            grid.wait_for(timeout=30_000)
            page.locator('[data-testid="stDataFrame"] [role="gridcell"]', has_text="e2e hello").first.wait_for(
                state="attached", timeout=10_000)
            # A line written now appears by itself (no reload, no click); how fast is measured by
            # bench/live_browser.py, not asserted here.
            marker = f"written-directly-{time.time_ns()}"
            with open(stack["log"], "a") as f:
                f.write(json.dumps({"v": 1, "ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                                    "conversation_id": "e2e-direct", "turn": 0, "user_text": marker,
                                    "files": [], "response": "ok", "latency_ms": 5.0, "source": "api",
                                    "backend": "echo", "model": None, "error": None, "session": None}) + "\n")
            url_before = page.url
            page.locator('[data-testid="stDataFrame"] [role="gridcell"]', has_text=marker).first.wait_for(
                state="attached", timeout=30_000)
            assert page.url == url_before
        finally:
            browser.close()
    assert dialogs == [], dialogs
    assert bad_requests == [], bad_requests


PASSWORD = "e2e-password-123"


def _login_env() -> dict:
    from chatcore.dashboard.auth import hash_password

    return {"CHAT_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD)}


@pytest.mark.parametrize("stack_env", [_login_env()], ids=["password"])
def test_login_in_the_browser(stack):
    """With a password configured, a page URL shows only the login form until the password is right,
    then that page; logging out ends the session."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1100, "height": 700}, timezone_id="UTC").new_page()
            page.goto(stack["url"] + "/conversations")
            page.get_by_text("Log in to the operator dashboard").wait_for(timeout=30_000)
            body = page.locator("body").inner_text()
            assert "Transcript" not in body and "Matching conversations" not in body
            assert str(stack["log"]) not in body and stack["space"] not in body
            assert page.locator('[data-testid="stSidebarNav"]').count() == 0  # no page list either
            box = page.get_by_label("Password", exact=True)
            box.fill("not-the-password")
            page.get_by_role("button", name="Log in").click()
            page.get_by_text("Wrong password.").wait_for(timeout=15_000)
            assert "not-the-password" not in page.content()
            assert page.get_by_label("Password", exact=True).input_value() == ""
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.get_by_text("Matching conversations").wait_for(timeout=30_000)
            assert page.url == stack["url"] + "/conversations"
            logout = page.get_by_role("link", name="Log out")
            logout.wait_for(timeout=10_000)
            session = [c for c in page.context.cookies() if c["name"] == "chat_operator_session"]
            assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
            assert "chat_operator_session" not in page.evaluate("document.cookie")  # scripts cannot read it
            page.goto(stack["url"] + "/logout")
            page.get_by_text("Log in to the operator dashboard").wait_for(timeout=15_000)
            page.goto(stack["url"] + "/conversations")
            page.get_by_label("Password", exact=True).wait_for(timeout=15_000)  # logged out
        finally:
            browser.close()
