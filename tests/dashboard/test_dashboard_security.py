"""What a browser session that never logged in can do to the dashboard, over Streamlit's own
websocket protocol (tests/st_ws.py) and HTTP, with a logged-in page in headless Chromium watching.

The dashboard runs as ``python -m chatcore dashboard`` (Space + Streamlit behind the login gate of
chatcore/dashboard/gate.py) with a password.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from chatcore.dashboard.auth import LoginThrottle, hash_password
from st_ws import SESSION_COOKIE, LoginRefused, StreamlitSession, http_login
from test_dashboard_e2e import ARGS, CHROMIUM, stack, wait_page  # noqa: F401  (stack is a fixture)

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")

PASSWORD = "security-test-password"
TOO_MANY = "Too many login attempts"
WRONG = "Wrong password."


@pytest.fixture
def stack_env():
    # A long window so that the counts below do not depend on how fast this machine is.
    return {"CHAT_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD), "CHAT_LOGIN_WINDOW": "3600"}


def run_async(coro):
    """Run a coroutine to the end in its own thread (Playwright's sync API owns this thread's loop)."""
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the test
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join(180)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def write_turns(log: Path, markers: list[str]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        for marker in markers:
            f.write(json.dumps({"v": 1, "ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                                "conversation_id": f"conv-{marker}", "turn": 0, "user_text": marker,
                                "files": [], "response": f"reply to {marker}", "latency_ms": 5.0,
                                "source": "api", "backend": "echo", "model": None, "error": None,
                                "session": None}) + "\n")
            f.flush()


METRIC_JS = """(label) => {
  for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
    const l = m.querySelector('[data-testid="stMetricLabel"]');
    if (l && l.innerText.trim() === label) return m.querySelector('[data-testid="stMetricValue"]').innerText.trim();
  }
  return null;
}"""


def wait_metric(page, label: str, value: str, timeout: float = 20_000) -> None:
    try:
        page.wait_for_function(f"(v) => ({METRIC_JS})({json.dumps(label)}) === v", arg=value, timeout=timeout)
    except sync_api.TimeoutError:
        shown = page.evaluate(f"({METRIC_JS})({json.dumps(label)})")
        raise AssertionError(f"{label!r} shows {shown!r}, not {value!r}, after {timeout / 1000:.0f} s") from None


def browser_login(page, url: str, path: str = "") -> None:
    page.goto(url + "/" + path)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Log out").wait_for(timeout=30_000)


def open_live(page) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text="Live").click()
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
    wait_metric(page, "New turns since opening", "0")


# ------------------------------------------------------------------------ clear_cache


def test_clear_cache_from_a_session_that_never_logged_in_changes_nothing(stack):
    """Streamlit clears every session's caches on a clear_cache message; a browser that has not
    logged in cannot open the websocket to send one (nor with a made-up session cookie), and a
    logged-in Live page goes on showing new turns."""
    write_turns(stack["log"], ["before-1", "before-2"])
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1300, "height": 900}, timezone_id="UTC").new_page()
            browser_login(page, stack["url"])
            open_live(page)

            async def attack(cookie: str | None) -> int:
                async with StreamlitSession(stack["url"], cookie=cookie) as s:
                    try:
                        for _ in range(3):
                            await s.clear_cache()
                    except InvalidStatus as exc:
                        return exc.response.status_code
                    return 101

            assert run_async(attack(None)) == 403
            assert run_async(attack("eyJ1c2VyIjoic3RhZmYifQ.made.up")) == 403
            markers = [f"after-clear-{i}" for i in range(15)]
            write_turns(stack["log"], markers)
            wait_metric(page, "New turns since opening", "15")
            page.locator('[data-testid="stDataFrame"] [role="gridcell"]', has_text=markers[-1]).first.wait_for(
                state="attached", timeout=10_000)
        finally:
            browser.close()
    assert "refused a websocket without a dashboard session" in stack["output"].read_text()


def test_clear_cache_from_a_logged_in_session_loses_no_live_turn(stack):
    """A logged-in session may clear the caches; the Live page rebuilds its feed from the log and
    counts every turn, including those written while the feed was being rebuilt."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1300, "height": 900}, timezone_id="UTC").new_page()
            browser_login(page, stack["url"])
            open_live(page)
            write_turns(stack["log"], [f"first-{i}" for i in range(5)])
            wait_metric(page, "New turns since opening", "5")

            async def clear_while_writing() -> None:
                async with StreamlitSession(stack["url"]) as s:
                    run = await s.login(PASSWORD)
                    assert "Conversations today" in run.metrics  # logged in
                    await s.clear_cache()
                    write_turns(stack["log"], [f"during-{i}" for i in range(5)])
                    await s.run()
                    write_turns(stack["log"], [f"after-{i}" for i in range(5)])

            run_async(clear_while_writing())
            wait_metric(page, "New turns since opening", "15")
            page.locator('[data-testid="stDataFrame"] [role="gridcell"]', has_text="after-4").first.wait_for(
                state="attached", timeout=10_000)
        finally:
            browser.close()


# ------------------------------------------------------------------------ guessing


def _outcome(refused: LoginRefused) -> str:
    if refused.status == 429 and refused.alert.startswith(TOO_MANY):
        return "refused"
    if refused.status == 401 and refused.alert == WRONG:
        return "checked"
    return f"other: {refused.status} {refused.alert}"


async def _guess(url: str, browsers: int, tries: int, headers_for) -> list[str]:
    """``browsers`` clients at once, each posting ``tries`` wrong passwords to /login in turn."""
    async def one(i: int) -> list[str]:
        out = []
        for t in range(tries):
            try:
                await http_login(url, f"guess-{i}-{t}", headers=headers_for(i))
                out.append("logged in")
            except LoginRefused as refused:
                out.append(_outcome(refused))
        return out

    results = await asyncio.gather(*(one(i) for i in range(browsers)))
    return [o for r in results for o in r]


def test_a_forged_forwarded_for_gets_no_fresh_allowance(stack):
    """Without CHAT_TRUSTED_PROXIES, X-Forwarded-For is ignored: 8 sessions naming 8 addresses are one address."""
    outcomes = run_async(_guess(stack["url"], 8, 1, lambda i: {"X-Forwarded-For": f"203.0.113.{i + 1}"}))
    assert outcomes.count("checked") == 5 and outcomes.count("refused") == 3, outcomes


@pytest.mark.parametrize("stack_env", [{"CHAT_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD),
                                        "CHAT_LOGIN_WINDOW": "3600", "CHAT_TRUSTED_PROXIES": "127.0.0.1"}],
                         ids=["proxy-on-loopback"])
def test_password_guessing_is_throttled_across_sessions_per_address_and_overall(stack):
    url = stack["url"]
    # 30 parallel browsers from one address, 2 guesses each: the address gets 5 checks in all.
    same_address = run_async(_guess(url, 30, 2, lambda i: {}))
    assert len(same_address) == 60
    assert same_address.count("checked") == 5, same_address
    assert same_address.count("refused") == 55, same_address

    # 30 addresses (a trusted proxy on loopback says who is behind it), 2 guesses each: nobody reaches the
    # per-address limit, but only 20 checks happen overall (5 of them were spent above).
    many = run_async(_guess(url, 30, 2, lambda i: {"X-Forwarded-For": f"198.51.100.{i + 1}"}))
    assert many.count("checked") == 15, many
    assert many.count("refused") == 45, many

    # While the overall allowance is used up, even the right password from a new address waits.
    with pytest.raises(LoginRefused) as refused:
        run_async(http_login(url, PASSWORD, headers={"X-Forwarded-For": "192.0.2.7"}))
    assert refused.value.status == 429 and refused.value.alert.startswith(TOO_MANY)


def test_login_throttle_counts_parallel_attempts_before_they_finish():
    """Attempts are counted when they start: 40 threads at once from one address get exactly 5."""
    throttle = LoginThrottle(per_address=5, overall=20, window=3600)
    barrier = threading.Barrier(40)
    allowed = []

    def attempt():
        barrier.wait()
        allowed.append(throttle.attempt("203.0.113.5") == 0)

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 5 and throttle.refused == 35
    throttle.succeeded("203.0.113.5")  # a right password gives the address its allowance back
    assert throttle.attempt("203.0.113.5") == 0
    assert sum(throttle.attempt(f"198.51.100.{i}") == 0 for i in range(30)) == 19  # 20 overall


# ------------------------------------------------------------------------ exports


def test_exports_are_generated_and_served_only_to_a_logged_in_browser(stack):
    """An export is made when a logged-in browser clicks; its /media/… link downloads nothing
    without the session cookie (a copied or leaked link), and a browser that never logged in
    cannot ask for the export at all (its websocket is refused)."""
    write_turns(stack["log"], [f"export-{i}" for i in range(3)])

    async def protocol() -> None:
        async with StreamlitSession(stack["url"]) as owner, StreamlitSession(stack["url"]) as stranger:
            await owner.login(PASSWORD)
            conv = await owner.run(page="conversations")
            button = conv.downloads["Export CSV"]
            assert button.deferred_file_id and not button.url  # nothing in /media until a click

            stranger.session_id = owner.session_id  # even knowing the owner's session and the file id
            with pytest.raises(InvalidStatus) as refused:
                await stranger.deferred_download(button.deferred_file_id)
            assert refused.value.response.status_code == 403

            ok = await owner.deferred_download(button.deferred_file_id)
            assert not ok.error_msg and ok.deferred_file.url.startswith("/media/")
            media = stack["url"] + ok.deferred_file.url
            assert httpx.get(media, timeout=10).status_code == 403  # the link alone
            assert httpx.get(media, cookies={SESSION_COOKIE: owner.cookie + "x"}, timeout=10).status_code == 403
            fetched = httpx.get(media, cookies={SESSION_COOKIE: owner.cookie}, timeout=10)
            assert fetched.status_code == 200 and "export-2" in fetched.text

    run_async(protocol())

    # In the browser: the click downloads the file; the URL it used gives nothing without the cookie.
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1300, "height": 900}, timezone_id="UTC", accept_downloads=True)
            page = ctx.new_page()
            browser_login(page, stack["url"], "conversations")
            page.get_by_text("Matching conversations").wait_for(timeout=30_000)
            wait_page(page)
            assert page.locator('a[href*="/media/"]').count() == 0
            with page.expect_download(timeout=30_000) as info:
                page.get_by_role("button", name="Export CSV").click()
            download = info.value
            assert "export-1" in Path(download.path()).read_text()
            assert "/media/" in download.url
            assert httpx.get(download.url, timeout=10).status_code == 403
        finally:
            browser.close()


# ------------------------------------------------------------------------ uploads


def test_uploads_from_a_browser_that_never_logged_in_are_refused(stack):
    url = stack["url"]
    page = httpx.get(url + "/_stcore/health", timeout=10)  # as the browser does: it sets the XSRF cookie
    xsrf = page.cookies.get("_streamlit_xsrf")

    def put(session_id: str, cookie: str | None) -> int:
        cookies = dict(page.cookies)
        if cookie:
            cookies[SESSION_COOKIE] = cookie
        return httpx.put(f"{url}/_stcore/upload_file/{session_id}/file-1", timeout=10,
                         headers={"X-Xsrftoken": xsrf or ""}, cookies=cookies,
                         files={"file": ("x.bin", b"x" * 1000, "application/octet-stream")}).status_code

    async def sessions() -> tuple[int, int]:
        async with StreamlitSession(url) as staff:
            await staff.login(PASSWORD)
            # to the logged-in session's own upload URL: with its cookie, and without
            return put(staff.session_id, None), put(staff.session_id, staff.cookie)

    stranger, staff = run_async(sessions())
    assert staff == 204  # the request itself is well formed
    assert stranger == 403  # "log in first"


# ------------------------------------------------------------------------ Live after a rebuilt feed


def test_catch_up_adds_what_the_log_has_after_the_newest_shown_turn(tmp_path):
    from chatcore.dashboard.views import SharedStore, catch_up, latest_records, merge_live

    log = tmp_path / "chat.jsonl"
    with open(log, "w") as f:
        for i in range(8):
            f.write(json.dumps({"v": 1, "ts": f"2026-11-21T10:00:0{i}.000Z", "conversation_id": f"c{i}", "turn": 0,
                                "user_text": f"t{i}", "files": [], "response": "r", "latency_ms": 1.0,
                                "source": "api", "backend": "echo", "model": None, "error": None,
                                "session": None}) + "\n")
    questions = SharedStore(log).questions()
    shown = merge_live([], latest_records(questions, 8)[:5])  # the viewer had seen t0..t4
    rows, added = catch_up(shown, questions)
    assert added == 3
    assert [r["user_text"] for r in rows] == ["t7", "t6", "t5", "t4", "t3", "t2", "t1", "t0"]
    again, added_again = catch_up(rows, questions)
    assert added_again == 0 and len(again) == 8  # nothing twice


def test_a_turn_both_caught_up_and_in_the_rebuilt_feed_is_counted_once(tmp_path):
    """After a cleared cache the Live page takes the new feed's cursor, then catches up from the
    log: a turn written between the two comes from both. It is shown and counted once."""
    from chatcore.dashboard.views import SharedStore, catch_up, latest_records, merge_live, merge_live_counted
    from chatcore.store import parse_line

    log = tmp_path / "chat.jsonl"
    lines = [json.dumps({"v": 1, "ts": f"2026-11-21T10:00:0{i}.000Z", "conversation_id": f"c{i}", "turn": 0,
                         "user_text": f"t{i}", "files": [], "response": "r", "latency_ms": 1.0, "source": "api",
                         "backend": "echo", "model": None, "error": None, "session": None}) for i in range(9)]
    log.write_text("\n".join(lines[:8]) + "\n")
    questions = SharedStore(log).questions()
    shown = merge_live([], latest_records(questions, 8)[:5])  # the viewer had seen t0..t4
    rows, added = catch_up(shown, questions)  # t5..t7 from the log
    assert added == 3
    # the feed (records as the tail parses them) hands out t6 and t7 again, and t8, new
    log.write_text("\n".join(lines) + "\n")
    feed = [parse_line(line.encode()) for line in lines[6:9]]
    rows, added = merge_live_counted(rows, feed)
    assert added == 1
    assert [r["user_text"] for r in rows] == ["t8", "t7", "t6", "t5", "t4", "t3", "t2", "t1", "t0"]
