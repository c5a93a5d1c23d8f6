"""The Space over real HTTP: the /chat contract, concurrency, bad input, health."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import ROOT


def _wait_for_lines(space, n, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = space.records()
        if len(recs) >= n:
            return recs
        time.sleep(0.05)
    return space.records()


def test_contract_predict_and_streamed_submit(space):
    cid = str(uuid.uuid4())
    client = Client(space.url, verbose=False)
    reply = client.predict(message={"text": "Where is my order?", "files": []},
                           conversation_id=cid, api_name="/chat")
    assert reply == "You said: Where is my order?"

    job = client.submit(message={"text": "one two three four", "files": []},
                        conversation_id=cid, api_name="/chat")
    chunks = [c for c in job]
    assert len(chunks) >= 4, chunks  # streamed word by word, not in one piece
    assert chunks[-1].startswith("You said: one two three four")
    assert all(chunks[i + 1].startswith(chunks[i]) for i in range(len(chunks) - 1))

    recs = [r for r in space.records() if r["conversation_id"] == cid]
    assert [r["turn"] for r in recs] == [0, 1]
    assert [r["user_text"] for r in recs] == ["Where is my order?", "one two three four"]
    assert recs[0]["source"] == "api" and recs[0]["backend"] == "echo"
    assert recs[1]["response"] == chunks[-1]
    assert all(r["v"] == 1 and r["ts"].endswith("Z") and r["error"] is None for r in recs)
    assert all(isinstance(r["latency_ms"], float) for r in recs)


def test_contract_js_gradio_client(space):
    """The widget's own call through @gradio/client from npm, run by node."""
    if not (ROOT / "tests/js/node_modules/@gradio/client").exists():
        pytest.fail("run `npm ci --prefix tests/js` first (the test command does it)")
    cid = f"js-{uuid.uuid4()}"
    out = subprocess.run(["node", str(ROOT / "tests/js/contract.mjs"), space.url, cid],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["first"] == "You said: Hello from the widget"
    assert len(result["chunks"]) > 3 and result["chunks"][-1].startswith("You said: Stream this reply please")
    assert "Invalid conversation_id" in result["rejected"]
    recs = [r for r in space.records() if r["conversation_id"] == cid]
    assert [(r["turn"], r["source"]) for r in recs] == [(0, "api"), (1, "widget")]
    assert not [r for r in space.records() if r["conversation_id"] == "../../etc/passwd"]


def test_missing_conversation_id_gets_a_uuid(space):
    before = len(space.records())
    client = Client(space.url, verbose=False)
    client.predict(message={"text": "no id here", "files": []}, api_name="/chat")
    rec = _wait_for_lines(space, before + 1)[-1]
    assert rec["user_text"] == "no id here"
    assert uuid.UUID(rec["conversation_id"])
    assert space.health()["generated_conversation_ids"] >= 1


@pytest.mark.parametrize("bad_id, why", [
    ("../../etc/passwd", "may only contain"),
    ("abc\ndef", "may only contain"),
    ("x" * 10_000, "longer than 128"),
    ("<script>alert(1)</script>", "may only contain"),
])
def test_hostile_ids_are_refused_and_never_logged(space, bad_id, why):
    before = space.records()
    client = Client(space.url, verbose=False)
    with pytest.raises(AppError, match=why):
        client.predict(message={"text": "hi", "files": []}, conversation_id=bad_id, api_name="/chat")
    assert space.records() == before


def test_oversize_and_empty_messages_are_refused(space):
    before = space.records()
    client = Client(space.url, verbose=False)
    with pytest.raises(AppError, match="too long"):
        client.predict(message={"text": "é" * 20_000, "files": []},  # 40 KB of UTF-8
                       conversation_id="big-1", api_name="/chat")
    with pytest.raises(AppError, match="empty"):
        client.predict(message={"text": "   ", "files": []}, conversation_id="empty-1", api_name="/chat")
    assert space.records() == before
    # Exactly at the cap is accepted.
    client.predict(message={"text": "a" * 32 * 1024, "files": []}, conversation_id="cap-1", api_name="/chat")
    assert _wait_for_lines(space, len(before) + 1)[-1]["conversation_id"] == "cap-1"


def test_twenty_concurrent_clients_five_turns_each(space):
    ids = [f"load-{i}-{uuid.uuid4().hex[:8]}" for i in range(20)]
    errors: list[BaseException] = []

    def visitor(cid: str) -> None:
        try:
            client = Client(space.url, verbose=False)
            for t in range(5):
                reply = client.predict(message={"text": f"{cid} turn {t}", "files": []},
                                       conversation_id=cid, api_name="/chat")
                assert reply.startswith(f"You said: {cid} turn {t}")
        except BaseException as exc:  # collected: asserted below
            errors.append(exc)

    threads = [threading.Thread(target=visitor, args=(cid,)) for cid in ids]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[:3]
    recs = [r for r in space.records() if r["conversation_id"] in set(ids)]
    assert len(recs) == 100
    for cid in ids:
        mine = sorted((r for r in recs if r["conversation_id"] == cid), key=lambda r: r["turn"])
        assert [r["turn"] for r in mine] == [0, 1, 2, 3, 4]
        # No cross-talk: every line of this conversation carries its own text and reply.
        assert [r["user_text"] for r in mine] == [f"{cid} turn {t}" for t in range(5)]
        assert all(r["response"].startswith(f"You said: {r['user_text']}") for r in mine)
        assert all(r["source"] == "api" for r in mine)


def test_conversation_id_not_session_decides_context(space):
    """One client switching ids does not carry history across conversations."""
    client = Client(space.url, verbose=False)
    a, b = f"ctx-a-{uuid.uuid4().hex[:6]}", f"ctx-b-{uuid.uuid4().hex[:6]}"
    client.predict(message={"text": "first", "files": []}, conversation_id=a, api_name="/chat")
    client.predict(message={"text": "second", "files": []}, conversation_id=a, api_name="/chat")
    reply_b = client.predict(message={"text": "other", "files": []}, conversation_id=b, api_name="/chat")
    assert reply_b == "You said: other"
    # A new client (e.g. the widget after a reload) continues conversation a.
    reply_a = Client(space.url, verbose=False).predict(
        message={"text": "third", "files": []}, conversation_id=a, api_name="/chat")
    assert reply_a.endswith("(message 3 in this conversation)")
    turns = [r["turn"] for r in space.records() if r["conversation_id"] == a]
    assert turns == [0, 1, 2]


def test_health_route(space):
    h = space.health()
    assert h["status"] == "ok" and h["responder"] == "echo"
    assert h["log_path"] == str(space.log_path)
    assert h["turns_logged"] == len(space.records())
    assert h["write_errors"] == 0


def test_turn_numbers_continue_after_restart(space_factory, tmp_path):
    log = tmp_path / "restart" / "log.jsonl"
    sp = space_factory(log)
    Client(sp.url, verbose=False).predict(message={"text": "a", "files": []},
                                          conversation_id="keep-1", api_name="/chat")
    sp.stop()
    sp2 = space_factory(log)
    Client(sp2.url, verbose=False).predict(message={"text": "b", "files": []},
                                           conversation_id="keep-1", api_name="/chat")
    assert [r["turn"] for r in sp2.records()] == [0, 1]


def test_failed_log_write_never_breaks_the_reply(space_factory, tmp_path):
    log = tmp_path / "blocked" / "log.jsonl"
    log.mkdir(parents=True)  # a folder where the file should be: every write fails
    sp = space_factory(log)
    client = Client(sp.url, verbose=False)
    assert client.predict(message={"text": "still answered", "files": []},
                          conversation_id="w-1", api_name="/chat") == "You said: still answered"
    h = sp.health()
    assert h["write_errors"] == 1 and h["turns_logged"] == 0
    assert h["last_write_error"]
    shutil.rmtree(log)  # the disk "comes back": writing resumes
    client.predict(message={"text": "written now", "files": []}, conversation_id="w-1", api_name="/chat")
    assert [r["user_text"] for r in sp.records()] == ["written now"]
    assert sp.health()["turns_logged"] == 1


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an interval ending as another starts does not overlap it)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_peak_overlap_counts_streams_open_at_once():
    assert peak_overlap([(0, 1), (1, 2), (2, 3)]) == 1  # one after the other: serial
    assert peak_overlap([(0, 3), (1, 4), (2, 5), (6, 7)]) == 3


def test_concurrency_is_not_one(space_factory, tmp_path):
    """Ten slow streamed turns are open at the same time, both as the clients see them and in the log.

    Proof by overlap, not by timing: a Space serving one turn at a time (CHAT_CONCURRENCY=1)
    never has a second stream open before the first one's last word, however fast or slow
    the machine, and this test fails then.
    """
    import time

    n, words = 10, 12
    sp = space_factory(tmp_path / "slow" / "log.jsonl", env={"CHAT_ECHO_DELAY": "0.1"})
    clients = [Client(sp.url, verbose=False) for _ in range(n)]  # connected before the race starts
    start = threading.Barrier(n)
    seen: dict[int, tuple[float, float]] = {}  # client side: first partial reply .. last one
    text = " ".join(f"w{i}" for i in range(words))

    def turn(i: int) -> str:
        start.wait(30)
        job = clients[i].submit(message={"text": text, "files": []}, conversation_id=f"par-{i}", api_name="/chat")
        first = last = None
        for _ in job:  # each partial reply as it streams in
            last = time.monotonic()
            first = first or last
        seen[i] = (first, last)
        return job.result()

    with ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(turn, range(n)))
    assert all(r.startswith("You said: " + text) for r in replies)
    assert peak_overlap(list(seen.values())) >= n // 2, seen  # one at a time would give 1

    # The Space's own view: each logged turn ran from ts - latency_ms to ts.
    recs = [r for r in _wait_for_lines(sp, n) if r["conversation_id"].startswith("par-")]
    assert len(recs) == n
    spans = []
    for r in recs:
        end = datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()
        spans.append((end - r["latency_ms"] / 1000, end))
    assert peak_overlap(spans) >= n // 2, spans


def test_cors_allows_localhost_and_refuses_others(space):
    ok = httpx.options(space.url + "/gradio_api/call/chat", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert ok.headers.get("access-control-allow-origin") == "http://localhost:3000"
    bad = httpx.options(space.url + "/gradio_api/call/chat", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert bad.headers.get("access-control-allow-origin") != "https://evil.example"
