"""Faults: a writer killed mid-burst, a torn fragment, a full disk — nothing else is lost."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from gradio_client import Client

from chatcore.store import LogStore
from chatcore.log.writer import LogWriter
from chatcore.log.records import make_record
from conftest import ROOT

BURST = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from chatcore.log.records import make_record
    from chatcore.log.writer import LogWriter
    w = LogWriter(sys.argv[1])
    i = 0
    while True:
        w.append(make_record(conversation_id="burst", turn=i, user_text="x" * (50 + i % 3000),
                             response="y" * (i % 9000), latency_ms=1, source="api", backend="echo"))
        if i == 200:
            print("ready", flush=True)
        i += 1
""")

FRAGMENT = textwrap.dedent("""
    import os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
    os.write(fd, b'{"v":1,"ts":"2026-11-21T10:00:00.000Z","conversation_id":"torn","user_te')
    print("written", flush=True)
    time.sleep(60)
""")


def test_kill_9_mid_burst_loses_nothing_but_the_torn_line(tmp_path):
    log = tmp_path / "log.jsonl"
    store = LogStore(log)
    writer = subprocess.Popen([sys.executable, "-c", BURST.format(root=str(ROOT)), str(log)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    store.refresh()  # reading while the burst is being written
    time.sleep(0.3)
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    # A second process dies half-way through a line of its own.
    torn = subprocess.Popen([sys.executable, "-c", FRAGMENT, str(log)], stdout=subprocess.PIPE, text=True)
    assert torn.stdout.readline().strip() == "written"
    torn.send_signal(signal.SIGKILL)
    torn.wait(10)

    store.refresh()
    assert store.stats["pending_bytes"] > 0 and store.stats["bad_total"] == 0  # not complete yet: pending
    # Life goes on: the next turn is written whole, and the fragment becomes one bad line.
    assert LogWriter(log).append(make_record(conversation_id="after", turn=0, user_text="back",
                                             response="ok", latency_ms=1, source="api", backend="echo"))
    store.refresh()
    frame = store.frame
    burst = sorted(frame[frame["conversation_id"] == "burst"]["turn"].tolist())
    assert len(burst) > 200 and burst == list(range(len(burst)))  # contiguous: nothing lost
    assert frame[frame["conversation_id"] == "after"]["user_text"].tolist() == ["back"]
    assert store.stats["bad_total"] == 1 and store.stats["pending_bytes"] == 0
    # The same figures from a cold read.
    fresh = LogStore(log, cache_dir=tmp_path / "cold-cache")
    fresh.refresh()
    assert len(fresh.frame) == len(frame) and fresh.stats["bad_total"] == 1


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return apply


def test_disk_full_space_keeps_answering_and_resumes(space_factory, tmp_path):
    """RLIMIT_FSIZE stands in for a full disk; lifting it is the disk coming back."""
    log = tmp_path / "full" / "log.jsonl"
    sp = space_factory(log, preexec=_limit_file_size(3000))
    try:
        client = Client(sp.url, verbose=False)
        replies = [client.predict(message={"text": f"turn {i} " + "z" * 500, "files": []},
                                  conversation_id="full-1", api_name="/chat") for i in range(8)]
        assert all(r.startswith("You said: turn") for r in replies)  # every visitor got an answer
        h = sp.health()
        assert h["write_errors"] >= 1 and "too large" in h["last_write_error"]
        assert h["turns_logged"] + h["write_errors"] == 8
        size = log.stat().st_size
        assert size <= 3000
        assert all(json.loads(l) for l in log.read_text().splitlines())  # only whole lines
        # Space comes back.
        resource.prlimit(sp.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        client.predict(message={"text": "after the disk came back", "files": []}, conversation_id="full-1",
                       api_name="/chat")
        assert sp.records()[-1]["user_text"] == "after the disk came back"
        assert sp.health()["turns_logged"] == h["turns_logged"] + 1
    finally:
        sp.stop()


def test_a_space_that_stops_mid_reply_is_reported_at_once(space_factory, tmp_path):
    """The Space goes away while a reply is streaming: the caller hears so from the dropped
    event stream, not after its (here ten-minute) timeout; the next call says it cannot reach it."""
    from chatcore.remote.client import SpaceClient, SpaceError

    sp = space_factory(tmp_path / "logs" / "chat_logs.jsonl", env={"CHAT_ECHO_DELAY": "0.3"})
    client = SpaceClient(sp.url, timeout=600, operator_token=sp.token())
    parts = []
    try:
        with pytest.raises(SpaceError) as err:
            for part in client.stream("one two three four five six seven eight nine ten", "mid-reply", "api"):
                parts.append(part)
                if len(parts) == 2:
                    sp.stop()  # the reply has started: half of it was streamed
        assert err.value.kind == "unreachable"
        assert "stopped answering in the middle of the reply" in str(err.value)
        streamed = "".join(parts)  # what came before it went away: a start, not the whole reply
        assert streamed.startswith("You said:") and not streamed.endswith("ten")
        with pytest.raises(SpaceError) as again:
            client.send("still there?", "mid-reply")
        assert again.value.kind == "unreachable"
    finally:
        client.close()
