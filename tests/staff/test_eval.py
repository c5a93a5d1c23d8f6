"""Regression gate: suites from the log, eval runs against real Spaces, a real judge server.

Everything runs on 127.0.0.1: the Spaces (``python -m chatcore space``), an OpenAI-compatible
model server the Spaces' ``openai`` responder talks to, and an OpenAI-compatible judge that
speaks both the streaming (SSE) and the plain JSON protocol and keeps what it was sent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chatcore.log import annotations
from chatcore.remote.client import SpaceClient
from chatcore.staff.evaluate import Judge, parse_verdict, run_suite
from chatcore.staff.suites import get_suite, load_suites
from conftest import ROOT, SpaceProcess

TOKEN = "staff-token-of-the-eval-tests"
REFUSAL = "Sorry, I cannot help with refunds."
NOTICE = "I've asked a member of our team to join. Someone will be with you shortly."
STAFF_SAID = "Your order ships tomorrow."
#: What a Space whose system prompt says "Answer well." replies (the answers staff wanted).
IDEAL = {
    "I want a refund": "You can have a refund: send the order number and it is paid within 5 days.",
    "where is my parcel": "Your parcel left the depot this morning and arrives tomorrow.",
    "my order is late": "Sorry it is late: it left the warehouse today and arrives on Friday.",
    "talk to a person please": "Happy to help myself: your order arrives on Friday, and a refund is possible.",
    "thanks a lot": "Glad I could help, have a nice day!",
}


class _OpenAIServer:
    """``/v1/chat/completions`` on a free loopback port.

    role ``model``: replies like the echo responder (``You said: …``, numbered after the first
    message) unless the system prompt says ``Refuse refunds`` and the message is about a refund,
    or says ``Answer well.`` and the message is one of :data:`IDEAL`. Asked about the invoice
    after staff said :data:`STAFF_SAID`, it answers from that (context from a person).
    role ``judge``: reads the new reply out of the prompt and fails a refusal, with a reason.
    """

    def __init__(self, role: str, delay: float = 0.0):
        self.role = role
        self.delay = delay
        self.requests: list[dict] = []
        self.in_flight = 0
        self.most_in_flight = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    text = server.answer(body["messages"])
                    self.respond(text, bool(body.get("stream")))
                except OSError:  # the caller went away (a Space stopped mid-reply)
                    pass
                finally:
                    with lock:
                        server.in_flight -= 1

            def respond(self, text: str, stream: bool):
                if not stream:
                    data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                    "finish_reason": "stop"}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                words = text.split(" ")
                for i, w in enumerate(words):
                    piece = w if i == 0 else " " + w
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, messages: list[dict]) -> str:
        if self.role == "judge":
            prompt = messages[-1]["content"]
            reply = prompt.rsplit("New reply:\n", 1)[1].strip()
            if "cannot help" in reply:
                return 'Verdict: {"pass": false, "reason": "The new reply refuses the refund\\nthe visitor asked for."}'
            if "counter-example" in prompt:
                return '{"pass": true, "reason": "It fixes what the rated-down reply got wrong."}'
            return '{"pass": true, "reason": "Same substance as the reference."}'
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        text = messages[-1]["content"]
        if "take your time" in text:
            time.sleep(12)  # far longer than the run's timeout in test_a_turn_that_times_out…
        if "Refuse refunds" in system and "refund" in text.lower():
            return REFUSAL
        if "Answer well." in system and text in IDEAL:
            return IDEAL[text]
        if "invoice" in text and any(STAFF_SAID in m["content"] for m in messages if m["role"] == "assistant"):
            return "The invoice comes with the parcel tomorrow, as my colleague said."
        n = sum(m["role"] == "user" for m in messages)
        return f"You said: {text}" + (f" (message {n} in this conversation)" if n > 1 else "")

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


CONVERSATIONS = {
    "c-refund": (["I want a refund", "order 42 please"], (0, "down")),
    "c-parcel": (["hello", "where is my parcel"], (1, "down")),
    "c-thanks": (["thanks a lot"], (0, "up")),
    "c-refund-unrated": (["refund for order 7"], None),
}


def _handed_off_conversation(space, client) -> None:
    """c-handoff: a late order; the visitor asks for a person, staff take over and answer, the
    visitor writes to them, staff hand back, and the bot answers from what staff said."""
    from chatcore.remote.client import staff_call

    client.reset()
    client.send("my order is late", "c-handoff", source="api")
    assert client.send("talk to a person please", "c-handoff", source="api").reply == NOTICE
    for route, extra in (("take", {}), ("say", {"text": STAFF_SAID})):
        assert staff_call(space.url, TOKEN, route, {"conversation_id": "c-handoff", "staff": "Ana", **extra})[0]
    assert client.send("ok, thanks", "c-handoff", source="api").reply == ""  # held: to staff, not the bot
    assert staff_call(space.url, TOKEN, "handback", {"conversation_id": "c-handoff", "staff": "Ana"})[0]
    assert "my colleague" in client.send("and the invoice?", "c-handoff", source="api").reply


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A production log with rated and handed-off conversations, and Spaces: as before (prod),
    with a prompt that refuses refunds (changed), and one that gives the answers staff wanted
    and hands no one to a person (fixed)."""
    base = tmp_path_factory.mktemp("eval")
    model = _OpenAIServer("model")
    judge = _OpenAIServer("judge")
    env = {"CHAT_RESPONDER": "openai", "OPENAI_BASE_URL": model.url, "CHAT_OPERATOR_TOKEN": TOKEN}
    prod = SpaceProcess(base / "prod" / "chat_logs.jsonl", env=env)
    changed = SpaceProcess(base / "staging" / "chat_logs.jsonl", env={**env, "CHAT_SYSTEM_PROMPT": "Refuse refunds."})
    fixed = SpaceProcess(base / "fixed" / "chat_logs.jsonl",
                         env={**env, "CHAT_SYSTEM_PROMPT": "Answer well.", "CHAT_HANDOFF_PHRASES": "no one types this"})
    started = []
    try:
        for sp in (prod, changed, fixed):
            sp.start()
            started.append(sp)
        client = SpaceClient(prod.url, operator_token=TOKEN)
        for cid, (texts, rating) in CONVERSATIONS.items():
            client.reset()
            for text in texts:
                client.send(text, cid, source="api")
            if rating:
                annotations.record_feedback(prod.log_path, cid, rating[0], rating[1])
        _handed_off_conversation(prod, client)
        client.close()
        yield {"log": prod.log_path, "prod": prod, "changed": changed, "fixed": fixed, "model": model,
               "judge": judge, "base": base}
    finally:
        for sp in started:
            sp.stop()
        model.stop()
        judge.stop()


def cli(*args, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CHAT_OPERATOR_TOKEN": TOKEN, "NO_COLOR": "1", **(env or {})}
    full_env.pop("CHAT_LOG_PATH", None)
    return subprocess.run([sys.executable, "-m", "chatcore", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def _suite(world, name: str, *extra: str) -> None:
    if name not in load_suites(world["log"]):
        r = cli("suite", "add", name, "--rated", "down", "--log", str(world["log"]), *extra)
        assert r.returncode == 0, r.stderr


def _failing(report: dict) -> dict[tuple[str, int], dict]:
    return {(c["conversation_id"], t["turn"]): t for c in report["conversations"] for t in c["turns"]
            if not t["passed"]}


def _outcomes(report: dict) -> dict[tuple[str, int], str]:
    return {(c["conversation_id"], t["turn"]): t["outcome"] for c in report["conversations"] for t in c["turns"]}


def _words(report: dict) -> tuple:
    s = report["summary"]
    return tuple(s[w] for w in ("fixed", "still_failing", "broke", "held", "unjudged", "not_answered"))


# ------------------------------------------------------------------------------- suites


def test_suite_from_thumbs_down_conversations(world):
    log = str(world["log"])
    r = cli("suite", "add", "thumbs-down", "--rated", "down", "--since", "2020-01-01", "--log", log)
    assert r.returncode == 0, r.stderr
    assert "2 conversation(s) added" in r.stdout
    suite = get_suite(log, "thumbs-down")
    assert list(suite.conversations) == ["c-refund", "c-parcel"]  # order of the log
    refund = suite.conversations["c-refund"]
    assert [t.user_text for t in refund.turns] == ["I want a refund", "order 42 please"]
    assert refund.turns[1].reference == "You said: order 42 please (message 2 in this conversation)"
    assert "rated down" in refund.filter

    # a date range that ends before the log adds nothing
    r = cli("suite", "add", "empty", "--rated", "down", "--until", "2020-01-01", "--log", log)
    assert r.returncode == 0 and "0 conversation(s)" in r.stdout

    # pick by hand: an unknown id is a usage error (the one id resolver) and nothing is added
    r = cli("suite", "pick", "thumbs-down", "c-thanks", "no-such-id", "--log", log)
    assert r.returncode == 2 and "no-such-id" in r.stderr
    r = cli("suite", "pick", "thumbs-down", "c-thanks", "--log", log)
    assert r.returncode == 0, r.stderr
    assert "c-thanks" in get_suite(log, "thumbs-down").conversations

    # remove a conversation (append-only: the file only grows)
    size = (Path(log).parent / "annotations" / "suites.jsonl").stat().st_size
    r = cli("suite", "remove", "thumbs-down", "c-thanks", "--log", log)
    assert r.returncode == 0, r.stderr
    assert "c-thanks" not in get_suite(log, "thumbs-down").conversations
    assert (Path(log).parent / "annotations" / "suites.jsonl").stat().st_size > size
    assert cli("suite", "remove", "thumbs-down", "c-thanks", "--log", log).returncode == 1

    # an ideal answer on the transcript shows in every suite holding the conversation
    r = cli("suite", "ideal", "c-parcel", "1", "Your parcel is on its way.", "--log", log)
    assert r.returncode == 0, r.stderr
    shown = json.loads(cli("suite", "show", "thumbs-down", "--format", "json", "--log", log).stdout)
    parcel = next(c for c in shown["conversations"] if c["conversation_id"] == "c-parcel")
    assert parcel["turns"][1]["ideal"] == "Your parcel is on its way."
    assert cli("suite", "ideal", "c-parcel", "1", "--clear", "--log", log).returncode == 0
    assert get_suite(log, "thumbs-down").conversations["c-parcel"].turns[1].ideal is None

    listed = json.loads(cli("suite", "list", "--format", "json", "--log", log).stdout)
    assert {"suite": "thumbs-down", "conversations": 2, "turns": 4} == {k: listed[0][k] for k in
                                                                        ("suite", "conversations", "turns")}
    # hostile names and ids are refused as usage errors
    assert cli("suite", "add", "../etc", "--rated", "down", "--log", log).returncode == 2
    assert cli("suite", "ideal", "bad id!", "0", "x", "--log", log).returncode == 2
    assert cli("suite", "add", "nofilter", "--log", log).returncode == 2


def test_suite_filters_tags_handoff_and_picked_ids(tmp_path):
    """Filters combine (every one must match); ids picked by hand are added; order is the log's."""
    from datetime import datetime, timezone

    from chatcore.log.records import make_event, make_record
    from chatcore.store import load_log
    from chatcore.staff.suites import select_conversations

    log = tmp_path / "chat_logs.jsonl"
    rows = [("a", "widget", "2026-11-01T10:00:00.000Z"), ("b", "widget", "2026-11-02T10:00:00.000Z"),
            ("b", "operator", "2026-11-02T10:01:00.000Z"), ("c", "widget", "2026-11-03T10:00:00.000Z"),
            ("e", "operator", "2026-11-04T10:00:00.000Z"),  # staff tried a prompt: not a handoff
            ("d", "widget", "2026-10-01T10:00:00.000Z")]
    with open(log, "w") as f:
        for i, (cid, source, ts) in enumerate(rows):
            f.write(json.dumps(make_record(conversation_id=cid, turn=0, user_text=f"q{i}", response=f"r{i}",
                                           latency_ms=1, source=source, backend="echo", ts=ts)) + "\n")
        # b was taken over by a person (a schema v2 event line)
        f.write(json.dumps(make_event(conversation_id="b", kind="handoff_taken", at_turn=1, staff="Ana",
                                      ts="2026-11-02T10:00:30.000Z")) + "\n")
    for cid in ("a", "b", "d"):
        annotations.add_tag(log, cid, "escalated")
    annotations.add_tag(log, "a", "bug")
    frame, _ = load_log(log)
    assert select_conversations(frame, log, tags=["escalated"]) == ["d", "a", "b"]
    assert select_conversations(frame, log, tags=["Escalated", "bug"]) == ["a"]
    assert select_conversations(frame, log, handed_off=True) == ["b"]
    since = datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert select_conversations(frame, log, tags=["escalated"], since=since) == ["a", "b"]
    assert select_conversations(frame, log, handed_off=True, ids=["c"]) == ["b", "c"]
    assert select_conversations(frame, log) == []  # no filter chooses nothing
    with pytest.raises(ValueError):
        select_conversations(frame, log, ids=["<script>"])


def test_turn_kinds_from_ratings_button_requests_and_staff_context(tmp_path):
    """A request for a person made with the widget's button makes the turn before it known-bad;
    a visitor's 👍 outranks staff's 👎 (and a 👍 beats the request); staff messages are context."""
    from chatcore.log.records import make_event, make_record
    from chatcore.staff.suites import add_conversations
    from chatcore.store import load_log

    log = tmp_path / "chat_logs.jsonl"
    lines = [make_record(conversation_id="b", turn=t, user_text=f"q{t}", response=f"r{t}", latency_ms=1,
                         source="widget", backend="echo", ts=f"2026-11-02T10:0{t}:00.000Z") for t in range(4)]
    lines.insert(2, make_event(conversation_id="b", kind="handoff_requested", at_turn=2, via="button",
                               ts="2026-11-02T10:01:30.000Z"))
    lines.insert(3, make_event(conversation_id="b", kind="staff_message", at_turn=2, staff="Ana", text="Hi, Ana here",
                               ts="2026-11-02T10:01:40.000Z"))
    with open(log, "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    annotations.record_feedback(log, "b", 2, "down", by="staff")
    annotations.record_feedback(log, "b", 2, "up", by="visitor")
    annotations.record_feedback(log, "b", 3, "down", by="staff")
    frame, _ = load_log(log)
    assert add_conversations(log, "s", frame, ["b"]) == ["b"]
    conv = get_suite(log, "s").conversations["b"]
    assert [t.kind for t in conv.turns] == ["unrated", "bad", "good", "bad"]
    assert [t.user_text for t in conv.turns] == ["q0", "q1", "q2", "q3"]  # the staff message is no turn
    assert conv.context == [{"before": 2, "kind": "staff_message", "text": "Hi, Ana here", "staff": "Ana"}]


def test_failing_lines_shorten_and_strip_what_visitors_wrote():
    """A reply or reference carrying terminal escapes or a direction override is shown inert and
    shortened on one line."""
    from chatcore.cli.eval import SHORT, failing_lines

    turn = {"turn": 3, "status": "fail", "outcome": "still_failing", "expect": "bad",
            "reason": "still the answer \x1b]0;pwned\x07that was rated down", "reply": "\x1b[2J" + "x" * 500,
            "reference": "line one\nline two \u202eevil", "ideal": None}
    lines = failing_lines("c-1", turn)
    assert lines[0].startswith("FAIL c-1 turn 3 [still failing]: still the answer ")
    assert lines[1].startswith("    reply: ") and len(lines[1]) == len("    reply: ") + SHORT
    assert lines[2] == "    reference (rated down): line one line two \ufffdevil"
    assert not any(c in "".join(lines) for c in "\x1b\x07\u202e")


# --------------------------------------------------------------------------------- runs


def test_suite_knows_known_bad_known_good_and_handoff_turns(world):
    """Kinds come from ratings and hand-offs: rated down, or followed by a request for a person,
    is known-bad; rated up is known-good; the request itself is a hand-off turn. What people
    said is kept as context, never as a turn."""
    log = str(world["log"])
    _suite(world, "gate")
    gate = get_suite(log, "gate")
    assert [t.kind for t in gate.conversations["c-refund"].turns] == ["bad", "unrated"]
    assert [t.kind for t in gate.conversations["c-parcel"].turns] == ["unrated", "bad"]
    r = cli("suite", "add", "handoffs", "--handed-off", "--log", log)
    assert r.returncode == 0 and "1 conversation(s) added" in r.stdout, r.stdout + r.stderr
    conv = get_suite(log, "handoffs").conversations["c-handoff"]
    assert [(t.user_text, t.kind) for t in conv.turns] == [
        ("my order is late", "bad"), ("talk to a person please", "handoff"), ("and the invoice?", "unrated")]
    assert conv.turns[1].reference == NOTICE
    assert [(c["before"], c["kind"], c["text"]) for c in conv.context] == [
        (2, "handoff_taken", None), (2, "staff_message", STAFF_SAID), (2, "visitor_message", "ok, thanks"),
        (2, "handoff_returned", None)]
    shown = cli("suite", "show", "handoffs", "--log", log).stdout
    assert "[0] known-bad" in shown and "[1] asks for a person (hand off)" in shown
    assert f"(staff: {STAFF_SAID})" in shown and "(visitor to staff: ok, thanks)" in shown
    # a golden suite: every turn is known-good, the rated-down one too
    r = cli("suite", "add", "golden-set", "--id", "c-refund", "--golden", "--log", log)
    assert r.returncode == 0, r.stderr
    golden = get_suite(log, "golden-set")
    assert golden.golden and {golden.expectation(t) for t in golden.conversations["c-refund"].turns} == {"good"}


def test_thumbs_down_suite_against_the_unchanged_space_fails(world):
    """The references of a rated-down suite are the answers visitors rated down: the same
    answers again are still failing, and the gate fails, with the reply and the reference shown."""
    _suite(world, "gate")
    log = str(world["log"])
    report_path = world["base"] / "unchanged.json"
    r = cli("eval", "gate", "--space", world["prod"].url, "--log", log, "--report", str(report_path))
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(report_path.read_text())
    assert _outcomes(report) == {("c-refund", 0): "still_failing", ("c-refund", 1): "held",
                                 ("c-parcel", 0): "held", ("c-parcel", 1): "still_failing"}
    assert _words(report) == (0, 2, 0, 2, 0, 0)
    s = report["summary"]
    assert (s["pass_rate"], s["changed"], s["known_bad"], s["known_good"], s["better"]) == (0.5, 0, 2, 2, 0)
    assert report["gate"] == "fail" and set(report["outcomes"]) >= {"fixed", "still_failing", "broke", "held",
                                                                    "unjudged"}
    lines = r.stdout.splitlines()
    at = lines.index("FAIL c-refund turn 0 [still failing]: still the answer that was rated down")
    assert lines[at + 1] == "    reply: You said: I want a refund"
    assert lines[at + 2] == "    reference (rated down): You said: I want a refund"
    assert "suite gate: 0 fixed, 2 still failing, 0 broke, 2 held, 0 unjudged; 50.0% of 4 turns pass" in r.stdout
    assert "gate fail" in r.stdout
    # replayed as source=replay, with the staff token, in turn order within each conversation
    replays = [rec for rec in world["prod"].records() if rec.get("source") == "replay"]
    assert len(replays) == 4
    by_conv: dict[str, list[str]] = {}
    for rec in replays:
        by_conv.setdefault(rec["conversation_id"], []).append(rec["user_text"])
    assert sorted(by_conv.values()) == [["I want a refund", "order 42 please"], ["hello", "where is my parcel"]]
    # a judge is not asked about unchanged replies: the same answer is still the one rated down
    before = len(world["judge"].requests)
    r = cli("eval", "gate", "--space", world["prod"].url, "--judge", world["judge"].url, "--log", log,
            "--format", "json")
    assert r.returncode == 1 and len(world["judge"].requests) == before
    assert _words(json.loads(r.stdout)) == (0, 2, 0, 2, 0, 0)
    # half the turns pass: a bar of one half lets it through
    assert cli("eval", "gate", "--space", world["prod"].url, "--log", log, "--min-pass", "0.5").returncode == 0
    assert cli("eval", "gate", "--space", world["prod"].url, "--log", log, "--min-pass", "0.51").returncode == 1
    history = cli("eval", "--history", "gate", "--log", log).stdout.splitlines()
    assert len(history) >= 4 and all("0 fixed, 2 still failing, 0 broke, 2 held, 0 unjudged" in h for h in history)


def test_ideal_answers_given_by_the_new_space_fix_the_suite(world):
    """Staff write the answers they wanted; a Space whose model now gives them passes the gate
    (exit 0), each rated-down turn fixed, the others held; compared with the unchanged run, better."""
    _suite(world, "gate")
    log = str(world["log"])
    for cid, turn, text in (("c-refund", 0, "I want a refund"), ("c-parcel", 1, "where is my parcel")):
        assert cli("suite", "ideal", cid, str(turn), IDEAL[text], "--log", log).returncode == 0
    try:
        unchanged = cli("eval", "gate", "--space", world["prod"].url, "--log", log, "--format", "json")
        assert unchanged.returncode == 1
        r = cli("eval", "gate", "--space", world["fixed"].url, "--log", log, "--format", "json")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        report = json.loads(r.stdout)
        assert _outcomes(report) == {("c-refund", 0): "fixed", ("c-refund", 1): "held",
                                     ("c-parcel", 0): "held", ("c-parcel", 1): "fixed"}
        fixed = next(t for c in report["conversations"] for t in c["turns"] if t["outcome"] == "fixed")
        assert fixed["similarity_ideal"] == 1.0 and "ideal answer" in fixed["reason"]
        assert report["summary"]["pass_rate"] == 1.0 and report["gate"] == "pass"
        assert (report["summary"]["better"], report["summary"]["worse"]) == (2, 0)
        # the comparison of the two runs names the turns that moved
        diff = json.loads(cli("eval", "--compare", json.loads(unchanged.stdout)["run_id"], report["run_id"],
                              "--log", log, "--format", "json").stdout)
        assert sorted((t["conversation_id"], t["turn"]) for t in diff["turns"] if t["movement"] == "better") == [
            ("c-parcel", 1), ("c-refund", 0)]
        text = cli("eval", "--compare", json.loads(unchanged.stdout)["run_id"], report["run_id"], "--log", log).stdout
        assert "c-refund turn 0: still failing -> fixed (better)" in text
        assert "You [-said:-]{+can+}" in text
        assert cli("eval", "--compare", report["run_id"], "no-such-run", "--log", log).returncode == 1
    finally:
        for cid, turn in (("c-refund", 0), ("c-parcel", 1)):
            cli("suite", "ideal", cid, str(turn), "--clear", "--log", log)


def test_a_changed_answer_without_ideal_or_judge_is_unjudged_and_the_judge_decides(world):
    """A known-bad turn answered differently is not fixed just because it changed: without an
    ideal answer or a judge it is unjudged (and fails); the judge is sent the known-bad reply,
    the ideal answer and the staff's notes, and its verdict decides."""
    _suite(world, "gate")
    log = str(world["log"])
    url = world["changed"].url  # refuses refunds
    r = cli("eval", "gate", "--space", url, "--log", log)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("FAIL c-refund turn 0 [unjudged]"))
    assert lines[at + 1] == f"    reply: {REFUSAL}"
    assert lines[at + 2] == "    reference (rated down): You said: I want a refund"
    assert "--judge URL" in lines[at]

    annotations.add_note(world["log"], "c-refund", "Refunds are allowed within 30 days: say how.")
    assert cli("suite", "ideal", "c-refund", "0", IDEAL["I want a refund"], "--log", log).returncode == 0
    try:
        before = len(world["judge"].requests)
        r = cli("eval", "gate", "--space", url, "--log", log, "--judge", world["judge"].url, "--judge-stream",
                "--format", "json", env={"CHAT_JUDGE_API_KEY": "judge-secret-key"})
        assert r.returncode == 1
        asked = world["judge"].requests[before:]
        assert len(asked) == 1  # only the changed reply; the unchanged ones need no judge
        assert asked[0]["body"]["stream"] and asked[0]["auth"] == "Bearer judge-secret-key"
        prompt = asked[0]["body"]["messages"][-1]["content"]
        assert "Reference reply:\nYou said: I want a refund\n" in prompt  # the known-bad reply
        assert f"Ideal answer:\n{IDEAL['I want a refund']}\n" in prompt
        assert "Staff notes:\nRefunds are allowed within 30 days: say how.\n" in prompt
        assert "counter-example" in prompt and f"New reply:\n{REFUSAL}" in prompt
        assert "judge-secret-key" not in r.stdout + r.stderr
        report = json.loads(r.stdout)
        turn = _failing(report)[("c-refund", 0)]
        assert turn["outcome"] == "still_failing"
        assert turn["reason"] == "The new reply refuses the refund the visitor asked for."
    finally:
        cli("suite", "ideal", "c-refund", "0", "--clear", "--log", log)
    # without an ideal answer, a judge that accepts the new reply fixes the turn
    report = json.loads(cli("eval", "gate", "--space", world["fixed"].url, "--log", log, "--judge",
                            world["judge"].url, "--format", "json").stdout)
    assert _outcomes(report)[("c-refund", 0)] == "fixed"
    assert _failing(report) == {}


def test_thumbs_up_suite_holds_unchanged_and_breaks_when_replies_change(world):
    log = str(world["log"])
    r = cli("suite", "add", "liked", "--rated", "up", "--log", log)
    assert r.returncode == 0 and "1 conversation(s)" in r.stdout
    r = cli("eval", "liked", "--space", world["prod"].url, "--log", log, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert _outcomes(json.loads(r.stdout)) == {("c-thanks", 0): "held"}
    r = cli("eval", "liked", "--space", world["fixed"].url, "--log", log)
    assert r.returncode == 1
    assert "FAIL c-thanks turn 0 [broke]" in r.stdout
    assert f"    reply: {IDEAL['thanks a lot']}" in r.stdout
    assert "    reference (logged): You said: thanks a lot" in r.stdout
    assert "0 fixed, 0 still failing, 1 broke, 0 held, 0 unjudged" in r.stdout
    # a golden suite holds every turn it keeps, the rated-down one too
    if "golden-set" not in load_suites(log):
        assert cli("suite", "add", "golden-set", "--id", "c-refund", "--golden", "--log", log).returncode == 0
    r = cli("eval", "golden-set", "--space", world["prod"].url, "--log", log, "--format", "json")
    assert r.returncode == 0 and _words(json.loads(r.stdout)) == (0, 0, 0, 2, 0, 0)


def test_handoff_suite(world):
    """A handed-off conversation: the turn before the request for a person is known-bad; the
    request holds when the Space hands off again (as the suite expects by default); what staff
    said is replayed through the staff routes, so the bot's later turn gets the same context,
    and no staff message becomes a bot turn."""
    log = str(world["log"])
    if "handoffs" not in load_suites(log):
        assert cli("suite", "add", "handoffs", "--handed-off", "--log", log).returncode == 0
    requested_before = sum(rec.get("kind") == "handoff_requested" for rec in world["prod"].records())
    r = cli("eval", "handoffs", "--space", world["prod"].url, "--log", log, "--format", "json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    turns = report["conversations"][0]["turns"]
    assert [(t["expect"], t["outcome"]) for t in turns] == [("bad", "still_failing"), ("handoff", "held"),
                                                           ("good", "held")]
    assert turns[1]["reply"] == NOTICE and turns[2]["same"]  # the staff's words reached the bot's context
    assert report["conversations"][0]["context_error"] is None
    replay_id = report["conversations"][0]["replay_id"]
    replayed = [rec for rec in world["prod"].records() if rec["conversation_id"] == replay_id]
    assert [rec["user_text"] for rec in replayed if "kind" not in rec] == [
        "my order is late", "talk to a person please", "and the invoice?"]  # three bot turns, no more
    assert [rec["kind"] for rec in replayed if "kind" in rec] == [
        "handoff_taken", "staff_message", "visitor_message", "handoff_returned"]
    assert next(rec for rec in replayed if rec.get("kind") == "staff_message")["text"] == STAFF_SAID
    # a replay asks nobody for a person: no new request reached the staff
    assert sum(rec.get("kind") == "handoff_requested" for rec in world["prod"].records()) == requested_before
    assert cli("eval", "handoffs", "--space", world["prod"].url, "--log", log, "--min-pass", "0.66").returncode == 0

    # the team wants the bot to answer now: handing off again is still failing ...
    r = cli("suite", "set", "handoffs", "--handoff-expect", "answer", "--log", log)
    assert r.returncode == 0 and "should get: answer" in r.stdout
    try:
        report = json.loads(cli("eval", "handoffs", "--space", world["prod"].url, "--log", log,
                                "--format", "json").stdout)
        assert [t["outcome"] for t in report["conversations"][0]["turns"]] == ["still_failing", "still_failing",
                                                                              "held"]
        # ... and a Space that answers what staff wanted, with no hand-off, passes
        for turn, text in ((0, "my order is late"), (1, "talk to a person please")):
            assert cli("suite", "ideal", "c-handoff", str(turn), IDEAL[text], "--log", log).returncode == 0
        r = cli("eval", "handoffs", "--space", world["fixed"].url, "--log", log, "--format", "json")
        assert r.returncode == 0, r.stdout[-2000:]
        assert [t["outcome"] for t in json.loads(r.stdout)["conversations"][0]["turns"]] == ["fixed", "fixed", "held"]
        # expecting a hand-off, that same Space broke the request for a person
        assert cli("suite", "set", "handoffs", "--handoff-expect", "handoff", "--log", log).returncode == 0
        r = cli("eval", "handoffs", "--space", world["fixed"].url, "--log", log)
        assert r.returncode == 1
        assert "FAIL c-handoff turn 1 [broke]: answered instead of handing to a person" in r.stdout
        assert f"    reference (hand-off): {NOTICE}" in r.stdout
    finally:
        cli("suite", "set", "handoffs", "--handoff-expect", "handoff", "--log", log)
        for turn in (0, 1):
            cli("suite", "ideal", "c-handoff", str(turn), "--clear", "--log", log)


def test_an_ideal_answer_is_a_second_way_for_a_known_good_turn_to_hold(world, tmp_path):
    """An unrated turn whose reply changed holds when it matches the ideal answer; a first run
    has no earlier run, so nothing is better or worse."""
    log = str(world["log"])
    r = cli("suite", "pick", "ideal", "c-refund-unrated", "--log", log)
    assert r.returncode == 0
    # the logged reply is far from what staff wanted; the new prompt gives the ideal answer
    assert cli("suite", "ideal", "c-refund-unrated", "0", REFUSAL, "--log", log).returncode == 0
    report = json.loads(cli("eval", "ideal", "--space", world["changed"].url, "--log", log,
                            "--format", "json").stdout)
    turn = report["conversations"][0]["turns"][0]
    assert turn["passed"] and turn["outcome"] == "held" and turn["similarity_ideal"] == 1.0
    assert turn["movement"] is None and report["baseline_run"] is None
    assert report["summary"]["better"] == 0 and report["summary"]["changed"] == 1


def test_exit_codes_usage_errors_and_the_default_space(world, tmp_path):
    _suite(world, "gate")
    log = str(world["log"])
    assert cli("eval", "no-such-suite", "--space", world["prod"].url, "--log", log).returncode == 2
    assert cli("eval", "gate", "--space", world["prod"].url, "--min-pass", "1.5", "--log", log).returncode == 2
    assert cli("eval", "gate", "--space", world["prod"].url, "--judge", "ftp://x", "--log", log).returncode == 2
    assert cli("eval", "gate", "--space", world["prod"].url, "--parallel", "0", "--log", log).returncode == 2
    # nothing listens on this port: nothing replayed, exit 1, the URL named
    from conftest import free_port

    down = f"http://127.0.0.1:{free_port()}"
    r = cli("eval", "gate", "--space", down, "--log", log)
    assert r.returncode == 1 and "cannot reach the Space" in r.stderr and "nothing was replayed" in r.stderr
    assert "Check the --space URL" in r.stderr
    # a judge that is down: the changed reply is unjudged (a judge error), counted as failed
    r = cli("eval", "gate", "--space", world["changed"].url, "--judge", down + "/v1", "--log", log,
            "--format", "json", "--timeout", "10")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["summary"]["judge_errors"] == 1 and report["summary"]["unjudged"] == 1
    assert _failing(report)[("c-refund", 0)]["status"] == "judge_error"
    # without --space: $CHAT_SPACE_URL, else the local Space (as replay and simulate do)
    r = cli("eval", "gate", "--log", log, "--format", "json", env={"CHAT_SPACE_URL": world["prod"].url})
    assert r.returncode == 1 and json.loads(r.stdout)["space"] == world["prod"].url
    r = cli("eval", "gate", "--log", log, "--format", "json", env={"CHAT_SPACE_URL": ""})
    assert r.returncode != 2 and "127.0.0.1:7860" in r.stdout + r.stderr


def test_space_down_mid_run_counts_failed_not_changed(world, tmp_path):
    """The Space is stopped once the run is under way: turns it never answered are failed and
    reported as not answered, never as changed."""
    log = str(world["log"])
    _suite(world, "gate")
    slow_model = _OpenAIServer("model", delay=1.0)
    slow = SpaceProcess(tmp_path / "slow" / "chat_logs.jsonl",
                        env={"CHAT_RESPONDER": "openai", "OPENAI_BASE_URL": slow_model.url,
                             "CHAT_OPERATOR_TOKEN": TOKEN})
    slow.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatcore", "eval", "gate", "--space", slow.url, "--log", log,
             "--parallel", "1", "--format", "json", "--timeout", "20"],
            cwd=ROOT, env={**os.environ, "CHAT_OPERATOR_TOKEN": TOKEN}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not slow_model.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow_model.requests, "the run never reached the Space"
        slow.stop()  # mid-run: the first reply is still being written
        out, err = proc.communicate(timeout=120)
    finally:
        slow.stop()
        slow_model.stop()
    assert proc.returncode == 1
    report = json.loads(out)
    s = report["summary"]
    assert s["errors"] >= 3 and s["changed"] == 0 and s["worse"] == 0
    assert s["failed"] == s["turns"] - s["passed"]
    errors = [t for c in report["conversations"] for t in c["turns"] if t["status"] == "error"]
    assert all(t["reason"].startswith("not answered") and t["reply"] == "" for t in errors)
    assert "not answered by the Space" in err


def test_a_turn_that_times_out_is_failed_and_the_run_goes_on(world):
    """One turn slower than the timeout: that turn is not answered (failed, not changed); the
    turns before it pass and the other conversations are replayed as usual."""
    from chatcore.staff.suites import Suite, SuiteConversation, SuiteTurn

    suite = Suite("timeouts")
    suite.conversations["t-slow"] = SuiteConversation("t-slow", [
        SuiteTurn(0, "hello", "You said: hello"),
        SuiteTurn(1, "take your time", "You said: take your time (message 2 in this conversation)")])
    suite.conversations["t-fast"] = SuiteConversation("t-fast", [SuiteTurn(0, "quick one", "You said: quick one")])
    # A timeout with room for a loaded machine; the slow turn takes 12 s, far past it.
    report = run_suite(suite, world["prod"].url, parallel=2, timeout=6, operator_token=TOKEN,
                       token_log_path=world["log"])
    turns = {(c["conversation_id"], t["turn"]): t for c in report["conversations"] for t in c["turns"]}
    assert turns[("t-slow", 0)]["passed"] and turns[("t-fast", 0)]["passed"]
    slow = turns[("t-slow", 1)]
    assert slow["status"] == "error" and "in time" in slow["reason"] and not slow["same"]
    s = report["summary"]
    assert (s["errors"], s["changed"], s["passed"], s["pass_rate"]) == (1, 0, 2, round(2 / 3, 4))


def test_conversations_replay_in_parallel_with_turns_in_order(world):
    """8 conversations through a model server that takes 0.3 s a reply: with parallel=4 the
    server sees several at once (overlap), and each conversation's replies keep their numbering."""
    log = world["log"]
    slow_model = _OpenAIServer("model", delay=0.3)
    slow = SpaceProcess(world["base"] / "par" / "chat_logs.jsonl",
                        env={"CHAT_RESPONDER": "openai", "OPENAI_BASE_URL": slow_model.url,
                             "CHAT_OPERATOR_TOKEN": TOKEN}).start()
    try:
        from chatcore.staff.suites import Suite, SuiteConversation, SuiteTurn

        suite = Suite("par")
        for i in range(8):
            cid = f"p-{i}"
            texts = [f"q{i} a", f"q{i} b", f"q{i} c"]
            turns = [SuiteTurn(k, t, f"You said: {t}" + (f" (message {k + 1} in this conversation)" if k else ""))
                     for k, t in enumerate(texts)]
            suite.conversations[cid] = SuiteConversation(cid, turns)
        seen = []
        report = run_suite(suite, slow.url, parallel=4, operator_token=TOKEN, token_log_path=log,
                           on_conversation=lambda d, n, c: seen.append((d, n)))
        assert slow_model.most_in_flight >= 2
        assert slow_model.most_in_flight <= 4
        assert report["summary"]["pass_rate"] == 1.0 and report["summary"]["changed"] == 0
        assert sorted(seen) == [(d, 8) for d in range(1, 9)]
    finally:
        slow.stop()
        slow_model.stop()


# --------------------------------------------------------------------------------- judge


def test_judge_prompt_values_are_not_read_as_placeholders():
    judge = Judge("http://127.0.0.1:9/v1", prompt="U={user_text} R={reference} I={ideal} N={reply}")
    try:
        text = judge.render("say {reply} and {ideal}", "ref", None, "new")
    finally:
        judge.close()
    assert text == "U=say {reply} and {ideal} R=ref I=(none) N=new"


@pytest.mark.parametrize("content, verdict", [
    ('{"pass": true, "reason": "fine"}', (True, "fine")),
    ('Here you go:\n```json\n{"pass": false, "reason": "wrong\\u001b[31m order"}\n```', (False, "wrong\ufffd[31m order")),
    ("FAIL: makes up a tracking number", (False, "makes up a tracking number")),
])
def test_parse_verdict(content, verdict):
    assert parse_verdict(content) == verdict


def test_parse_verdict_without_a_verdict_is_an_error():
    from chatcore.staff.evaluate import JudgeError

    with pytest.raises(JudgeError):
        parse_verdict("I think it is mostly fine")


# ------------------------------------------------------------------------------ dashboard


@pytest.fixture
def dashboard_env(world, monkeypatch):
    from conftest import apptest_knows_the_entry_navigates

    monkeypatch.setenv("CHAT_LOG_PATH", str(world["log"]))
    monkeypatch.setenv("CHAT_SPACE_URL", world["prod"].url)
    monkeypatch.setenv("CHAT_OPERATOR_TOKEN", TOKEN)
    monkeypatch.setenv("CHAT_TIMEZONE", "UTC")
    monkeypatch.delenv("CHAT_DASHBOARD_PASSWORD_HASH", raising=False)
    apptest_knows_the_entry_navigates(monkeypatch)
    yield world
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()


def _open(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_evaluate_page_runs_a_suite_and_shows_turns_reasons_and_history(dashboard_env):
    world = dashboard_env
    _suite(world, "gate")
    at = _open("pages/evaluate.py")
    at.selectbox(key="eval_suite").select("gate").run()
    at.text_input(key="eval_space").set_value(world["changed"].url)
    submit = next(b for b in at.button if "eval_form" in (b.key or ""))
    submit.click().run()
    assert not at.exception, at.exception
    report = at.session_state["eval_last"]
    assert report["suite"] == "gate" and report["summary"]["pass_rate"] == 0.5
    assert _outcomes(report) == {("c-refund", 0): "unjudged", ("c-refund", 1): "held",
                                 ("c-parcel", 0): "held", ("c-parcel", 1): "still_failing"}
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pass rate"] == "50%" and metrics["Turns passed"] == "2 / 4" and metrics["Changed"] == "1"
    assert (metrics["Fixed"], metrics["Still failing"], metrics["Broke"], metrics["Held"], metrics["Unjudged"]) == (
        "0", "1", "0", "2", "1")
    assert any("Gate fail: 0 fixed, 1 still failing, 0 broke, 2 held, 1 unjudged" in e.value for e in at.error)
    assert any("Rated down (known-bad reply)" in c.value for c in at.caption)
    assert any("unjudged · known-bad" in c.value for c in at.caption)
    # the failing conversation is open with the word diff, escaped, and the reason
    html = "".join(h.proto.body for h in at.main.get("html"))
    assert "<del" in html and "<ins" in html and "refunds.</ins>" in html
    assert any(m.value.startswith("**Reason:**") for m in at.markdown)
    # the run is saved beside the log and listed in the history
    assert any(r["run_id"] == report["run_id"] for r in __import__("chatcore.staff.evaluate").staff.evaluate.list_runs(world["log"], "gate"))
    assert report["run_id"] in at.selectbox(key="eval_pick").options

    # a second run against the Space that gives the answers staff wanted, half the turns needed:
    # the history has both, with a chart of the pass rate
    at.text_input(key="eval_space").set_value(world["fixed"].url)
    at.number_input(key="eval_min_pass").set_value(0.5)
    next(b for b in at.button if "eval_form" in (b.key or "")).click().run()
    assert not at.exception, at.exception
    second = at.session_state["eval_last"]
    assert second["summary"]["pass_rate"] == 0.5 and second["gate"] == "pass"  # no ideal, no judge: unjudged
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart"), [type(e).__name__ for e in at.main]
    assert any("Gate pass" in s.value for s in at.success)


def test_evaluate_page_with_the_space_down_runs_nothing(dashboard_env):
    from conftest import free_port

    _suite(dashboard_env, "gate")
    at = _open("pages/evaluate.py")
    at.text_input(key="eval_space").set_value(f"http://127.0.0.1:{free_port()}")
    next(b for b in at.button if "eval_form" in (b.key or "")).click().run()
    assert not at.exception
    assert any("Cannot reach the Space" in e.value and "nothing was replayed" in e.value for e in at.error)


def test_conversations_page_adds_to_a_suite_and_saves_an_ideal_answer(dashboard_env):
    log = dashboard_env["log"]
    at = _open("pages/conversations.py")
    at.selectbox(key="conv_pick").select("c-thanks").run()
    at.text_input(key="suite_name").set_value("from-page").run()
    at.checkbox(key="suite_golden").check().run()
    next(b for b in at.button if b.key == "suite_add_btn").click().run()
    assert not at.exception, at.exception
    suite = get_suite(log, "from-page")
    assert list(suite.conversations) == ["c-thanks"] and suite.golden
    assert suite.conversations["c-thanks"].turns[0].reference == "You said: thanks a lot"
    assert suite.conversations["c-thanks"].turns[0].kind == "good"  # rated up
    at.text_area(key="suite_ideal_text_c-thanks_0").set_value("You're welcome!").run()
    next(b for b in at.button if b.key == "suite_ideal_btn").click().run()
    assert not at.exception, at.exception
    assert get_suite(log, "from-page").conversations["c-thanks"].turns[0].ideal == "You're welcome!"
    # a bad suite name is an error on the page, nothing written
    at.text_input(key="suite_name").set_value("../../x").run()
    next(b for b in at.button if b.key == "suite_add_btn").click().run()
    assert any("suite name" in e.value for e in at.error)


@pytest.mark.skipif(not hasattr(__import__("chatcore.config").config, "ensure_operator_token"),
                    reason="this Space does not check the staff token yet")
def test_a_run_without_the_staff_token_replays_nothing(world, tmp_path):
    """source=replay is a staff source: with a wrong token every turn is refused by the Space,
    reported as not answered, and the gate fails."""
    _suite(world, "gate")
    replays_before = sum(rec.get("source") == "replay" for rec in world["prod"].records())
    r = cli("eval", "gate", "--space", world["prod"].url, "--log", str(world["log"]), "--format", "json",
            env={"CHAT_OPERATOR_TOKEN": "not-the-token"})
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["summary"]["errors"] == report["summary"]["turns"] == 4
    assert report["summary"]["changed"] == 0
    assert "not-the-token" not in r.stdout + r.stderr
    assert sum(rec.get("source") == "replay" for rec in world["prod"].records()) == replays_before
