"""The website widget in a real headless Chromium, on a host page served from another origin.

The Space runs on ``http://127.0.0.1:<port>``; the host page (a tiny http.server in a
thread) is opened as ``http://localhost:<other port>`` — a different origin, allowed by
the Space's default CORS setting — or as ``http://shop.test:<other port>`` (mapped to
127.0.0.1 inside Chromium only), an origin the Space refuses unless configured.
"""
from __future__ import annotations

import html
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from conftest import free_port

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP shop.test 127.0.0.1"]
W = "#chat-operator-widget"  # Playwright's CSS locators pierce the (open) shadow root
REPLY = f"{W} .msg.assistant:not(.greeting):not(.pending)"


# --------------------------------------------------------------------- host page


class _HostPage(BaseHTTPRequestHandler):
    """``/?space=URL&attr=value…``: a small page carrying the widget's script tag."""

    def do_GET(self):  # noqa: N802 (http.server API)
        query = {k: v[-1] for k, v in parse_qs(urlparse(self.path).query).items()}
        space = query.pop("space", "")
        attrs = " ".join(f'data-{html.escape(k)}="{html.escape(v)}"' for k, v in query.items())
        body = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<title>Host</title><style>body{font:20px serif;color:red} div{display:block}"
            " button{all:unset;color:red}</style></head>"
            "<body><h1>A customer's website</h1><button id=host-button>host button</button>"
            f'<script src="{html.escape(space)}/widget.js" {attrs} defer></script>'
            "</body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def host():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _HostPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


def page_url(host_port: int, space_url: str, hostname: str = "localhost", **attrs) -> str:
    from urllib.parse import urlencode

    return f"http://{hostname}:{host_port}/?" + urlencode({"space": space_url, **attrs})


def open_widget(page):
    page.locator(f"{W} .launcher").wait_for()
    if page.locator(f"{W} .panel").is_hidden():
        page.locator(f"{W} .launcher").click()
    page.locator(f"{W} textarea").wait_for()


def idle(page):
    page.wait_for_function(
        "() => { const r = document.querySelector('#chat-operator-widget').shadowRoot;"
        " return !r.querySelector('.send').disabled && !r.querySelector('.msg.pending'); }")


def send(page, text: str, key: str = "Enter") -> None:
    """Type a message, send it with Enter and wait until the reply is complete (or failed)."""
    before = page.locator(REPLY).count()
    box = page.locator(f"{W} textarea")
    box.fill(text)
    box.press(key)
    page.wait_for_function(
        "n => { const r = document.querySelector('#chat-operator-widget').shadowRoot;"
        " return r.querySelectorAll('.msg.assistant:not(.greeting):not(.pending)').length > n"
        " || !r.querySelector('.error').hidden; }", arg=before)
    idle(page)


def replies(page) -> list[str]:
    return [t for t in page.locator(f"{REPLY} .text").all_text_contents()]


def echo(text: str, n: int = 1) -> str:
    """The echo responder's reply to the n-th message of a conversation it remembers."""
    return f"You said: {text}" + (f" (message {n} in this conversation)" if n > 1 else "")


def widget_records(space, cid: str) -> list[dict]:
    return [r for r in space.records() if r["conversation_id"] == cid]


# ------------------------------------------------------------------------ routes


def test_widget_js_and_demo_routes(space):
    r = httpx.get(space.url + "/widget.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert "max-age=" in r.headers["cache-control"]
    assert r.headers["x-content-type-options"] == "nosniff"
    etag = r.headers["etag"]
    again = httpx.get(space.url + "/widget.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert "gradio_api/call/chat" in r.text and "innerHTML = TEMPLATE" in r.text

    demo = httpx.get(space.url + "/widget/demo")
    assert demo.status_code == 200 and demo.headers["content-type"].startswith("text/html")
    assert '<script src="/widget.js"' in demo.text and "data-greeting=" in demo.text

    # Gradio is still mounted at "/" and /chat still answers the documented contract.
    assert httpx.get(space.url + "/healthz").json()["status"] == "ok"


def test_demo_page_in_the_browser(space, context):
    """Same-origin demo page; the Space URL defaults to where widget.js came from."""
    page = context.new_page()
    page.goto(space.url + "/widget/demo")
    open_widget(page)
    assert page.evaluate("ChatOperatorWidget.space") == space.url
    assert "How can I help" in page.locator(f"{W} .msg.greeting .text").text_content()
    send(page, "Do you ship to Canada?")
    assert replies(page) == [echo("Do you ship to Canada?")]


# ------------------------------------------------------------- conversation flow


def test_reload_continues_the_same_conversation(space, host, context):
    page = context.new_page()
    page.goto(page_url(host, space.url, title="Help", greeting="Hi! How can I help?"))
    open_widget(page)
    assert page.locator(f"{W} .msg.greeting .text").text_content() == "Hi! How can I help?"
    assert page.locator(f"{W} h2").text_content() == "Help"

    send(page, "first question")
    send(page, "second question")
    assert replies(page) == [echo("first question", 1), echo("second question", 2)]
    cid = page.evaluate("ChatOperatorWidget.conversationId")

    page.reload()
    open_widget(page)
    # The visible transcript survives the reload …
    assert page.locator(f"{W} .msg.user .text").all_text_contents() == ["first question", "second question"]
    assert page.evaluate("ChatOperatorWidget.conversationId") == cid
    # … and the third message continues the same conversation (sent with the button this time).
    page.locator(f"{W} textarea").fill("third question")
    page.locator(f"{W} .send").click()
    page.locator(REPLY).nth(2).wait_for()
    idle(page)
    assert replies(page)[-1] == echo("third question", 3)  # the Space kept the context

    recs = widget_records(space, cid)
    assert [r["turn"] for r in recs] == [0, 1, 2]
    assert {r["source"] for r in recs} == {"widget"}
    assert [r["user_text"] for r in recs] == ["first question", "second question", "third question"]
    assert all(r["error"] is None for r in recs)

    # "New conversation" starts another id, an empty transcript and turn 0 again.
    page.locator(f"{W} [data-act=new]").click()
    assert page.locator(f"{W} .msg.user").count() == 0
    new_cid = page.evaluate("ChatOperatorWidget.conversationId")
    assert new_cid != cid
    send(page, "a fresh start")
    assert [(r["turn"], r["source"]) for r in widget_records(space, new_cid)] == [(0, "widget")]
    page.reload()
    open_widget(page)
    assert page.locator(f"{W} .msg.user .text").all_text_contents() == ["a fresh start"]


def test_other_tabs_follow_the_conversation(space, host, context):
    first, second = context.new_page(), context.new_page()
    for page in (first, second):
        page.goto(page_url(host, space.url))
        open_widget(page)
    send(first, "from tab one")
    second.locator(f"{W} .msg.user").first.wait_for()
    assert second.locator(f"{W} .msg.user .text").all_text_contents() == ["from tab one"]
    assert second.evaluate("ChatOperatorWidget.conversationId") == \
        first.evaluate("ChatOperatorWidget.conversationId")


def test_reply_streams_in(space_factory, host, context):
    """The bubble is updated while the reply is generated, not only at the end."""
    space = space_factory(env={"CHAT_ECHO_DELAY": "0.1"})  # one word every 0.1 s
    page = context.new_page()
    page.goto(page_url(host, space.url))
    open_widget(page)
    page.evaluate("""() => {
        window.__seen = new Set();
        const root = document.querySelector('#chat-operator-widget').shadowRoot;
        new MutationObserver(() => root.querySelectorAll('.msg.assistant .text')
            .forEach(el => window.__seen.add(el.textContent)))
          .observe(root, {subtree: true, childList: true, characterData: true});
    }""")
    send(page, "one two three four five six")
    seen = page.evaluate("[...window.__seen]")
    assert "You said: one two three four five six" in seen
    assert "You said: one two" in seen and len(seen) >= 5, seen  # partial texts were shown


XSS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '"><svg onload=alert(3)>',
    "<iframe srcdoc=\"<script>parent.alert(4)</script>\"></iframe>",
]


def test_messages_and_replies_render_as_text(space, host, context):
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(page_url(host, space.url, greeting="<img src=x onerror=alert(9)>"))
    open_widget(page)
    for payload in XSS:
        send(page, payload)

    def check():
        users = page.locator(f"{W} .msg.user .text").all_text_contents()
        assert users == XSS
        assert replies(page) == [echo(p, i + 1) for i, p in enumerate(XSS)]  # the echo repeats it
        assert page.locator(f"{W} .msg.greeting .text").text_content() == "<img src=x onerror=alert(9)>"
        counts = page.evaluate("""() => {
            const root = document.querySelector('#chat-operator-widget').shadowRoot;
            const q = s => document.querySelectorAll(s).length + root.querySelectorAll(s).length;
            return {img: q('img'), script: q('.log script'), iframe: q('iframe'),
                    handlers: q('[onerror],[onload]')};
        }""")
        assert counts == {"img": 0, "script": 0, "iframe": 0, "handlers": 0}

    check()
    page.reload()  # the stored transcript is rendered as text too
    open_widget(page)
    check()
    page.wait_for_timeout(300)
    assert dialogs == []


# ---------------------------------------------------------------------- failures


def test_space_down_then_retry(space_factory, host, context, tmp_path):
    log_path = tmp_path / "down" / "chat_logs.jsonl"
    sp = space_factory(log_path=log_path)
    page = context.new_page()
    page.goto(page_url(host, sp.url))
    open_widget(page)
    send(page, "before the outage")
    cid = page.evaluate("ChatOperatorWidget.conversationId")

    sp.stop()
    send(page, "are you there?")
    error = page.locator(f"{W} .error")
    assert error.is_visible()
    assert "couldn't reach the assistant" in error.text_content()
    assert page.locator(f"{W} textarea").input_value() == "are you there?"
    assert page.locator(f"{W} .msg.user .text").all_text_contents() == ["before the outage"]
    assert page.locator(f"{W} .retry").is_visible()

    space_factory(log_path=log_path, port=sp.port)  # same port, same log
    page.locator(f"{W} .retry").click()
    page.locator(REPLY).nth(1).wait_for()
    idle(page)
    assert replies(page)[-1].startswith("You said: are you there?")
    assert error.is_hidden()
    assert page.locator(f"{W} textarea").input_value() == ""
    recs = [r for r in json.loads("[" + ",".join(log_path.read_text().splitlines()) + "]")
            if r["conversation_id"] == cid]
    assert [(r["turn"], r["user_text"], r["source"]) for r in recs] == [
        (0, "before the outage", "widget"), (1, "are you there?", "widget")]


def test_space_error_text_is_shown_and_input_kept(space, host, context):
    page = context.new_page()
    page.goto(page_url(host, space.url))
    open_widget(page)
    too_long = "x" * (33 * 1024)
    send(page, too_long)
    error = page.locator(f"{W} .error-text")
    assert "Message is too long" in error.text_content()
    assert page.locator(f"{W} textarea").input_value() == too_long
    assert page.locator(f"{W} .msg.user").count() == 0
    # Fixing the text and sending again clears the error.
    send(page, "short now")
    assert page.locator(f"{W} .error").is_hidden()
    assert replies(page) == ["You said: short now"]


def test_slow_space_times_out_with_a_friendly_line(space_factory, host, context):
    sp = space_factory(env={"CHAT_ECHO_DELAY": "2"})  # two seconds before each word
    page = context.new_page()
    page.goto(page_url(host, sp.url, timeout="1"))
    open_widget(page)
    send(page, "slow one")
    assert "taking too long" in page.locator(f"{W} .error-text").text_content()
    assert page.locator(f"{W} textarea").input_value() == "slow one"
    assert page.locator(f"{W} .retry").is_visible()


# -------------------------------------------------------------------------- CORS


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(url + "/gradio_api/call/chat", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})


def test_cors_default_allows_localhost_only(space):
    ok = _preflight(space.url, "http://localhost:5173")
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "content-type" in ok.headers["access-control-allow-headers"].lower()

    bad = _preflight(space.url, "https://evil.example")
    assert bad.status_code == 400
    assert "access-control-allow-origin" not in bad.headers
    post = httpx.post(space.url + "/gradio_api/call/chat", headers={"Origin": "https://evil.example"},
                      json={"data": [{"text": "hi", "files": []}, "cors-check", "widget"]})
    assert "access-control-allow-origin" not in post.headers  # a browser may not read the answer
    js = httpx.get(space.url + "/widget.js", headers={"Origin": "https://evil.example"})
    assert js.status_code == 200  # a <script> tag needs no CORS


def test_cors_star_allows_any_origin(space_factory):
    sp = space_factory(env={"CHAT_ALLOWED_ORIGINS": "*"})
    r = _preflight(sp.url, "https://anyone.example")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] in ("*", "https://anyone.example")


def test_cors_in_the_browser_refused_then_configured(space_factory, host, context, tmp_path):
    # Default Space: a page on http://shop.test:<port> is refused by the browser.
    sp = space_factory(log_path=tmp_path / "a" / "chat_logs.jsonl")
    page = context.new_page()
    page.goto(page_url(host, sp.url, hostname="shop.test"))
    assert page.evaluate("location.origin") == f"http://shop.test:{host}"
    open_widget(page)
    send(page, "hello from the shop")
    assert page.locator(f"{W} .error").is_visible()
    assert page.locator(f"{W} textarea").input_value() == "hello from the shop"
    assert sp.records() == []  # the preflight failed: the POST was never sent
    sp.stop()

    # Configured with --allow-origin: the same page works. (An insecure origin has no
    # crypto.randomUUID, so this also covers the getRandomValues fallback.)
    origin = f"http://shop.test:{host}"
    sp2 = space_factory(log_path=tmp_path / "b" / "chat_logs.jsonl", args=["--allow-origin", origin])
    assert _preflight(sp2.url, origin).headers.get("access-control-allow-origin") == origin
    assert "access-control-allow-origin" not in _preflight(sp2.url, "https://evil.example").headers
    page2 = context.new_page()
    page2.goto(page_url(host, sp2.url, hostname="shop.test"))
    open_widget(page2)
    assert page2.evaluate("typeof crypto.randomUUID") == "undefined"
    send(page2, "hello again")
    assert replies(page2) == ["You said: hello again"]
    cid = page2.evaluate("ChatOperatorWidget.conversationId")
    assert len(cid) == 36 and cid[14] == "4"
    assert [(r["conversation_id"], r["source"]) for r in sp2.records()] == [(cid, "widget")]


# ------------------------------------------------------------ keyboard & layout


def test_keyboard(space, host, context):
    page = context.new_page()
    page.goto(page_url(host, space.url, title="Help"))
    launcher = page.locator(f"{W} .launcher")
    launcher.wait_for()
    assert launcher.get_attribute("aria-expanded") == "false"
    assert "Help" in launcher.get_attribute("aria-label")
    launcher.focus()
    page.keyboard.press("Enter")  # the launcher is a real button
    page.locator(f"{W} .panel").wait_for()
    assert launcher.get_attribute("aria-expanded") == "true"
    active = "() => document.querySelector('#chat-operator-widget').shadowRoot.activeElement?.className"
    assert page.evaluate("() => document.activeElement.id") == "chat-operator-widget"
    assert page.evaluate("() => document.querySelector('#chat-operator-widget').shadowRoot"
                         ".activeElement.tagName") == "TEXTAREA"  # focus moved to the input

    log = page.locator(f"{W} .log")
    assert log.get_attribute("aria-live") == "polite" and log.get_attribute("role") == "log"
    assert page.locator(f"{W} .panel").get_attribute("role") == "dialog"

    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert page.locator(f"{W} textarea").input_value() == "line one\nline two"
    assert page.locator(f"{W} .msg.user").count() == 0  # Shift+Enter did not send
    page.keyboard.press("Enter")
    page.locator(REPLY).first.wait_for()
    idle(page)
    assert page.locator(f"{W} .msg.user .text").all_text_contents() == ["line one\nline two"]
    assert replies(page) == ["You said: line one\nline two"]

    page.keyboard.press("Escape")
    assert page.locator(f"{W} .panel").is_hidden()
    assert page.evaluate(active) == "launcher"  # focus back on the launcher
    assert launcher.get_attribute("aria-expanded") == "false"


def test_mobile_full_screen_and_options(space, host, browser):
    ctx = browser.new_context(viewport={"width": 375, "height": 700})
    try:
        page = ctx.new_page()
        page.goto(page_url(host, space.url, position="left", color="#0f766e", title="Support"))
        launcher = page.locator(f"{W} .launcher")
        launcher.wait_for()
        box = launcher.bounding_box()
        assert box["x"] < 100  # data-position=left
        assert page.evaluate("getComputedStyle(document.querySelector('#chat-operator-widget')"
                             ".shadowRoot.querySelector('.launcher')).backgroundColor") == "rgb(15, 118, 110)"
        launcher.click()
        panel = page.locator(f"{W} .panel").bounding_box()
        assert (panel["x"], panel["y"], panel["width"], panel["height"]) == (0, 0, 375, 700)
        # The host page's aggressive CSS (serif, red, button{all:unset}) does not leak in.
        send_btn_bg = page.evaluate("getComputedStyle(document.querySelector('#chat-operator-widget')"
                                    ".shadowRoot.querySelector('.send')).backgroundColor")
        assert send_btn_bg == "rgb(15, 118, 110)"
        send(page, "hi from a phone")
        assert replies(page) == ["You said: hi from a phone"]
        page.keyboard.press("Escape")
        assert page.locator(f"{W} .panel").is_hidden() and launcher.is_visible()
    finally:
        ctx.close()


# ------------------------------------------------------------------------ ratings


def _feedback(log_path, cid: str, expected: dict, timeout: float = 10.0) -> dict:
    """``{turn: rating}`` for ``cid`` in feedback.jsonl, polled until it equals ``expected``."""
    import time

    from chatcore.log.annotations import load_feedback

    deadline = time.monotonic() + timeout
    while True:
        fb = load_feedback(log_path)
        got = {int(r.turn): (r.rating, r.source) for r in fb[fb["conversation_id"] == cid].itertuples()}
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_rating_buttons_with_the_keyboard(space, host, context):
    page = context.new_page()
    page.goto(page_url(host, space.url, greeting="Hello!"))
    open_widget(page)
    assert page.locator(f"{W} .thumb").count() == 0  # none on the greeting
    send(page, "rate me")
    cid = page.evaluate("ChatOperatorWidget.conversationId")
    reply = page.locator(REPLY).first
    group = reply.locator(".rate")
    assert group.get_attribute("role") == "group" and group.get_attribute("aria-label") == "Rate this reply"
    up = reply.get_by_role("button", name="Helpful", exact=True)
    down = reply.get_by_role("button", name="Not helpful", exact=True)
    assert (up.get_attribute("aria-pressed"), down.get_attribute("aria-pressed")) == ("false", "false")

    up.focus()
    page.keyboard.press("Space")
    assert _feedback(space.log_path, cid, {0: ("up", "widget")}) == {0: ("up", "widget")}
    assert up.get_attribute("aria-pressed") == "true"
    page.keyboard.press("Tab")  # on to "Not helpful"
    assert page.evaluate("document.querySelector('#chat-operator-widget').shadowRoot"
                         ".activeElement.getAttribute('aria-label')") == "Not helpful"
    page.keyboard.press("Enter")
    assert _feedback(space.log_path, cid, {0: ("down", "widget")}) == {0: ("down", "widget")}
    assert (up.get_attribute("aria-pressed"), down.get_attribute("aria-pressed")) == ("false", "true")
    stored = json.loads(page.evaluate(f"localStorage.getItem('chatop-widget:{space.url}:transcript')"))
    assert stored[-1] == {"role": "assistant", "text": echo("rate me"), "turn": 0, "rating": "down"}


def test_rating_failure_is_a_small_note(space_factory, host, context, tmp_path):
    log_path = tmp_path / "fb" / "chat_logs.jsonl"
    sp = space_factory(log_path=log_path)
    page = context.new_page()
    page.goto(page_url(host, sp.url))
    open_widget(page)
    send(page, "hello")
    cid = page.evaluate("ChatOperatorWidget.conversationId")
    sp.stop()

    # An error line (Space down) gets no thumbs.
    send(page, "anyone?")
    assert page.locator(f"{W} .error").is_visible()
    assert page.locator(f"{W} .error .thumb").count() == 0
    assert page.locator(f"{W} .thumb").count() == 2  # only on the one real reply

    reply = page.locator(REPLY).first
    up = reply.get_by_role("button", name="Helpful", exact=True)
    up.click()
    note = reply.locator(".rate-note")
    page.wait_for_function(
        "() => document.querySelector('#chat-operator-widget').shadowRoot"
        ".querySelector('.rate-note').textContent.length > 0")
    assert note.text_content() == "Rating not sent. Please try again."
    assert note.get_attribute("role") == "status"
    assert up.get_attribute("aria-pressed") == "false"  # not shown as rated when it was not saved
    stored = json.loads(page.evaluate(f"localStorage.getItem('chatop-widget:{sp.url}:transcript')"))
    assert "rating" not in stored[-1]

    # The chat still works once the Space is back, and so does rating.
    space_factory(log_path=log_path, port=sp.port)
    page.locator(f"{W} .retry").click()
    page.locator(REPLY).nth(1).wait_for()
    idle(page)
    up.click()
    assert _feedback(log_path, cid, {0: ("up", "widget")}) == {0: ("up", "widget")}
    assert note.text_content() == "" and up.get_attribute("aria-pressed") == "true"
    page.locator(REPLY).nth(1).get_by_role("button", name="Not helpful", exact=True).click()
    assert _feedback(log_path, cid, {0: ("up", "widget"), 1: ("down", "widget")}) == \
        {0: ("up", "widget"), 1: ("down", "widget")}


def test_turn_index_after_a_timed_out_reply(space_factory, host, context, tmp_path):
    """A reply given up by the widget is still a turn for the Space: later replies keep its numbering."""
    import time

    log_path = tmp_path / "slow" / "chat_logs.jsonl"
    sp = space_factory(log_path=log_path, env={"CHAT_ECHO_DELAY": "1.5"})
    page = context.new_page()
    page.goto(page_url(host, sp.url, timeout="1"))
    open_widget(page)
    send(page, "too slow")
    assert "taking too long" in page.locator(f"{W} .error-text").text_content()
    cid = page.evaluate("ChatOperatorWidget.conversationId")
    deadline = time.monotonic() + 30
    while not sp.records() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [(r["conversation_id"], r["turn"]) for r in sp.records()] == [(cid, 0)]

    page.goto(page_url(host, sp.url, timeout="30"))
    open_widget(page)
    send(page, "patient now")
    assert replies(page)[0].startswith("You said: patient now")  # reply 0 on screen, turn 1 for the Space
    page.locator(REPLY).first.get_by_role("button", name="Helpful", exact=True).click()
    assert _feedback(log_path, cid, {1: ("up", "widget")}) == {1: ("up", "widget")}
    deadline = time.monotonic() + 10
    while len(sp.records()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [(r["turn"], r["user_text"]) for r in sp.records() if r["conversation_id"] == cid] == \
        [(0, "too slow"), (1, "patient now")]
    assert sp.records()[0]["error"] == "cancelled before the reply completed"
