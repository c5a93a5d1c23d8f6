"""The model can ask for a person: with CHAT_HANDOFF_TOOL=on the responder offers the
``request_human`` tool; when a loopback model server calls it, the Space starts a hand-off as the
widget's button does (logged with ``via: "model"``), and the widget in Chromium shows it."""
from __future__ import annotations

import uuid

from openai_fake import CompletionsServer
from test_takeover import (ENV, NOTICE, REPLY, W, _page, _send, browser, chat, host, kinds,  # noqa: F401
                           staff, state)


def _space(space_factory, tmp_path, server, tool="on"):
    return space_factory(tmp_path / "log" / "chat.jsonl",
                         env={**ENV, "CHAT_RESPONDER": "openai", "OPENAI_BASE_URL": server.url, "OPENAI_MODEL": "m",
                              "OPENAI_MAX_RETRIES": "0", "CHAT_HANDOFF_TOOL": tool,
                              "CHAT_STAFF_DISPLAY_NAME": "Support team"})


def test_the_model_calls_request_human_and_a_handoff_starts(space_factory, tmp_path):
    with CompletionsServer(mode="tool", usage={"prompt_tokens": 40, "completion_tokens": 9}) as server:
        sp = _space(space_factory, tmp_path, server)
        cid = str(uuid.uuid4())
        reply = chat(sp, cid, "my account was hacked, I need help now")
        tools = server.requests[-1]["body"]["tools"]
        assert [t["function"]["name"] for t in tools] == ["request_human"]
        assert reply == NOTICE
        assert state(sp, cid)["status"] == "waiting"
        assert kinds(sp, cid) == ["turn", "handoff_requested"]
        turn, event = [r for r in sp.records() if r["conversation_id"] == cid]
        assert event["via"] == "model" and event["at_turn"] == 1
        assert turn["backend"] == "openai" and turn["usage"] == {"input_tokens": 40, "output_tokens": 9}
        # staff trying the bot are not handed to themselves
        op = str(uuid.uuid4())
        assert NOTICE not in chat_as_operator(sp, op)
        assert kinds(sp, op) == ["turn"]


def chat_as_operator(sp, cid):
    from chatcore.remote.client import SpaceClient

    client = SpaceClient(sp.url, operator_token=sp.token())
    try:
        return client.send("I need a human", cid, source="operator").reply
    finally:
        client.close()


def test_without_the_setting_no_tool_is_offered(space_factory, tmp_path):
    with CompletionsServer(mode="tool") as server:
        sp = _space(space_factory, tmp_path, server, tool="")
        cid = str(uuid.uuid4())
        assert chat(sp, cid, "hello").startswith("Model reply")
        assert "tools" not in server.requests[-1]["body"]
        assert kinds(sp, cid) == ["turn"]


def test_the_widget_shows_the_handoff_the_model_asked_for(space_factory, tmp_path, host, browser):
    with CompletionsServer(mode="tool") as server:
        sp = _space(space_factory, tmp_path, server)
        ctx, page = _page(browser, host, sp, handoff="on", title="Help")
        try:
            _send(page, "my contract renewal went wrong twice")  # no phrase asks for a person: the model does
            assert page.locator(f"{REPLY} .text").all_text_contents()[-1] == NOTICE
            cid = page.evaluate("window.ChatOperatorWidget.conversationId")
            assert state(sp, cid)["status"] == "waiting"
            page.locator(f"{W} .handoff").wait_for(state="hidden")  # no second request while waiting
            assert page.locator(f"{W} .msg.note", has_text=NOTICE).count() == 0  # the reply says it once
            assert staff(sp, "take", conversation_id=cid, staff="Ann").status_code == 200
            page.locator(f"{W} .msg.note", has_text="Support team joined the chat.").wait_for()
            assert staff(sp, "say", conversation_id=cid, staff="Ann", text="Hi, I am here.").status_code == 200
            page.locator(f"{W} .msg.staff").wait_for()
            assert [r.get("via") for r in sp.records() if r.get("kind") == "handoff_requested"] == ["model"]
        finally:
            ctx.close()
