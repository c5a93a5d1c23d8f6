"""The staff console behind the Live page, without a browser: a resent staff message is one
message, exports keep every line of a handed-off conversation in log order, what the bot
does while a visitor waits, and what the inbox shows (the visitor's last words, idle times).

Real Spaces on 127.0.0.1 (subprocesses) and the real CLI; the browser flows are in
test_console_e2e.py.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import time

import httpx
from gradio_client import Client

from conftest import PYTHON, ROOT, SpaceProcess

NOTICE = "Someone from the team will join you."
ENV = {"CHAT_HANDOFF_NOTICE": NOTICE}


def chat(sp: SpaceProcess, cid: str, text: str, client: Client | None = None) -> str:
    client = client or Client(sp.url, verbose=False)
    return client.predict(message={"text": text, "files": []}, conversation_id=cid, source="widget",
                          api_name="/chat")


def staff(sp: SpaceProcess, route: str, **body) -> httpx.Response:
    return httpx.post(f"{sp.url}/handoff/{route}", json=body, headers={"X-Chat-Operator-Token": sp.token()},
                      timeout=10)


def log_kinds(sp: SpaceProcess, cid: str) -> list[str]:
    """The conversation's lines in the order they are in the log file."""
    return [r.get("kind", "turn") for r in sp.records() if r["conversation_id"] == cid]


def export(sp: SpaceProcess, cid: str, fmt: str) -> str:
    out = subprocess.run([PYTHON, "-m", "chatcore", "export", "--conversation", cid, "--log", str(sp.log_path),
                          "--format", fmt], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


# ------------------------------------------------------------------ one message, once


def test_a_staff_message_sent_twice_with_its_id_is_logged_once(space_factory):
    """The duplicate seen in use: the same message posted twice 145 ms apart (a rerun that
    replayed the composer's value) was logged, and shown to the visitor, twice."""
    sp = space_factory(env=ENV)
    cid = "conv-once"
    chat(sp, cid, "hello")
    assert staff(sp, "take", conversation_id=cid, staff="Kim").status_code == 200
    body = {"conversation_id": cid, "staff": "Kim", "text": "Hi, Kim here.", "request_id": "req-1234abcd"}
    first = staff(sp, "say", **body)
    time.sleep(0.145)
    second = staff(sp, "say", **body)
    assert (first.status_code, second.status_code) == (200, 200)  # a resend is not an error
    said = [r for r in sp.records() if r.get("kind") == "staff_message"]
    assert [r["text"] for r in said] == ["Hi, Kim here."]
    events = httpx.get(f"{sp.url}/handoff/poll", params={"conversation_id": cid}).json()["events"]
    assert [e["kind"] for e in events] == ["handoff_taken", "staff_message"]
    # A new id is a new message, even with the same words.
    assert staff(sp, "say", **{**body, "request_id": "req-5678efgh"}).status_code == 200
    assert [r.get("kind") for r in sp.records()].count("staff_message") == 2
    # The id is checked like any other field a caller sends.
    for bad in ("x", "a b c d e f g h", "../../etc/passwd", 12345678, "é" * 10):
        res = staff(sp, "say", **{**body, "request_id": bad})
        assert res.status_code == 400, bad
    assert [r.get("kind") for r in sp.records()].count("staff_message") == 2


# ----------------------------------------------------------------------------- exports


def test_exports_of_a_handed_off_conversation_follow_the_log(space_factory):
    sp = space_factory(env=ENV)
    cid = "conv-export-order"
    client = Client(sp.url, verbose=False)
    chat(sp, cid, "hello", client)
    assert chat(sp, cid, "can I talk to a person?", client) == NOTICE
    assert staff(sp, "take", conversation_id=cid, staff="Kim").status_code == 200
    assert staff(sp, "say", conversation_id=cid, staff="Kim", text="=HYPERLINK(\"x\") Kim here").status_code == 200
    assert chat(sp, cid, "my parcel is late", client) == ""
    assert staff(sp, "say", conversation_id=cid, staff="Kim", text="It ships today.").status_code == 200
    assert staff(sp, "handback", conversation_id=cid, staff="Kim").status_code == 200
    chat(sp, cid, "thanks", client)
    order = log_kinds(sp, cid)
    assert order == ["turn", "turn", "handoff_requested", "handoff_taken", "staff_message", "visitor_message",
                     "staff_message", "handoff_returned", "turn"]
    texts = {"staff_message": ["=HYPERLINK(\"x\") Kim here", "It ships today."],
             "visitor_message": ["my parcel is late"]}

    rows = list(csv.DictReader(io.StringIO(export(sp, cid, "csv"))))
    assert [r["kind"] for r in rows] == order
    assert [r["text"] for r in rows if r["kind"] == "staff_message"] == \
        ["'" + texts["staff_message"][0], texts["staff_message"][1]]  # no formula from a staff message either
    assert [r["text"] for r in rows if r["kind"] == "visitor_message"] == texts["visitor_message"]
    assert [r["user_text"] for r in rows if r["kind"] == "turn"] == ["hello", "can I talk to a person?", "thanks"]
    assert {r["staff"] for r in rows if r["kind"] in ("handoff_taken", "staff_message", "handoff_returned")} == {"Kim"}

    lines = [json.loads(x) for x in export(sp, cid, "jsonl").splitlines()]
    assert [x["kind"] for x in lines] == order
    assert [x["text"] for x in lines if x["kind"] == "staff_message"] == texts["staff_message"]
    assert [x["turn"] for x in lines if x["kind"] == "turn"] == [0, 1, 2]

    md = export(sp, cid, "md")
    marks = {"turn": "## Turn", "handoff_requested": "> the visitor asked for a person",
             "handoff_taken": "> Kim took over", "staff_message": "**Staff (Kim):**",
             "visitor_message": "**User (to staff):**", "handoff_returned": "> Kim handed back"}
    found = sorted((md.index(marks[k], start), k) for k, start in _starts(md, marks))
    assert [k for _, k in found] == order


def _starts(md: str, marks: dict) -> list[tuple[str, int]]:
    """Every place of every mark in ``md``: (kind, position)."""
    out = []
    for kind, mark in marks.items():
        at = md.find(mark)
        while at != -1:
            out.append((kind, at))
            at = md.find(mark, at + 1)
    return out


# -------------------------------------------------------------- while a visitor waits


def test_the_bot_answers_while_a_visitor_waits_by_default(space_factory):
    sp = space_factory(env=ENV)
    cid = "conv-wait-bot"
    chat(sp, cid, "hello")  # only a conversation that has chatted may ask for a person
    assert httpx.post(f"{sp.url}/handoff/request", json={"conversation_id": cid}).status_code == 200
    assert chat(sp, cid, "are you there?").startswith("You said: are you there?")
    events = httpx.get(f"{sp.url}/handoff/poll", params={"conversation_id": cid}).json()
    assert events["status"] == "waiting"  # still waiting for the person
    assert events["events"][0]["bot_answers"] is True  # what the widget tells the visitor


def test_the_bot_can_be_told_to_wait_with_the_visitor(space_factory):
    sp = space_factory(env={**ENV, "CHAT_HANDOFF_BOT_WHILE_WAITING": "off"})
    cid = "conv-wait-quiet"
    client = Client(sp.url, verbose=False)
    chat(sp, cid, "hello", client)
    assert chat(sp, cid, "talk to a person please", client) == NOTICE
    assert chat(sp, cid, "it is about my order 1234", client) == ""  # no bot answer: it waits for the person
    assert log_kinds(sp, cid) == ["turn", "turn", "handoff_requested", "visitor_message"]
    events = httpx.get(f"{sp.url}/handoff/poll", params={"conversation_id": cid}).json()["events"]
    assert events[0]["bot_answers"] is False and events[0]["turn"] == 1  # the notice was turn 1's reply
    assert staff(sp, "take", conversation_id=cid, staff="Kim").status_code == 200
    assert staff(sp, "handback", conversation_id=cid, staff="Kim").status_code == 200
    assert chat(sp, cid, "thanks", client).startswith("You said: thanks")  # back with the bot
    bad = SpaceProcess(sp.log_path.parent / "bad" / "chat_logs.jsonl",
                       env={"CHAT_HANDOFF_BOT_WHILE_WAITING": "sometimes"})
    try:
        bad.start()
        raise AssertionError("a Space started with a setting it cannot read")
    except RuntimeError as exc:
        assert "CHAT_HANDOFF_BOT_WHILE_WAITING must be on or off" in str(exc)
    finally:
        bad.stop()


# ------------------------------------------------------------------------ the inbox


def test_the_inbox_shows_real_visitors_their_last_words_and_waits_in_minutes(tmp_path, monkeypatch):
    import uuid

    from chatcore.dashboard.views import distinct_id, format_ago
    from chatcore.log import records
    from chatcore.staff.inbox import LiveConversations

    monkeypatch.setenv("CHAT_HANDOFF_BOT_WHILE_WAITING", "off")
    log = tmp_path / "logs" / "chat_logs.jsonl"
    log.parent.mkdir()
    real, sim = str(uuid.uuid4()), str(uuid.uuid4())
    replays = [f"replay-{uuid.uuid4()}" for _ in range(2)]
    lines = [records.make_record(conversation_id=real, turn=0, user_text="where is my order?",
                                 response="It left on Tuesday.", latency_ms=5, source="widget", backend="echo"),
             records.make_event(conversation_id=real, kind="handoff_requested", at_turn=1, via="button"),
             records.make_event(conversation_id=real, kind="visitor_message", at_turn=1, text="hello?"),
             records.make_record(conversation_id=sim, turn=0, user_text="do you ship to Canada?",
                                 response="Yes.", latency_ms=5, source="simulated", backend="echo")]
    lines += [records.make_record(conversation_id=r, turn=0, user_text="replayed", response="again",
                                  latency_ms=5, source="replay", backend="echo") for r in replays]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    lc = LiveConversations(log)
    assert lc.bot_while_waiting is False  # the Space's setting, read the same way
    rows = lc.active(15)
    assert [r["conversation_id"] for r in rows] == [real]  # real visitors only, by default
    assert rows[0]["last_message"] == "hello?"  # the visitor's last words, not the bot's reply
    assert rows[0]["status"] == "waiting for a person" and rows[0]["test"] is False
    everyone = lc.active(15, include_test=True)
    assert sorted(r["conversation_id"] for r in everyone) == sorted([real, sim, *replays])
    assert {r["conversation_id"]: r["test"] for r in everyone} == {real: False, sim: True, **{r: True for r in replays}}
    assert everyone[0]["conversation_id"] == real  # waiting ones on top
    # Test ids read apart: not `replay-a…` twice.
    assert len({distinct_id(r) for r in replays}) == 2
    assert all(distinct_id(r).startswith("replay-") for r in replays)
    assert [format_ago(s) for s in (None, 5, 636, 7300, 200000)] == ["", "5 s", "10 min", "2 h 01 min", "2 d"]


def test_a_resolved_conversation_leaves_the_inbox_until_the_visitor_writes_again(space_factory):
    from chatcore.staff.inbox import LiveConversations

    sp = space_factory(env=ENV)
    cid, held = "conv-resolved", "conv-held"
    chat(sp, cid, "hello")
    assert httpx.post(f"{sp.url}/handoff/request", json={"conversation_id": cid}).status_code == 200
    chat(sp, held, "hi")
    assert staff(sp, "take", conversation_id=held, staff="Ann").status_code == 200
    lc = LiveConversations(sp.log_path)
    assert sorted(r["conversation_id"] for r in lc.active(15)) == sorted([cid, held])

    res = staff(sp, "resolve", conversation_id=held, staff="Kim")  # held by someone else: refused
    assert res.status_code == 409 and res.json()["held_by"] == "Ann"
    assert staff(sp, "resolve", conversation_id=cid, staff="Kim").status_code == 200
    assert [r["conversation_id"] for r in lc.active(15)] == [held]  # it left the inbox
    assert log_kinds(sp, cid)[-1] == "conversation_resolved"  # and the log says so
    resolved = [r for r in sp.records() if r.get("kind") == "conversation_resolved"]
    assert [(r["conversation_id"], r["staff"]) for r in resolved] == [(cid, "Kim")]
    state = httpx.get(f"{sp.url}/handoff/state", params={"conversation_id": cid},
                      headers={"X-Chat-Operator-Token": sp.token()}).json()
    assert state["status"] == "bot"  # the request for a person is closed
    assert any(m["text"] == "Kim marked it resolved" for m in lc.transcript(cid))  # a step of the transcript
    assert "Kim marked it resolved" in export(sp, cid, "md")

    assert staff(sp, "resolve", conversation_id=held, staff="Ann").status_code == 200  # the holder may
    assert lc.active(15) == [] and chat(sp, held, "still there?").startswith("You said")  # back with the bot
    chat(sp, cid, "one more question")
    assert sorted(r["conversation_id"] for r in lc.active(15)) == sorted([cid, held])  # both came back
    # Anonymous callers cannot resolve.
    assert httpx.post(f"{sp.url}/handoff/resolve", json={"conversation_id": cid, "staff": "Kim"}).status_code == 403


# ------------------------------------------------------------------- canned replies


def test_canned_replies_are_saved_edited_deleted_and_checked(tmp_path):
    from chatcore.log import annotations

    log = tmp_path / "logs" / "chat_logs.jsonl"
    first = annotations.save_snippet(log, "  Shipping   times ", "It ships in 2 days.\n", author="Kim")
    assert (first["title"], first["value"], first["conversation_id"]) == ("Shipping times", "It ships in 2 days.", "")
    annotations.save_snippet(log, "Address", "Which address should it go to?")
    annotations.save_snippet(log, "Shipping times", "It ships in 3 days.", snippet_id=first["snippet_id"])
    assert [(s["title"], s["text"]) for s in annotations.load_snippets(log)] == \
        [("Address", "Which address should it go to?"), ("Shipping times", "It ships in 3 days.")]
    annotations.delete_snippet(log, first["snippet_id"])
    assert [s["title"] for s in annotations.load_snippets(log)] == ["Address"]
    for title, text, sid in (("", "text", None), ("title", "  ", None), ("t" * 61, "text", None),
                             ("title", "x" * 2001, None), ("title", "text", "../../x"), ("title", "text", 7)):
        try:
            annotations.save_snippet(log, title, text, snippet_id=sid)
            raise AssertionError(f"saved {title!r} {sid!r}")
        except ValueError:
            pass
    # A canned reply is about no conversation: it never shows as one among the notes.
    assert annotations.load_annotations(log) == {}


def test_a_canned_reply_saved_on_the_live_page_goes_into_the_composer(tmp_path, monkeypatch):
    """Saved in the page's "Canned replies" box, offered while the agent holds a conversation, its
    title shown as text (never markup), and a click puts its text in the message box unsent."""
    import uuid

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from chatcore.log import annotations, records
    from conftest import apptest_knows_the_entry_navigates, free_port

    log = tmp_path / "logs" / "chat_logs.jsonl"
    log.parent.mkdir()
    cid = str(uuid.uuid4())
    lines = [records.make_record(conversation_id=cid, turn=0, user_text="where is my parcel?", response="Let me see.",
                                 latency_ms=5, source="widget", backend="echo"),
             records.make_event(conversation_id=cid, kind="handoff_taken", at_turn=1, staff="Kim")]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    for name, value in {"CHAT_LOG_PATH": str(log), "CHAT_SPACE_URL": f"http://127.0.0.1:{free_port()}",
                        "CHAT_TIMEZONE": "UTC", "CHAT_STAFF_NAME": "Kim"}.items():
        monkeypatch.setenv(name, value)
    apptest_knows_the_entry_navigates(monkeypatch)
    title = "**Ship** <img src=x onerror=alert(1)> [x](javascript:1)"
    try:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=30).run()
        at.switch_page("pages/live.py").run()
        assert not at.exception, at.exception
        assert [e.label for e in at.expander if "Canned replies" in e.label] == ["Canned replies (0)"]
        at.text_input(key="snip_title").input(title)
        at.text_area(key="snip_text").input("It ships in 2 days.")
        next(b for b in at.button if b.label == "Save canned reply").click().run()
        assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
        (saved,) = annotations.load_snippets(log)
        assert (saved["title"], saved["text"], saved["author"]) == (title, "It ships in 2 days.", "Kim")

        # Edited in the same box: still one canned reply, with the new text.
        at.text_area(key="snip_text").input("It ships in 3 days.")
        next(b for b in at.button if b.label == "Save canned reply").click().run()
        assert [s["text"] for s in annotations.load_snippets(log)] == ["It ships in 3 days."]

        at.selectbox(key="now_open").select(cid).run()
        assert not at.exception, at.exception
        (offer,) = [g for g in at.get("button_group") if g.key == "now_snippet"]
        from chatcore.dashboard.views import escape_markdown

        assert offer.options == [escape_markdown(title)]  # markdown shows it literally
        offer.select(offer.options[0]).run()
        assert not at.exception, at.exception
        (box,) = at.chat_input
        assert box.proto.value == "It ships in 3 days." and box.proto.set_value  # in the box, not sent
        assert "staff_message" not in log.read_text()

        next(b for b in at.button if b.label == "Delete canned reply").click().run()
        assert annotations.load_snippets(log) == []
        assert not [g for g in at.get("button_group") if g.key == "now_snippet"]
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()
