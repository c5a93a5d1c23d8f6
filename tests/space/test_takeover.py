"""Staff step in: takeover, staff messages, hand-back and requests for a person.

Real Spaces on 127.0.0.1 (subprocesses), the real CLI, and the real widget in headless
Chromium on a host page of another origin (the host page server of test_widget).
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import httpx
import pytest
from gradio_client import Client

from conftest import PYTHON, ROOT, SpaceProcess

W = "#chat-operator-widget"
REPLY = f"{W} .msg.assistant:not(.greeting):not(.pending)"
NOTICE = "Someone from the team will join you."
FALLBACK = "Nobody is free right now: the assistant carries on."
ENV = {"CHAT_HANDOFF_NOTICE": NOTICE, "CHAT_HANDOFF_FALLBACK": FALLBACK}


def chat(sp: SpaceProcess, cid: str, text: str, client: Client | None = None) -> str:
    client = client or Client(sp.url, verbose=False)
    return client.predict(message={"text": text, "files": []}, conversation_id=cid, source="widget",
                          api_name="/chat")


def staff(sp: SpaceProcess, route: str, token: str | None = "auto", **body) -> httpx.Response:
    token = sp.token() if token == "auto" else token
    headers = {"X-Chat-Operator-Token": token} if token else {}
    return httpx.post(f"{sp.url}/handoff/{route}", json=body, headers=headers, timeout=10)


def cli(sp: SpaceProcess, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CHAT_OPERATOR_TOKEN"}
    return subprocess.run([PYTHON, "-m", "chatcore", *args, "--space", sp.url, "--log", str(sp.log_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def state(sp: SpaceProcess, cid: str) -> dict:
    return httpx.get(f"{sp.url}/handoff/state", params={"conversation_id": cid},
                     headers={"X-Chat-Operator-Token": sp.token()}, timeout=10).json()


def kinds(sp: SpaceProcess, cid: str) -> list[str]:
    return [r.get("kind", "turn") for r in sp.records() if r["conversation_id"] == cid]


def wait_for(check, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class SSE:
    """Reads a conversation's channel in a thread; ``events`` fills as they arrive."""

    def __init__(self, url: str, cid: str):
        self.events: list[dict] = []
        self.status: int | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(url, cid), daemon=True)
        self._thread.start()

    def _run(self, url, cid):
        try:
            with httpx.stream("GET", f"{url}/handoff/events", params={"conversation_id": cid},
                              timeout=httpx.Timeout(30, read=60)) as res:
                self.status = res.status_code
                for line in res.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
        except httpx.HTTPError:
            pass  # the Space stopped at the end of the test

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    def close(self):
        self._stop = True


# --------------------------------------------------------------------------- HTTP and CLI


def test_text_request_takeover_handback_and_context(space_factory):
    sp = space_factory(env=ENV)
    cid = "conv-takeover-1"
    client = Client(sp.url, verbose=False)
    assert chat(sp, cid, "hello", client) == "You said: hello"
    # Asking for a person in words: the visitor is told someone will join; the bot is not asked.
    assert chat(sp, cid, "Can I talk to a HUMAN please?", client) == NOTICE
    assert state(sp, cid)["status"] == "waiting"

    took = cli(sp, "takeover", cid, "--as", "Ann")
    assert took.returncode == 0, took.stderr
    assert state(sp, cid) | {"events": None} == {"conversation_id": cid, "status": "staff", "staff": "Ann",
                                                  "waiting_since": None, "events": None}
    said = cli(sp, "say", cid, "Hi, this is Ann. How can I help?", "--as", "Ann")
    assert said.returncode == 0, said.stderr
    # The visitor writes while Ann holds it: no bot answer.
    assert chat(sp, cid, "my order is late", client) == ""
    back = cli(sp, "handback", cid, "--as", "Ann")
    assert back.returncode == 0, back.stderr
    assert state(sp, cid)["status"] == "bot"
    # The bot's context now holds the whole transcript: hello, the request, and the message
    # written to Ann (3 visitor messages before this one), with Ann's words as a reply.
    assert chat(sp, cid, "thanks", client) == "You said: thanks (message 4 in this conversation)"

    assert kinds(sp, cid) == ["turn", "turn", "handoff_requested", "handoff_taken", "staff_message",
                              "visitor_message", "handoff_returned", "turn"]
    lines = [r for r in sp.records() if r["conversation_id"] == cid]
    assert [r["turn"] for r in lines if "kind" not in r] == [0, 1, 2]  # events take no turn numbers
    assert lines[4]["staff"] == "Ann" and lines[4]["text"] == "Hi, this is Ann. How can I help?"
    assert lines[5]["text"] == "my order is late"
    assert lines[1]["backend"] == "handoff"
    # Turn counts are not inflated by event lines.
    assert sp.health(staff=False)["turns_logged"] == 3
    from chatcore.store import load_log

    frame, stats = load_log(sp.log_path)
    assert len(frame[frame["conversation_id"] == cid]) == 3
    # Exports show staff messages as such, in their place.
    md = subprocess.run([PYTHON, "-m", "chatcore", "export", "--conversation", cid, "--log", str(sp.log_path),
                         "--format", "md"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert md.returncode == 0, md.stderr
    text = md.stdout
    assert "**Staff (Ann):**" in text and "> Ann took over" in text and "**User (to staff):**" in text
    assert text.index("Can I talk to a HUMAN") < text.index("Hi, this is Ann") < text.index("my order is late") \
        < text.index("Ann handed back") < text.index("    thanks")
    jl = subprocess.run([PYTHON, "-m", "chatcore", "export", "--conversation", cid, "--log", str(sp.log_path),
                         "--format", "jsonl"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    exported = [json.loads(x) for x in jl.stdout.splitlines()]
    assert [e["kind"] for e in exported] == kinds(sp, cid)  # every line in log order, each with its kind


def test_second_staff_member_is_refused_and_sees_who(space_factory):
    sp = space_factory(env=ENV)
    cid = "conv-two-staff"
    chat(sp, cid, "hello")
    assert staff(sp, "take", conversation_id=cid, staff="Ann").status_code == 200
    res = staff(sp, "take", conversation_id=cid, staff="Bob")
    assert res.status_code == 409 and res.json()["held_by"] == "Ann"
    res = staff(sp, "say", conversation_id=cid, staff="Bob", text="let me")
    assert res.status_code == 409 and res.json()["held_by"] == "Ann"
    assert staff(sp, "handback", conversation_id=cid, staff="Bob").status_code == 409
    refused = cli(sp, "takeover", cid, "--as", "Bob")
    assert refused.returncode == 1 and "Ann has this conversation" in refused.stderr
    assert kinds(sp, cid) == ["turn", "handoff_taken"]
    assert state(sp, cid)["staff"] == "Ann"


def test_anonymous_callers_cannot_take_over_post_or_snoop(space_factory):
    sp = space_factory(env=ENV)
    cid, other = "conv-private", "conv-other"
    chat(sp, cid, "hello")
    for token in (None, "wrong-token"):
        assert staff(sp, "take", token=token, conversation_id=cid, staff="Mallory").status_code == 403
        assert staff(sp, "say", token=token, conversation_id=cid, staff="Mallory", text="hi").status_code == 403
        assert staff(sp, "handback", token=token, conversation_id=cid, staff="Mallory").status_code == 403
        assert httpx.get(f"{sp.url}/handoff/state", params={"conversation_id": cid},
                         headers={"X-Chat-Operator-Token": token} if token else {}).status_code == 403
    assert kinds(sp, cid) == ["turn"]
    # Posting as staff through /chat is refused as well (a staff source needs the token).
    with pytest.raises(Exception):
        Client(sp.url, verbose=False).predict(message={"text": "I am staff", "files": []}, conversation_id=cid,
                                              source="operator", api_name="/chat")
    # The channel needs one valid conversation id: no id, no wildcard, no pattern.
    for params in ({}, {"conversation_id": "*"}, {"conversation_id": ""}, {"conversation_id": "a b"},
                   {"conversation_id": "../x"}):
        assert httpx.get(f"{sp.url}/handoff/events", params=params, timeout=5).status_code == 400
        assert httpx.get(f"{sp.url}/handoff/poll", params=params, timeout=5).status_code == 400
    # A channel shows its own conversation's events only.
    chat(sp, other, "hello")
    assert staff(sp, "take", conversation_id=cid, staff="Ann").status_code == 200
    assert staff(sp, "say", conversation_id=cid, staff="Ann", text="secret for cid").status_code == 200
    mine = httpx.get(f"{sp.url}/handoff/poll", params={"conversation_id": cid}).json()["events"]
    theirs = httpx.get(f"{sp.url}/handoff/poll", params={"conversation_id": other}).json()["events"]
    assert [e["text"] for e in mine if e["kind"] == "staff_message"] == ["secret for cid"]
    assert theirs == []
    # A staff name is checked too.
    assert staff(sp, "take", conversation_id=other, staff="<script>").status_code == 400


def test_one_client_cannot_hold_every_channel(space_factory):
    sp = space_factory(env={**ENV, "CHAT_CLIENT_CONCURRENCY": "2"})
    first, second = SSE(sp.url, "conv-c1"), SSE(sp.url, "conv-c2")
    try:
        wait_for(lambda: first.status == 200 and second.status == 200, what="two channels")
        assert httpx.get(f"{sp.url}/handoff/events", params={"conversation_id": "conv-c3"},
                         timeout=5).status_code == 429
    finally:
        first.close()
        second.close()
    # A closed channel frees its place (the server notices within its next tick).
    def third_opens():
        with httpx.stream("GET", f"{sp.url}/handoff/events", params={"conversation_id": "conv-c3"},
                          timeout=5) as res:
            return res.status_code == 200
    # Closing a reader thread's stream happens on its next event; end them by taking over.
    for cid in ("conv-c1", "conv-c2"):
        staff(sp, "take", conversation_id=cid, staff="Ann")
    wait_for(third_opens, what="a freed channel")


def test_request_times_out_with_the_fallback(space_factory):
    sp = space_factory(env={**ENV, "CHAT_HANDOFF_TIMEOUT": "1.5"})
    cid = "conv-timeout"
    chat(sp, cid, "hello")  # only a conversation that has chatted may ask for a person
    channel = SSE(sp.url, cid)
    try:
        res = httpx.post(f"{sp.url}/handoff/request", json={"conversation_id": cid}, timeout=10)
        assert res.status_code == 200 and res.json()["status"] == "waiting"
        wait_for(lambda: "handoff_timeout" in channel.kinds(), what="the timeout on the channel")
        assert channel.kinds() == ["handoff_requested", "handoff_timeout"]
        assert channel.events[0]["text"] == NOTICE
        assert channel.events[1]["text"] == FALLBACK and channel.events[1]["status"] == "bot"
    finally:
        channel.close()
    assert state(sp, cid)["status"] == "bot"
    assert chat(sp, cid, "still there?").startswith("You said: still there?")  # the bot carries on
    assert kinds(sp, cid) == ["turn", "handoff_requested", "handoff_timeout", "turn"]


def test_takeover_survives_a_restart(space_factory, tmp_path):
    log = tmp_path / "restart" / "chat_logs.jsonl"
    sp = space_factory(log_path=log, env=ENV)
    cid = "conv-restart"
    chat(sp, cid, "hello")
    assert staff(sp, "take", conversation_id=cid, staff="Ann").status_code == 200
    sp.stop()
    sp2 = space_factory(log_path=log, env=ENV)
    assert state(sp2, cid)["staff"] == "Ann"
    assert chat(sp2, cid, "anyone?") == ""  # still with Ann: no bot answer
    assert staff(sp2, "take", conversation_id=cid, staff="Bob").status_code == 409
    assert staff(sp2, "handback", conversation_id=cid, staff="Ann").status_code == 200
    assert chat(sp2, cid, "ok") == "You said: ok (message 3 in this conversation)"


def test_replicas_share_the_takeover_and_the_channel(space_factory, tmp_path):
    log = tmp_path / "shared" / "chat_logs.jsonl"
    a = space_factory(log_path=log, env=ENV, args=["--replica", "a"])
    b = space_factory(log_path=log, env=ENV, args=["--replica", "b"])
    cid = "conv-replicas"
    assert chat(a, cid, "hello") == "You said: hello"
    channel = SSE(a.url, cid)  # the visitor's channel is on replica A
    try:
        wait_for(lambda: channel.status == 200, what="the channel to open")
        assert staff(b, "take", conversation_id=cid, staff="Ann").status_code == 200
        assert staff(b, "say", conversation_id=cid, staff="Ann", text="Hello from replica B").status_code == 200
        wait_for(lambda: "staff_message" in channel.kinds(), what="B's staff message on A's channel")
        assert channel.kinds() == ["handoff_taken", "staff_message"]
        assert channel.events[1]["text"] == "Hello from replica B" and channel.events[1]["staff"] == "Ann"
    finally:
        channel.close()
    # A knows B's staff member holds it: no bot answer on A, a second staff member refused on A.
    assert chat(a, cid, "hi Ann") == ""
    res = staff(a, "take", conversation_id=cid, staff="Bob")
    assert res.status_code == 409 and res.json()["held_by"] == "Ann"
    assert staff(a, "handback", conversation_id=cid, staff="Ann").status_code == 200
    assert chat(b, cid, "bye") == "You said: bye (message 3 in this conversation)"


def test_event_lines_and_old_shapes_load_together(tmp_path):
    from chatcore.log import records
    from chatcore.store import load_log

    log = tmp_path / "mixed.jsonl"
    lines = [
        {"timestamp": "2026-01-01T10:00:00", "conversation_id": "old", "user_text": "hi",
         "response": ["hello"], "history": []},
        records.make_record(conversation_id="new", turn=0, user_text="a", response="b", latency_ms=1,
                            source="widget", backend="echo"),
        records.make_event(conversation_id="new", kind="handoff_taken", at_turn=1, staff="Ann"),
        records.make_event(conversation_id="new", kind="staff_message", at_turn=1, staff="Ann", text="hi"),
        records.make_event(conversation_id="old", kind="visitor_message", at_turn=1, text="x"),
    ]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    frame, stats = load_log(log)
    assert sorted(frame["conversation_id"]) == ["new", "old"]  # one turn each; events are not turns
    assert stats["bad"]["event"] == 3
    # A block of many lines takes the store's vectorised path: event lines are still not turns.
    many = tmp_path / "many.jsonl"
    bulk = []
    for i in range(200):
        bulk.append(records.make_record(conversation_id=f"c{i}", turn=0, user_text="a", response="b",
                                        latency_ms=1, source="widget", backend="echo"))
        bulk.append(records.make_event(conversation_id=f"c{i}", kind="staff_message", at_turn=1, staff="Ann",
                                       text="hi"))
    many.write_text("".join(json.dumps(x) + "\n" for x in bulk))
    frame, stats = load_log(many, cache_dir=tmp_path / "cache")
    assert len(frame) == 200 and stats["bad"]["event"] == 200
    with pytest.raises(records.BadRecord) as exc:
        records.normalise(lines[2])
    assert exc.value.reason == "event"
    with pytest.raises(ValueError):
        records.make_event(conversation_id="x", kind="nonsense", at_turn=0)


# ------------------------------------------------------------------------- the Live page


def test_live_page_lists_conversations_now_and_takes_over(space_factory, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import apptest_knows_the_entry_navigates

    sp = space_factory(env=ENV)
    calm, asking = "conv-calm", "conv-asking"
    chat(sp, calm, "just browsing")
    chat(sp, asking, "hello")
    assert httpx.post(f"{sp.url}/handoff/request", json={"conversation_id": asking}).status_code == 200
    chat(sp, calm, "still browsing")  # the latest activity, but not waiting
    assert httpx.post(f"{sp.url}/feedback", json={"conversation_id": calm, "turn": 0, "rating": "down"}
                      ).status_code == 200
    monkeypatch.setenv("CHAT_LOG_PATH", str(sp.log_path))
    monkeypatch.setenv("CHAT_SPACE_URL", sp.url)
    monkeypatch.setenv("CHAT_TIMEZONE", "UTC")
    monkeypatch.delenv("CHAT_OPERATOR_TOKEN", raising=False)
    apptest_knows_the_entry_navigates(monkeypatch)
    import streamlit as st

    try:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=30).run()
        at.switch_page("pages/live.py").run()
        assert not at.exception, at.exception
        inbox = lambda: next(d.value for d in at.dataframe if "status" in d.value.columns)  # noqa: E731
        now = inbox()  # (the stream of turns is the other table)
        assert list(now["status"]) == ["waiting for a person", "bot"]  # waiting ones on top
        assert list(now["thumbs_down"]) == [0, 1]
        assert now["last_message"][1] == "still browsing"  # what the visitor said last, not the bot
        at.selectbox(key="now_open").select(asking).run()
        at.text_input(key="staff_name").input("Ann").run()
        next(b for b in at.button if b.key == "now_take").click().run()
        assert not at.exception, at.exception
        assert state(sp, asking)["staff"] == "Ann"
        at.run()
        at.chat_input(key="staff_text").set_value("Hello from the dashboard").run()
        assert [e["text"] for e in state(sp, asking)["events"] if e["kind"] == "staff_message"] == \
            ["Hello from the dashboard"]
        at.run()
        texts = [t.value for t in at.text]
        assert "Hello from the dashboard" in texts and "hello" in texts  # the transcript, staff message included
        assert any("Ann" in c.value for c in at.caption)
        assert inbox()["status"][0] == "with Ann"
        next(b for b in at.button if b.key == "now_back").click().run()
        assert state(sp, asking)["status"] == "bot"
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()


# ---------------------------------------------------------------------------- the widget


playwright_sync = pytest.importorskip("playwright.sync_api")
from test_widget import host  # noqa: E402,F401  (the widget's host page, one fixture)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _page(browser, host, sp, **attrs):
    from urllib.parse import urlencode

    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    page.goto(f"http://localhost:{host}/?" + urlencode({"space": sp.url, **attrs}))
    page.locator(f"{W} .launcher").click()
    page.locator(f"{W} textarea").wait_for()
    return ctx, page


def _send(page, text):
    box = page.locator(f"{W} textarea")
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(
        "() => { const r = document.querySelector('#chat-operator-widget').shadowRoot;"
        " return !r.querySelector('.send').disabled && !r.querySelector('.msg.pending'); }")


@pytest.mark.parametrize("poll", [False, True], ids=["sse", "polling"])
def test_widget_asks_for_a_person_and_sees_staff(space_factory, host, browser, poll):
    sp = space_factory(env={**ENV, "CHAT_STAFF_DISPLAY_NAME": "Support team"})
    ctx, page = _page(browser, host, sp, handoff="on", title="Help")
    try:
        if poll:
            page.evaluate("window.__chatOperatorPoll = true")
        _send(page, "hello")
        assert page.locator(f"{REPLY} .text").all_text_contents() == ["You said: hello"]
        cid = page.evaluate("window.ChatOperatorWidget.conversationId")
        page.locator(f"{W} .handoff").click()
        page.locator(f"{W} .msg.note", has_text=NOTICE).wait_for()
        assert state(sp, cid)["status"] == "waiting"
        assert page.locator(f"{W} .handoff").is_hidden()

        assert staff(sp, "take", conversation_id=cid, staff="Ann").status_code == 200
        page.locator(f"{W} .msg.note", has_text="Support team joined the chat.").wait_for()
        assert staff(sp, "say", conversation_id=cid, staff="Ann", text="<b>Hi</b>, how can I help?").status_code == 200
        bubble = page.locator(f"{W} .msg.staff")
        bubble.wait_for()
        assert bubble.locator(".text").text_content() == "<b>Hi</b>, how can I help?"  # text, not markup
        assert bubble.locator(".who").text_content() == "Support team"  # the configured display name
        assert page.evaluate("window.ChatOperatorWidget.withStaff") is True

        _send(page, "my parcel is late")
        assert page.locator(REPLY).count() == 1  # no bot answer while Ann has it
        assert page.locator(f"{W} .msg.user").all_text_contents()[-1].endswith("my parcel is late")

        assert staff(sp, "handback", conversation_id=cid, staff="Ann").status_code == 200
        page.locator(f"{W} .msg.note", has_text="left the chat").wait_for()
        _send(page, "ok")
        assert page.locator(f"{REPLY} .text").all_text_contents()[-1] == \
            "You said: ok (message 3 in this conversation)"
        assert kinds(sp, cid) == ["turn", "handoff_requested", "handoff_taken", "staff_message",
                                  "visitor_message", "handoff_returned", "turn"]
        # A reload shows the staff message from the stored transcript, once.
        page.reload()
        page.locator(f"{W} .msg.staff").first.wait_for()
        page.wait_for_timeout(1500)  # the channel replays every event on connect; none may repeat
        assert page.locator(f"{W} .msg.staff").count() == 1
        assert page.locator(f"{W} .msg.note", has_text="joined the chat").count() == 1
    finally:
        ctx.close()


@pytest.mark.parametrize("bot_waits", [False, True], ids=["bot-answers", "bot-waits"])
def test_widget_notice_is_not_rated_and_says_what_happens_meanwhile(space_factory, host, browser, bot_waits):
    sp = space_factory(env={**ENV, "CHAT_HANDOFF_BOT_WHILE_WAITING": "off" if bot_waits else "on"})
    ctx, page = _page(browser, host, sp, handoff="on")
    try:
        _send(page, "hello")
        _send(page, "can I talk to a person?")
        meanwhile = "your messages wait for them" if bot_waits else "you can keep chatting here"
        page.locator(f"{W} .msg.note", has_text=meanwhile).wait_for()
        replies = page.locator(REPLY)
        assert replies.locator(".text").all_text_contents() == ["You said: hello", NOTICE]
        assert replies.nth(0).locator(".thumb").count() == 2
        assert replies.nth(1).locator(".thumb").count() == 0  # the notice is not the bot's answer
        _send(page, "are you there?")
        if bot_waits:
            assert page.locator(REPLY).count() == 2  # no bot answer while waiting
        else:
            page.locator(REPLY).nth(2).locator(".thumb").first.wait_for()  # a real answer is rated
        page.reload()  # the stored transcript keeps the notice unrated
        page.locator(f"{W} .msg.assistant").first.wait_for(state="attached")
        if not page.locator(f"{W} textarea").is_visible():
            page.locator(f"{W} .launcher").click()
        page.locator(REPLY).nth(1).wait_for()
        assert page.locator(REPLY).nth(1).locator(".thumb").count() == 0
        assert page.locator(REPLY).nth(0).locator(".thumb").count() == 2
    finally:
        ctx.close()
