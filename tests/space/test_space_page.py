"""The Space's own Gradio page in headless Chromium: Retry, Undo and Clear agree with the log."""
from __future__ import annotations

import time

from test_widget import browser, context  # noqa: F401  (fixtures are used by name)

BOTS = "[role=log] [data-testid=bot]"
USERS = "[role=log] [data-testid=user]"


def send(page, text: str, reply: str) -> None:
    box = page.locator("textarea").first
    box.wait_for()
    box.fill(text)
    box.press("Enter")
    wait_reply(page, reply)
    settled(page)


def settled(page) -> None:
    """The page's event chain after a reply has finished: the message box is enabled again."""
    page.wait_for_function("() => { const t = document.querySelector('textarea');"
                           " return t && !t.disabled && !document.querySelector('button.stop-button'); }")


def wait_reply(page, reply: str, count: int | None = None) -> None:
    """Until the last reply on the page is exactly ``reply`` (streaming has finished)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "([s, n]) => { const b = [...document.querySelectorAll('[role=log] [data-testid=bot]')];"
            " return b.length && b[b.length - 1].textContent.trim() === s && (n === null || b.length === n); }",
            arg=[reply, count], timeout=30_000)
    except PlaywrightTimeout:
        raise AssertionError(f"waited for {reply!r} (count {count}); the page shows {bot_texts(page)}") from None


def bot_texts(page) -> list[str]:
    return [t.strip() for t in page.locator(BOTS).all_text_contents()]


def click_last(page, label: str) -> None:
    page.locator(f"[role=log] button[aria-label={label}]").last.click()


def lines(space, cid: str | None = None, timeout: float = 10.0, n: int | None = None) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in space.records() if cid is None or r["conversation_id"] == cid]
        if n is None or len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def new_records(space, before: int, n: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        recs = space.records()[before:]
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def test_retry_undo_and_clear_on_the_spaces_page_match_the_log(space, context):
    page = context.new_page()
    page.goto(space.url + "/")
    start = len(space.records())

    send(page, "one", "You said: one")
    send(page, "two", "You said: two (message 2 in this conversation)")
    recs = new_records(space, start, 2)
    cid = recs[0]["conversation_id"]
    assert [(r["conversation_id"], r["turn"], r["user_text"]) for r in recs] == [(cid, 0, "one"), (cid, 1, "two")]

    # Retry answers turn 1 again: same id, same turn, marked as a retry of it.
    click_last(page, "Retry")
    recs = new_records(space, start, 3)
    wait_reply(page, "You said: two (message 2 in this conversation)", count=2)
    settled(page)
    assert (recs[2]["conversation_id"], recs[2]["turn"], recs[2]["user_text"], recs[2].get("retry_of")) == \
        (cid, 1, "two", 1)

    # Undo drops that exchange from the page and from the context; the next message takes its place.
    click_last(page, "Undo")
    page.wait_for_function("() => document.querySelectorAll('[role=log] [data-testid=bot]').length === 1")
    send(page, "three", "You said: three (message 2 in this conversation)")
    assert bot_texts(page) == ["You said: one", "You said: three (message 2 in this conversation)"]
    recs = new_records(space, start, 4)
    assert (recs[3]["conversation_id"], recs[3]["turn"], recs[3]["user_text"], recs[3].get("retry_of")) == \
        (cid, 1, "three", 1)
    send(page, "four", "You said: four (message 3 in this conversation)")
    assert bot_texts(page)[-1] == "You said: four (message 3 in this conversation)"
    recs = new_records(space, start, 5)
    assert (recs[4]["conversation_id"], recs[4]["turn"], recs[4].get("retry_of")) == (cid, 2, None)

    # Clear starts a new conversation; Retry on its very first reply keeps that conversation.
    page.locator("button[aria-label=Clear]").first.click()
    page.wait_for_function("() => document.querySelectorAll('[role=log] [data-testid=bot]').length === 0")
    send(page, "fresh", "You said: fresh")
    recs = new_records(space, start, 6)
    fresh = recs[5]["conversation_id"]
    assert fresh != cid and recs[5]["turn"] == 0
    click_last(page, "Retry")
    recs = new_records(space, start, 7)
    wait_reply(page, "You said: fresh", count=1)
    settled(page)
    assert (recs[6]["conversation_id"], recs[6]["turn"], recs[6].get("retry_of")) == (fresh, 0, 0)
    send(page, "after retry", "You said: after retry (message 2 in this conversation)")
    assert bot_texts(page) == ["You said: fresh", "You said: after retry (message 2 in this conversation)"]
    recs = new_records(space, start, 8)
    assert (recs[7]["conversation_id"], recs[7]["turn"]) == (fresh, 1)
    # No orphan: every line of this page is in one of its two conversations.
    assert {r["conversation_id"] for r in space.records()[start:]} == {cid, fresh}
