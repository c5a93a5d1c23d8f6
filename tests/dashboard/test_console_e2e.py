"""The staff console in headless Chromium: the website widget on one page, the dashboard's Live
page on another, both on the dashboard command's Space (free loopback ports).

A visitor asks for a person, an agent takes over, talks, and hands back, without opening the
conversation again; a second agent sees who has it and cannot take it.
"""
from __future__ import annotations

import contextlib

import json
import os
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, free_port, wait_http, stop_group

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
W = "#chat-operator-widget"
NOTICE = "Someone from the team will join you."
SHOTS = Path(os.environ.get("CHAT_TEST_SHOTS", "")) if os.environ.get("CHAT_TEST_SHOTS") else None

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")


@contextlib.contextmanager
def dashboard_stack(tmp_path, env_extra: dict | None = None):
    """``python -m chatcore dashboard`` (a Space and Streamlit) and the widget's host page, on
    free loopback ports; ``env_extra`` adds settings. Everything is stopped at the end."""
    from test_widget import _HostPage

    log = tmp_path / "logs" / "chat_logs.jsonl"
    dash_port, space_port = free_port(), free_port()
    out = open(tmp_path / "dashboard.out", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env = {**env, "PYTHONUNBUFFERED": "1", "CHAT_TIMEZONE": "UTC", "CHAT_ECHO_DELAY": "0.01",
           "CHAT_HANDOFF_NOTICE": NOTICE, "CHAT_SHUTDOWN_GRACE": "0.5", **(env_extra or {})}
    proc = subprocess.Popen(
        [PYTHON, "-m", "chatcore", "dashboard", "--port", str(dash_port), "--host", "127.0.0.1",
         "--space-url", f"http://127.0.0.1:{space_port}", "--log", str(log)],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    host = ThreadingHTTPServer(("127.0.0.1", free_port()), _HostPage)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        wait_http(f"http://127.0.0.1:{space_port}/healthz", timeout=60, proc=proc)
        wait_http(f"http://127.0.0.1:{dash_port}/_stcore/health", timeout=60, proc=proc)
        yield {"url": f"http://127.0.0.1:{dash_port}", "space": f"http://127.0.0.1:{space_port}", "log": log,
               "host": f"http://localhost:{host.server_address[1]}"}
    finally:
        host.shutdown()
        host.server_close()
        if proc.poll() is None:
            stop_group(proc, 20)


@pytest.fixture
def stack(tmp_path):
    with dashboard_stack(tmp_path) as running:
        yield running


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def lines_of(log: Path, cid: str) -> list[dict]:
    if not log.exists():
        return []
    return [r for r in (json.loads(x) for x in log.read_text().splitlines() if x.strip())
            if r.get("conversation_id") == cid]


def shot(page, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def visitor_page(browser, stack):
    ctx = browser.new_context(viewport={"width": 1000, "height": 800})
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    page.goto(f"{stack['host']}/?space={stack['space']}&handoff=on")
    page.locator(f"{W} .launcher").click()
    page.locator(f"{W} textarea").wait_for()
    return page


def visitor_says(page, text: str) -> None:
    box = page.locator(f"{W} textarea")
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(
        "() => { const r = document.querySelector('#chat-operator-widget').shadowRoot;"
        " return !r.querySelector('.send').disabled && !r.querySelector('.msg.pending'); }")


def agent_page(browser, stack, name: str, hooks: str | None = None):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1100}, timezone_id="UTC")
    ctx.set_default_timeout(20_000)
    if hooks:
        ctx.add_init_script(hooks)
    page = ctx.new_page()
    page.goto(stack["url"] + "/live")
    page.get_by_text("Conversations now", exact=False).first.wait_for(timeout=60_000)
    box = page.get_by_label("Your staff name")
    box.fill(name)
    box.press("Enter")
    return page


def open_conversation(page, cid: str) -> None:
    """Pick ``cid`` in "Open a conversation" as an agent does: type its first characters, Enter."""
    box = page.get_by_label("Open a conversation")
    box.click()
    box.fill(cid[:8])
    page.locator('[role="option"]', has_text=cid[:8]).first.wait_for()
    box.press("Enter")


def composer(page):
    """The "Message to the visitor" box (a chat input: its placeholder is its label)."""
    return page.locator("textarea[placeholder='Message to the visitor'], textarea[aria-label='Message to the visitor'],"
                        " input[aria-label='Message to the visitor']")


def panel_text(page) -> str:
    return page.locator('[data-testid="stMainBlockContainer"]').inner_text()


def test_take_over_talk_and_hand_back_without_opening_again(stack, browser):
    visitor = visitor_page(browser, stack)
    visitor_says(visitor, "hello")
    cid = visitor.evaluate("window.ChatOperatorWidget.conversationId")
    visitor.locator(f"{W} .handoff").click()
    visitor.locator(f"{W} .msg.note", has_text=NOTICE).wait_for()

    agent = agent_page(browser, stack, "Kim")
    agent.locator('[data-testid="stDataFrame"]', has_text="waiting for a person").first.wait_for(
        state="attached", timeout=30_000)
    open_conversation(agent, cid)
    agent.get_by_role("button", name="Take over").click()
    # The panel follows at once: the buttons, the composer, the transcript (no picking it again).
    composer(agent).wait_for(timeout=15_000)
    # (waited for: while a refresh replaces the panel, a loaded machine may briefly show both)
    agent.wait_for_function(
        "() => { const b = [...document.querySelectorAll('button')];"
        " const on = t => b.filter(x => x.innerText.includes(t)).map(x => !x.disabled);"
        " return on('Hand back').join() === 'true' && on('Take over').join() === 'false'; }", timeout=15_000)
    agent.locator('[data-testid="stChatMessage"]', has_text="hello").first.wait_for()
    assert "staff\n" not in panel_text(agent)  # no bare status word as a notice
    visitor.locator(f"{W} .msg.note", has_text="joined the chat").wait_for()
    shot(agent, "console-taken")

    # One Enter, one message: pasted text (no key events) and Enter.
    box = composer(agent)
    box.fill("Hi, Kim here. How can I help?")
    box.press("Enter")
    visitor.locator(f"{W} .msg.staff", has_text="Kim here").wait_for()
    agent.locator('[data-testid="stChatMessage"]', has_text="Kim here").first.wait_for()
    # Several refreshes of the page (0.5 s each) later, still one: a replayed value would have shown by now.
    agent.wait_for_timeout(3000)
    said = [r for r in lines_of(stack["log"], cid) if r.get("kind") == "staff_message"]
    assert [r["text"] for r in said] == ["Hi, Kim here. How can I help?"]
    assert visitor.locator(f"{W} .msg.staff").count() == 1
    # Shift+Enter is a new line, not a send.
    box = composer(agent)
    box.fill("First line")
    box.press("Shift+Enter")
    box.type("second line")
    assert [r.get("kind") for r in lines_of(stack["log"], cid)].count("staff_message") == 1
    box.press("Enter")
    visitor.locator(f"{W} .msg.staff", has_text="second line").wait_for()
    assert [r["text"] for r in lines_of(stack["log"], cid) if r.get("kind") == "staff_message"][-1] == \
        "First line\nsecond line"

    # The visitor answers; the agent sees it while the conversation is open.
    visitor_says(visitor, "my parcel is late")
    agent.locator('[data-testid="stChatMessage"]', has_text="my parcel is late").first.wait_for(timeout=15_000)
    shot(agent, "console-talking")

    agent.get_by_role("button", name="Hand back").click()
    agent.get_by_role("button", name="Take over").wait_for()
    agent.wait_for_function(
        "() => [...document.querySelectorAll('button')].some(b => b.innerText.includes('Take over') && !b.disabled)",
        timeout=15_000)
    composer(agent).wait_for(state="detached", timeout=15_000)  # gone once the run ends
    for text in ("hello", "Kim here", "my parcel is late"):  # the transcript stays on screen
        assert agent.locator('[data-testid="stChatMessage"]', has_text=text).count() >= 1, text
    visitor.locator(f"{W} .msg.note", has_text="left the chat").wait_for()
    visitor_says(visitor, "ok thanks")
    assert visitor.locator(f"{W} .msg.assistant:not(.greeting) .text").last.inner_text().startswith(
        "You said: ok thanks")
    agent.locator('[data-testid="stChatMessage"]', has_text="You said: ok thanks").first.wait_for(timeout=15_000)
    shot(agent, "console-handed-back")
    kinds = [r.get("kind", "turn") for r in lines_of(stack["log"], cid)]
    assert kinds == ["turn", "handoff_requested", "handoff_taken", "staff_message", "staff_message",
                     "visitor_message", "handoff_returned", "turn"]

    # Done: marked resolved, it leaves the list (and the log says who resolved it).
    agent.get_by_role("button", name="Mark resolved").click()
    agent.get_by_text("Marked resolved").first.wait_for(timeout=15_000)
    # The list of conversations now is empty, so gone (the stream of turns below stays).
    agent.wait_for_function("() => document.querySelectorAll('[data-testid=stDataFrame]').length === 1",
                            timeout=15_000)
    assert [(r.get("kind"), r.get("staff")) for r in lines_of(stack["log"], cid)][-1] == \
        ("conversation_resolved", "Kim")


def test_a_second_agent_sees_who_has_it_and_cannot_take_it(stack, browser):
    visitor = visitor_page(browser, stack)
    visitor_says(visitor, "hello")
    cid = visitor.evaluate("window.ChatOperatorWidget.conversationId")
    ann, bob = agent_page(browser, stack, "Ann"), agent_page(browser, stack, "Bob")
    for page in (ann, bob):
        open_conversation(page, cid)
        page.get_by_role("button", name="Take over").wait_for()
    ann.get_by_role("button", name="Take over").click()
    composer(ann).wait_for(timeout=15_000)
    # Bob's page follows by itself: who has it, and no way to take it.
    bob.get_by_text("Ann has this conversation").wait_for(timeout=15_000)
    assert bob.get_by_role("button", name="Take over").is_disabled()
    assert bob.get_by_role("button", name="Hand back").is_disabled()
    assert composer(bob).count() == 0
    shot(bob, "console-second-agent")
    assert [r.get("kind", "turn") for r in lines_of(stack["log"], cid)] == ["turn", "handoff_taken"]


def test_a_canned_reply_is_saved_inserted_edited_and_sent_once(stack, browser):
    """The agent saves a canned reply on the Live page, takes a conversation, clicks the reply
    (it goes into the message box, unsent), adds a word and presses Enter: the visitor gets it once."""
    visitor = visitor_page(browser, stack)
    visitor_says(visitor, "when are you open?")
    cid = visitor.evaluate("window.ChatOperatorWidget.conversationId")
    agent = agent_page(browser, stack, "Kim")
    agent.get_by_text("Canned replies (0)").click()
    agent.get_by_label("Title").fill("Opening hours")
    agent.get_by_label("Text").fill("We answer from 9 to 5.")
    agent.get_by_role("button", name="Save canned reply").click()
    agent.get_by_text("Canned replies (1)").wait_for(timeout=15_000)
    saved = (stack["log"].parent / "annotations" / "snippets.jsonl").read_text()
    assert "We answer from 9 to 5." in saved

    open_conversation(agent, cid)
    agent.get_by_role("button", name="Take over").click()
    composer(agent).wait_for(timeout=15_000)
    agent.locator('[data-testid="stButtonGroup"] button', has_text="Opening hours").click()
    agent.wait_for_function(
        "() => [...document.querySelectorAll(\"textarea[placeholder='Message to the visitor']\")]"
        ".some(t => t.value === 'We answer from 9 to 5.')", timeout=15_000)
    shot(agent, "console-canned-reply")
    agent.wait_for_timeout(1500)  # several refreshes: inserted, not sent
    assert [r.get("kind") for r in lines_of(stack["log"], cid)].count("staff_message") == 0
    box = composer(agent)
    box.press("End")
    box.type(" Today too.")
    box.press("Enter")
    visitor.locator(f"{W} .msg.staff", has_text="Today too").wait_for()
    agent.wait_for_timeout(3000)
    said = [r["text"] for r in lines_of(stack["log"], cid) if r.get("kind") == "staff_message"]
    assert said == ["We answer from 9 to 5. Today too."]
    assert visitor.locator(f"{W} .msg.staff").count() == 1


#: Stand-ins for the browser's notifications and sound that record what the page asks for.
HOOKS = """
window.__alerts = []; window.__tones = 0;
window.Notification = function (title, opts) { window.__alerts.push({title: title, body: opts && opts.body}); };
window.Notification.permission = "granted";
window.Notification.requestPermission = function () { return Promise.resolve("granted"); };
(function () {
  var Real = window.AudioContext;
  if (!Real) return;
  window.AudioContext = function () {
    var ctx = new Real(), make = ctx.createOscillator.bind(ctx);
    ctx.createOscillator = function () {
      var o = make(), start = o.start.bind(o);
      o.start = function () { window.__tones += 1; return start.apply(null, arguments); };
      return o;
    };
    return ctx;
  };
})();
"""


def test_the_agent_hears_and_sees_a_request_for_a_person(stack, browser):
    agent = agent_page(browser, stack, "Kim", hooks=HOOKS)
    agent.get_by_text("Sound and notification").click()
    agent.wait_for_timeout(1500)  # switched on: what waits already is in the table, not announced
    visitor = visitor_page(browser, stack)
    visitor_says(visitor, "hello")
    cid = visitor.evaluate("window.ChatOperatorWidget.conversationId")
    agent.wait_for_timeout(1500)
    assert agent.evaluate("window.__alerts.length") == 0  # a conversation, but nobody asked for a person
    visitor.locator(f"{W} .handoff").click()
    agent.wait_for_function("() => window.__alerts.length > 0", timeout=20_000)
    alerts = agent.evaluate("window.__alerts")
    assert alerts[0]["title"] == "A visitor asks for a person" and cid[:8] in alerts[0]["body"]
    assert agent.evaluate("window.__tones") >= 1
    agent.wait_for_timeout(2000)  # several refreshes later: announced once
    assert agent.evaluate("window.__alerts.length") == 1
