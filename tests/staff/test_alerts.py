"""The alerts watcher as its own process, posting to a receiver the test starts on 127.0.0.1,
with a real Space writing the log."""
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
from gradio_client import Client

from chatcore.log import annotations
from chatcore.staff.alerts import EVENTS, read_status
from chatcore.log.writer import LogWriter

from conftest import ROOT, free_port, stop_group
from test_pages import _env  # noqa: F401  (AppTest runs the dashboard's entry script)

DASH = "http://dash.example.test:8501"


class Receiver:
    """A webhook receiver: records each POST (path, JSON body); ``hang`` holds requests unanswered."""

    def __init__(self, port: int | None = None, hang: bool = False):
        self.port = port or free_port()
        self.hang = hang
        self.got: list[tuple[str, dict]] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.arrived.set()
                if outer.hang:
                    outer.release.wait(120)
                    return
                outer.got.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def events(self, path: str) -> list[dict]:
        return [b for p, b in self.got if p == path]


class Watcher:
    """``python -m chatcore alerts`` in a subprocess."""

    def __init__(self, log: Path, hooks: str, space: str, env: dict | None = None):
        self.log = log
        self.out = log.parent.parent / f"alerts-{time.monotonic_ns()}.out"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHAT_ALERT_WEBHOOKS": hooks,
                    "CHAT_DASHBOARD_URL": DASH, **(env or {})}
        self.space = space
        self.proc = None

    def start(self) -> "Watcher":
        status = self.log.parent / ".chatcore-alerts" / "status.json"
        before = status.stat().st_mtime_ns if status.exists() else None
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatcore", "alerts", "--log", str(self.log), "--space", self.space,
                 "--health-every", "0.5"],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        # ready once it saved its state (its reading position is taken)
        wait_for(lambda: status.exists() and status.stat().st_mtime_ns != before, 60, self)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop_group(self.proc, 20)

    def output(self) -> str:
        return self.out.read_text(errors="replace")[-3000:]


def wait_for(cond, timeout: float, watcher: Watcher | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if watcher is not None and watcher.proc is not None and watcher.proc.poll() is not None:
            raise AssertionError(f"the watcher exited:\n{watcher.output()}")
        time.sleep(0.1)
    raise AssertionError("timed out" + (f"\n{watcher.output()}" if watcher else ""))


@pytest.fixture
def receivers():
    made = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def watchers():
    made = []

    def make(*args, **kw) -> Watcher:
        w = Watcher(*args, **kw)
        made.append(w)
        return w.start()

    yield make
    for w in made:
        w.stop()


def _chat(url: str, text: str, cid: str) -> str:
    client = Client(url, verbose=False)
    try:
        return client.predict(message={"text": text, "files": []}, conversation_id=cid, api_name="/chat")
    finally:
        client.close()


def test_each_event_kind_once_slack_and_json(tmp_path, receivers, watchers, space_factory):
    rx = receivers()
    log = tmp_path / "logs" / "chat_logs.jsonl"
    # every reply fails: the model server is a closed loopback port
    space = space_factory(log, env={"CHAT_RESPONDER": "openai",
                                    "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"})
    watchers(log, f"json:{rx.url('/json')},slack:{rx.url('/slack')}", space.url,
             env={"CHAT_ALERT_KEYWORDS": "refund,re:law(yer|suit)", "CHAT_ALERT_ERRORS": "3/5",
                  "CHAT_ALERT_SPEND_USD": "0.5"})

    _chat(space.url, "I want a REFUND for order 12", "alert-kw")
    _chat(space.url, "Can I talk to a person please?", "alert-person")  # a handoff request: no bot call
    _chat(space.url, "what are your opening hours?", "alert-hours")
    _chat(space.url, "hello again", "alert-plain")  # the third failed reply: a burst
    annotations.record_feedback(log, "alert-plain", 0, "down")
    annotations.record_feedback(log, "alert-plain", 0, "up")
    from chatcore.log.records import make_record

    for cost in (0.3, 0.3):  # two priced turns (as a model with CHAT_PRICES logs them): over 0.5 USD today
        LogWriter(log).append(make_record(conversation_id="alert-spend", turn=0, user_text="q", response="a",
                                          latency_ms=1, source="api", backend="openai", model="m", cost_usd=cost))
    wait_for(lambda: {b["event"] for b in rx.events("/json")} >= {"keyword", "person_requested", "error_burst",
                                                                 "thumbs_down", "spend"}, 60)
    # failing log writes: the log file becomes a folder, the Space counts a failed write
    os.rename(log, log.with_name("moved.jsonl"))
    log.mkdir()
    _chat(space.url, "this turn cannot be logged", "alert-nolog")
    wait_for(lambda: space.health()["write_errors"] >= 1, 30)
    wait_for(lambda: len(rx.events("/json")) >= 6 and len(rx.events("/slack")) >= 6, 60)
    time.sleep(2)  # anything sent twice would arrive meanwhile

    got = rx.events("/json")
    assert sorted(b["event"] for b in got) == sorted(EVENTS), got
    by_event = {b["event"]: b for b in got}
    assert by_event["keyword"]["conversation_id"] == "alert-kw" and by_event["keyword"]["detail"] == "keyword: refund"
    assert by_event["person_requested"]["conversation_id"] == "alert-person"
    assert by_event["thumbs_down"]["conversation_id"] == "alert-plain" and by_event["thumbs_down"]["turn"] == 0
    assert by_event["error_burst"]["conversation_id"] == "alert-plain"
    assert by_event["log_write_failed"]["conversation_id"] is None
    assert by_event["spend"]["conversation_id"] is None and "0.60 USD" in by_event["spend"]["detail"]
    for b in got:
        assert set(b) >= {"id", "event", "conversation_id", "turn", "time", "link"}
        if b["conversation_id"]:
            assert b["link"] == f"{DASH}/conversations?conversation={b['conversation_id']}"
    slack = rx.events("/slack")
    assert len(slack) == 6 and all(list(b) == ["text"] for b in slack)
    assert any("Thumbs down" in b["text"] and "alert-plain" in b["text"] for b in slack)
    everything = json.dumps(rx.got)
    assert "order 12" not in everything and "talk to a person please" not in everything  # no visitor text
    status = read_status(log.with_name("moved.jsonl"))
    assert {a["event"] for a in status["recent"]} == set(EVENTS)
    assert all(not h["failing"] and h["queued"] == 0 for h in status["hooks"])
    assert "127.0.0.1" in status["hooks"][0]["name"] and "/json" not in json.dumps(status["hooks"])


def test_receiver_down_then_up_each_alert_once_across_a_restart(tmp_path, receivers, watchers):
    port = free_port()
    log = tmp_path / "logs" / "chat_logs.jsonl"
    w = LogWriter(log)
    for i in range(3):
        assert w.append({"ts": "2026-11-21T10:00:00Z", "conversation_id": f"c{i}", "turn": 0,
                         "user_text": "hi", "response": ["hello"], "history": []})
    down_space = f"http://127.0.0.1:{free_port()}"
    watcher = watchers(log, f"http://127.0.0.1:{port}/hook", down_space)
    for i in range(3):
        annotations.record_feedback(log, f"c{i}", 0, "down")
    status_of = lambda: read_status(log) or {}  # noqa: E731
    wait_for(lambda: any(h.get("failing") and h.get("queued") == 3 for h in status_of().get("hooks", [])), 60,
             watcher)
    rx = receivers(port=port)
    wait_for(lambda: len(rx.got) >= 3, 90, watcher)
    wait_for(lambda: not status_of()["hooks"][0]["failing"], 30, watcher)

    # stopped, one more rating meanwhile, started again: only the new one is sent
    watcher.stop()
    annotations.record_feedback(log, "c1", 0, "up")
    annotations.record_feedback(log, "c0", 0, "down")  # the same again: stored once, no new alert
    annotations.record_feedback(log, "c2", 0, "up")
    annotations.record_feedback(log, "c2", 0, "down")  # changed back: a new line, a new alert
    w.append({"ts": "2026-11-21T10:05:00Z", "conversation_id": "c9", "turn": 0,
              "user_text": "get me a live agent", "response": ["ok"], "history": []})
    watchers(log, f"http://127.0.0.1:{port}/hook", down_space)
    wait_for(lambda: len(rx.got) >= 5, 60)
    time.sleep(2)
    events = [(b["event"], b["conversation_id"]) for _, b in rx.got]
    assert sorted(events) == sorted([("thumbs_down", "c0"), ("thumbs_down", "c1"), ("thumbs_down", "c2"),
                                     ("thumbs_down", "c2"), ("person_requested", "c9")])
    ids = [b["id"] for _, b in rx.got]
    assert len(ids) == len(set(ids))


def test_overview_shows_alerts_and_failing_delivery(tmp_path, monkeypatch):
    from test_pages import open_page

    from chatcore.staff.alerts import STATE_DIR

    log = tmp_path / "chat.jsonl"
    log.write_text("")
    d = tmp_path / STATE_DIR
    d.mkdir()
    (d / "status.json").write_text(json.dumps({
        "recent": [{"id": "a1", "event": "thumbs_down", "conversation_id": "conv-7", "turn": 2,
                    "time": "2026-11-21T10:00:00Z", "detail": "by visitor"}],
        "hooks": [{"name": "https://hooks.example/…#abcd", "failing": True, "last_error": "ConnectError",
                   "queued": 4}]}))
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CHAT_TIMEZONE", "UTC")
    at = open_page("overview")
    assert not at.exception
    assert any("is failing (ConnectError); 4 alert(s) waiting" in w.value for w in at.warning)
    table = next(f.value for f in at.dataframe if "event" in f.value.columns)
    assert list(table["conversation_id"]) == ["conv-7"] and list(table["event"]) == ["thumbs_down"]


def test_a_chat_turn_is_answered_and_logged_while_the_receiver_hangs(tmp_path, receivers, watchers,
                                                                     space_factory):
    rx = receivers(hang=True)
    log = tmp_path / "logs" / "chat_logs.jsonl"
    space = space_factory(log)
    watchers(log, rx.url("/hook"), space.url, env={"CHAT_ALERT_KEYWORDS": "refund"})
    annotations.record_feedback(log, "hang-0", 0, "down")
    assert rx.arrived.wait(60), "the watcher never posted"  # a delivery is now hanging
    reply = _chat(space.url, "a refund please", "hang-1")
    assert "a refund please" in reply
    assert [r["conversation_id"] for r in space.records()] == ["hang-1"]
    assert not rx.got  # still hanging


def test_forget_reaches_the_watcher_and_old_ratings_are_not_sent_again(tmp_path, receivers, watchers):
    from chatcore.log.retention import forget

    rx = receivers()
    log = tmp_path / "logs" / "chat_logs.jsonl"
    w = LogWriter(log)
    w.append({"ts": "2026-11-21T10:00:00Z", "conversation_id": "keep-1", "turn": 0, "user_text": "hi",
              "response": "hello"})
    watcher = watchers(log, rx.url("/hook"), f"http://127.0.0.1:{free_port()}",
                       env={"CHAT_ALERT_KEYWORDS": "lawyer"})
    w.append({"ts": "2026-11-21T10:01:00Z", "conversation_id": "gone-1", "turn": 0,
              "user_text": "my lawyer will call", "response": "ok"})
    annotations.record_feedback(log, "keep-1", 0, "down")
    annotations.record_feedback(log, "gone-1", 0, "down")
    wait_for(lambda: len(rx.got) >= 3, 60, watcher)
    status = log.parent / ".chatcore-alerts" / "status.json"
    wait_for(lambda: b"gone-1" in status.read_bytes(), 30, watcher)

    forget(log, "gone-1", by="tester")
    # the watcher drops it from what it keeps, and sends nothing again
    wait_for(lambda: b"gone-1" not in status.read_bytes() and b"keep-1" in status.read_bytes(), 30, watcher)
    w.append({"ts": "2026-11-21T10:02:00Z", "conversation_id": "keep-1", "turn": 1,
              "user_text": "a lawyer again", "response": "ok"})
    wait_for(lambda: len(rx.got) >= 4, 60, watcher)
    time.sleep(2)
    assert sorted((b["event"], b["conversation_id"]) for _, b in rx.got) == sorted([
        ("keyword", "gone-1"), ("thumbs_down", "keep-1"), ("thumbs_down", "gone-1"), ("keyword", "keep-1")])
    watcher.stop()
    for p in log.parent.rglob("*"):
        if p.is_file() and p.name != "audit.jsonl":
            assert b"gone-1" not in p.read_bytes(), p
    state = (log.parent / ".chatcore-alerts" / "state.json").read_text()
    assert "/hook" not in state and "127.0.0.1" not in state  # webhooks by hash only
    assert "/hook" not in watcher.output()  # nor in what it prints


# ------------------------------------------------------------------------ retrying


class Answering:
    """A webhook that answers each POST with the next status of ``statuses`` (the last one repeats)."""

    def __init__(self, statuses: list[int]):
        self.statuses, self.posts = list(statuses), 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = outer.statuses[min(outer.posts, len(outer.statuses) - 1)]
                outer.posts += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("statuses, posts, given_up", [
    ([404], 5, 1),               # refused for good: dropped after 5 tries
    ([503, 429, 500, 200], 4, 0),  # refused for now: tried until it is taken
])
def test_delivery_retries_with_backoff_and_gives_up_only_on_a_lasting_refusal(tmp_path, statuses, posts, given_up):
    from chatcore.staff.alerts import Config, Hook, Watcher as InProcess

    hook = Answering(statuses)
    log = tmp_path / "logs" / "chat_logs.jsonl"
    LogWriter(log)
    watcher = InProcess(Config(log_path=log, hooks=[Hook.parse(hook.url)], space_url=None, max_backoff_s=0.05))
    stop = threading.Event()
    runner = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    runner.start()
    try:
        watcher.raise_alert("thumbs_down", "c1", 0, "2026-11-21T10:00:00Z")
        queue = next(iter(watcher.queues.values()))
        wait_for(lambda: not queue, 30)
        time.sleep(0.3)  # time for a post too many, if there were one
        state = next(iter(watcher.hook_state.values()))
        assert hook.posts == posts
        assert state.get("given_up", 0) == given_up
        assert state["attempts"] == 0
    finally:
        stop.set()
        runner.join(30)
        hook.stop()


def test_the_retry_policy_doubles_its_wait_up_to_a_cap_and_stops_at_once():
    from chatcore import retry

    stop = threading.Event()
    waits, tries = [], []

    def note(state):
        waits.append(state.next_action.sleep)
        if len(waits) == 6:
            stop.set()

    policy = retry.backoff(first=0.5, most=3.0, stop=stop, before_sleep=note).copy(sleep=lambda s: None)
    with pytest.raises(OSError):
        for attempt in policy:
            with attempt:
                tries.append(1)
                raise OSError("down")
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert len(tries) == 7  # the try after the last wait, then the stop ends it


def test_an_alert_dropped_while_it_is_retried_is_not_sent_again(tmp_path):
    """A conversation forgotten while its alert waits for a failing webhook: the retries stop."""
    from chatcore.staff.alerts import Config, Hook, Watcher as InProcess

    hook = Answering([503])
    log = tmp_path / "logs" / "chat_logs.jsonl"
    watcher = InProcess(Config(log_path=log, hooks=[Hook.parse(hook.url)], space_url=None, max_backoff_s=0.05))
    stop = threading.Event()
    runner = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    runner.start()
    try:
        watcher.raise_alert("thumbs_down", "forget-me", 0, "2026-11-21T10:00:00Z")
        wait_for(lambda: hook.posts >= 3, 30)
        watcher.drop_conversations(lambda cid: cid == "forget-me")
        after = hook.posts
        time.sleep(0.5)  # ten retry periods
        assert hook.posts <= after + 1  # at most the one already under way
    finally:
        stop.set()
        runner.join(30)
        hook.stop()


# ------------------------------------------------------------------------ a shard rewritten in place


def test_a_shard_rewritten_in_place_raises_nothing_twice(tmp_path):
    """Lines read again after their shard was truncated or rewritten in place (not through
    forget) are the truth: spend and error counts are not doubled, no alert fires again."""
    from chatcore.staff.alerts import Config, Watcher as InProcess

    log = tmp_path / "logs" / "chat_logs.jsonl"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"")
    watcher = InProcess(Config(log_path=log, hooks=[], space_url=None, spend_usd=1.0, errors_n=3,
                               keywords=[("lawyer", __import__("re").compile("lawyer"))]))
    watcher.poll_once()  # takes the starting position

    def line(turn, text, cost=0.0, error=None):
        rec = {"ts": f"2026-11-21T10:0{turn}:00Z", "conversation_id": "rw-1", "turn": turn, "user_text": text,
               "response": "ok", "cost_usd": cost, **({"error": error} if error else {})}
        return (json.dumps(rec) + "\n").encode()

    with open(log, "ab") as f:
        f.write(line(0, "my lawyer says hi", 0.6) + line(1, "x", error="boom") + line(2, "y", error="boom"))
    watcher.poll_once()
    assert [a["event"] for a in watcher.recent] == ["keyword"]
    # corrected in place: the same turns (one more word), then one more turn
    with open(log, "r+b") as f:
        f.truncate(0)
        f.write(line(0, "my lawyer says hi!", 0.6) + line(1, "x", error="boom") + line(2, "y", error="boom")
                + line(3, "z", 0.3))
    watcher.poll_once()
    assert watcher.spend["usd"] == pytest.approx(0.9)
    assert [a["event"] for a in watcher.recent] == ["keyword"]  # no spend, no error burst
    # truncated: what it held is gone; what is written next counts from there
    with open(log, "r+b") as f:
        f.truncate(0)
    watcher.poll_once()
    with open(log, "ab") as f:
        f.write(line(4, "w", 0.5))
    watcher.poll_once()
    assert watcher.spend["usd"] == pytest.approx(0.5)
    assert [a["event"] for a in watcher.recent] == ["keyword"]
