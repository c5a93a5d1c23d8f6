"""Thumbs up/down in real headless Chromium: the website widget (on a host page of another
origin) and the Space's own Gradio chat page, checked in ``annotations/feedback.jsonl``."""
from __future__ import annotations

import time

import pytest

from chatcore.log.annotations import load_feedback

# The widget tests' browser, context and host page (an http.server on another origin).
from test_widget import (  # noqa: F401  (fixtures are used by name)
    REPLY, W, browser, context, echo, host, open_widget, page_url, replies, send,
)


def wait_feedback(log_path, cid: str, expected: dict[int, str], timeout: float = 10.0) -> dict:
    """Poll feedback.jsonl until ``{turn: rating}`` for ``cid`` equals ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        fb = load_feedback(log_path)
        rows = fb[fb["conversation_id"] == cid]
        got = {int(r.turn): r.rating for r in rows.itertuples()}
        if got == expected or time.monotonic() > deadline:
            return {"ratings": got, "sources": set(rows["source"]), "by": set(rows["by"])}
        time.sleep(0.1)


def logged(space, user_text: str, timeout: float = 10.0) -> list[dict]:
    """The Space's log records for ``user_text`` (a turn is written once its reply has finished)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in space.records() if r["user_text"] == user_text]
        if recs or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def pressed(page) -> list[tuple[str | None, str | None]]:
    """(Helpful, Not helpful) aria-pressed of each reply, in order."""
    out = []
    for reply in page.locator(REPLY).all():
        out.append((reply.locator(".thumb[data-rating=up]").get_attribute("aria-pressed"),
                    reply.locator(".thumb[data-rating=down]").get_attribute("aria-pressed")))
    return out


# ---------------------------------------------------------------------------- widget


def test_widget_ratings_survive_a_reload(space, host, context):
    page = context.new_page()
    page.goto(page_url(host, space.url, greeting="Hi! How can I help?"))
    open_widget(page)
    send(page, "first question")
    send(page, "second question")
    assert replies(page) == [echo("first question", 1), echo("second question", 2)]
    cid = page.evaluate("ChatOperatorWidget.conversationId")
    assert [r["turn"] for r in logged(space, "first question") + logged(space, "second question")
            if r["conversation_id"] == cid] == [0, 1]

    second = page.locator(REPLY).nth(1)
    second.get_by_role("button", name="Not helpful", exact=True).click()
    assert wait_feedback(space.log_path, cid, {1: "down"})["ratings"] == {1: "down"}
    assert pressed(page) == [("false", "false"), ("false", "true")]
    second.get_by_role("button", name="Helpful", exact=True).click()  # a changed mind
    assert wait_feedback(space.log_path, cid, {1: "up"})["ratings"] == {1: "up"}
    assert pressed(page) == [("false", "false"), ("true", "false")]

    page.reload()
    open_widget(page)
    assert pressed(page) == [("false", "false"), ("true", "false")]  # kept in the transcript
    page.locator(REPLY).nth(0).get_by_role("button", name="Not helpful", exact=True).click()
    got = wait_feedback(space.log_path, cid, {0: "down", 1: "up"})
    assert got == {"ratings": {0: "down", 1: "up"}, "sources": {"widget"}, "by": {"visitor"}}
    assert pressed(page) == [("false", "true"), ("true", "false")]

    # Two lines for turn 1 in the file (down, then up): the latest wins.
    lines = (space.log_path.parent / "annotations" / "feedback.jsonl").read_text().splitlines()
    assert sum(f'"conversation_id":"{cid}"' in line.replace(" ", "") for line in lines) == 3

    page.reload()
    open_widget(page)
    assert pressed(page) == [("false", "true"), ("true", "false")]
    # No thumbs on the greeting.
    assert page.locator(f"{W} .msg.greeting .thumb").count() == 0


# ------------------------------------------------------------------ the Space's page


def test_like_on_the_spaces_own_page(space, context):
    page = context.new_page()
    page.goto(space.url + "/")
    box = page.locator("textarea").first
    box.wait_for()
    box.fill("rate me on the space page")
    box.press("Enter")
    bot = page.locator("[role=log] [data-testid=bot]")
    bot.first.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=log] [data-testid=bot]')]"
        ".some(e => e.textContent.includes('You said: rate me on the space page'))")
    # Gradio 6's chatbot: the reply's buttons sit in .message-buttons-left after the bot row.
    like = page.locator("[role=log] .message-buttons-left button[aria-label=Like]")
    like.first.wait_for()
    assert like.count() == 1

    mine = logged(space, "rate me on the space page")
    assert len(mine) == 1 and mine[0]["turn"] == 0
    assert mine[0]["source"] == "space"  # the page's own turns, told apart from API callers
    cid = mine[0]["conversation_id"]

    like.first.click()
    got = wait_feedback(space.log_path, cid, {0: "up"})
    assert got == {"ratings": {0: "up"}, "sources": {"space"}, "by": {"visitor"}}

    # A second message in the same session continues that conversation: its reply is turn 1.
    box.fill("and a second one")
    box.press("Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=log] [data-testid=bot]')]"
        ".some(e => e.textContent.includes('You said: and a second one'))")
    page.wait_for_function(
        "() => document.querySelectorAll('[role=log] .message-buttons-left button[aria-label=Dislike]')"
        ".length === 2")
    second = logged(space, "and a second one")
    assert [(r["conversation_id"], r["turn"]) for r in second] == [(cid, 1)]
    page.locator("[role=log] .message-buttons-left button[aria-label=Dislike]").nth(1).click()
    got = wait_feedback(space.log_path, cid, {0: "up", 1: "down"})
    assert got["ratings"] == {0: "up", 1: "down"} and got["sources"] == {"space"}
