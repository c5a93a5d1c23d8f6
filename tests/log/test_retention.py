"""Forgetting a conversation and retention, on a live log: writer processes append,
a tail follows and a store reads while lines and shards are removed."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from chatcore.log import annotations
from chatcore.log.records import make_record
from chatcore.log.retention import find_matching, forget, retention
from chatcore.config import Settings
from chatcore.store import LogStore
from chatcore.dashboard.views import LiveFeed
from chatcore.log.writer import LogWriter

from test_pages import _env  # noqa: F401  (AppTest runs the dashboard's entry script)

from conftest import ROOT  # noqa: E402

SECRET = "SECRET-FORGET-ME-7731"
TARGET = "forget-target-1"
WRITERS = 4


def _rec(cid: str, turn: int, text: str) -> dict:
    return make_record(conversation_id=cid, turn=turn, user_text=text, response="reply to " + text[:20],
                       latency_ms=1, source="api", backend="test")


def _writer_process(shards: list[str], p: int, counter, stop) -> None:
    writers = [LogWriter(s) for s in shards]
    i = 0
    while not stop.is_set() or i < 50:
        text = f"w{p}-{i}:" + "y" * (30 + (i * 53) % 500)
        assert writers[i % len(writers)].append(_rec(f"writer-{p}", i, text))
        i += 1
        with counter.get_lock():
            counter.value += 1
    assert all(w.errors == 0 for w in writers)


def _all_files(folder: Path):
    for root, _, names in os.walk(folder):
        for n in names:
            yield Path(root) / n


def _records(folder: Path) -> list[dict]:
    out = []
    for p in sorted(folder.glob("*.jsonl")):
        data = p.read_bytes()
        assert data.endswith(b"\n"), f"{p.name} ends in a torn line"
        for line in data.splitlines():
            out.append(json.loads(line))  # every line whole
    return out


def test_forget_while_four_writer_processes_append(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    shards = [folder / "chat_logs.a.jsonl", folder / "chat_logs.b.jsonl"]
    before = []
    for s, shard in enumerate(shards):
        w = LogWriter(shard)
        for i in range(400):
            if i % 40 == 7:
                rec = _rec(TARGET, i, f"{SECRET} my card is on file, turn {i}")
            else:
                rec = _rec(f"old-{s}-{i % 13}", i, f"old line {s}/{i} " + "z" * 200)
                before.append((rec["conversation_id"], rec["turn"], rec["user_text"]))
            assert w.append(rec)
        w.close()
    annotations.record_feedback(folder, TARGET, 7, "down")
    annotations.add_note(folder, TARGET, f"called back about {SECRET}")
    annotations.add_note(folder, "old-0-1", "keep this note")
    # a persisted cache holding the conversation, and a store that keeps reading
    store = LogStore(folder)
    assert (store.frame["conversation_id"] == TARGET).sum() == 20
    store.wait_cache()
    assert any(SECRET.encode() in p.read_bytes() for p in _all_files(folder / ".chatcore-cache")), \
        "precondition: the cache holds the text"
    # and the CLI's saved list, whose first question of the conversation holds it too
    listed = subprocess.run([sys.executable, "-m", "chatcore", "conversations", "--log", str(folder), "--format", "json"],
                            cwd=ROOT, capture_output=True, timeout=120)
    assert SECRET.encode() in listed.stdout
    assert any(SECRET.encode() in p.read_bytes() for p in (folder / ".chatcore-cache").glob("summary-*.cli-json"))

    # the Live page's feed: a running tail, and a viewer's copy of what it showed
    feed = LiveFeed(folder, capacity=1_000_000, poll_interval=0.05)
    tail = feed._tail
    late = LogWriter(shards[0])
    assert late.append(_rec(TARGET, 999, f"{SECRET} once more"))
    late.close()
    deadline = time.monotonic() + 30
    viewer: list[dict] = []
    while not viewer and time.monotonic() < deadline:
        viewer, cursor, _ = feed.poll(0)
        time.sleep(0.05)
    assert [r["conversation_id"] for r in viewer] == [TARGET]
    ctx = mp.get_context("spawn")
    counter, stop = ctx.Value("i", 0), ctx.Event()
    procs = [ctx.Process(target=_writer_process, args=([str(s) for s in shards], p, counter, stop))
             for p in range(WRITERS)]
    for pr in procs:
        pr.start()
    try:
        deadline = time.monotonic() + 120
        while counter.value < 400 and time.monotonic() < deadline:
            time.sleep(0.02)
        at_forget = counter.value
        result = forget(folder, TARGET, by="tester")
        after_forget = counter.value
        while counter.value < after_forget + 400 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        for pr in procs:
            pr.join(60)
    assert all(pr.exitcode == 0 for pr in procs)
    assert at_forget >= 400 and after_forget > at_forget  # the writers were appending around the rewrite
    assert result["lines"] == 21 and sorted(result["shards"]) == ["chat_logs.a.jsonl", "chat_logs.b.jsonl"]
    assert result["annotations"] == 2

    # the text is nowhere under the log folder (shards, annotations, caches, notes)
    for p in _all_files(folder):
        data = p.read_bytes()
        assert SECRET.encode() not in data, p
        if p.name != "audit.jsonl":
            assert TARGET.encode() not in data, p
    # every other line is intact and whole, each writer line exactly once
    recs = _records(folder)
    assert not [r for r in recs if r["conversation_id"] == TARGET]
    assert sorted((r["conversation_id"], r["turn"], r["user_text"]) for r in recs
                  if r["conversation_id"].startswith("old-")) == sorted(before)
    total = counter.value
    written = [(r["conversation_id"], r["turn"]) for r in recs if r["conversation_id"].startswith("writer-")]
    assert len(written) == len(set(written)) == total
    for r in recs:
        if r["conversation_id"].startswith("writer-"):
            p, i = r["conversation_id"][7:], r["turn"]
            assert r["user_text"] == f"w{p}-{i}:" + "y" * (30 + (i * 53) % 500)
    # the annotations of others stay; the audit line has who and what, not the text
    notes = annotations.load_annotations(folder)
    assert TARGET not in notes and notes["old-0-1"]["notes"][0][2] == "keep this note"
    assert annotations.load_feedback(folder).empty
    audit = [json.loads(x) for x in (folder / "annotations" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["action"] == "forget" and audit[-1]["by"] == "tester"
    assert audit[-1]["conversation_id"] == TARGET and audit[-1]["lines"] == 21

    # the running tail kept going: every line written after it started, once, none of the target
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        seen, _, _ = feed.poll(0)
        if len([r for r in seen if r["conversation_id"].startswith("writer-")]) >= total:
            break
        time.sleep(0.05)
    feed.close()
    got = [(r["conversation_id"], r["turn"]) for r in seen]
    assert len(got) == len(set(got)), "a line was delivered twice"
    assert sorted(got) == sorted(written)
    assert feed.drop_forgotten(viewer) == []  # the viewer's copy drops it too

    # the store that was reading drops the conversation; a fresh one agrees
    store.refresh()
    assert not (store.frame["conversation_id"] == TARGET).any()
    assert len(store.frame) == len(recs)
    store.wait_cache()
    fresh = LogStore(folder)
    assert len(fresh.frame) == len(recs) and not (fresh.frame["conversation_id"] == TARGET).any()
    fresh.wait_cache()
    for p in _all_files(folder / ".chatcore-cache"):
        assert SECRET.encode() not in p.read_bytes(), p


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "chatcore", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_forget_dry_run_and_matching(tmp_path):
    log = tmp_path / "chat_logs.jsonl"
    w = LogWriter(log)
    w.append(_rec("has-mail", 0, "write to Jane.Doe@Example.com please"))
    w.append(_rec("has-phone", 0, "call me on +1 (555) 010-9999 tonight"))
    w.append(_rec("has-phone-2", 0, "my number: 15550109999"))
    w.append(_rec("other", 0, "my number is 155501099990 (not the same)"))
    w.close()
    data = log.read_bytes()

    assert find_matching(log, "jane.doe@example.com") == {"has-mail": 1}
    assert set(find_matching(log, "+1 555-010-9999")) == {"has-phone", "has-phone-2"}

    r = _cli("forget", "--matching", "555 010 9999", "--dry-run", "--log", str(log))
    assert r.returncode == 0, r.stderr
    assert [x.split("\t")[0] for x in r.stdout.splitlines()] == ["has-phone", "has-phone-2"]
    r = _cli("forget", "--matching", "555 010 9999", "--log", str(log))
    assert r.returncode == 2 and "--dry-run" in r.stderr
    r = _cli("forget", "has-mail", "--dry-run", "--format", "json", "--log", str(log))
    assert r.returncode == 0 and json.loads(r.stdout)["lines"] == 1
    assert log.read_bytes() == data  # a dry run changes nothing
    assert not (tmp_path / "annotations" / "audit.jsonl").exists()
    r = _cli("forget", "../etc", "--log", str(log))
    assert r.returncode == 2
    r = _cli("forget", "has-mail", "--by", "ops", "--log", str(log))
    assert r.returncode == 0, r.stderr
    assert b"Jane.Doe" not in log.read_bytes() and log.read_bytes().count(b"\n") == 3
    r = _cli("forget", "has-mail", "--log", str(log))
    assert r.returncode == 2 and "no conversation" in r.stderr  # nothing left: the id names none


def _daily_writer(log: str, counter, stop) -> None:
    settings = Settings(log_path=Path(log), rotate="daily", replica="r1")
    w = LogWriter(settings.current_shard_path(), path_for=settings.current_shard_path)
    i = 0
    while not stop.is_set() or i < 50:
        assert w.append(_rec("today-writer", i, f"today {i}"))
        i += 1
        with counter.get_lock():
            counter.value += 1


def test_retention_with_daily_shards_while_a_writer_appends(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "chat_logs.jsonl"
    settings = Settings(log_path=log, rotate="daily", replica="r1")
    today = datetime.now(timezone.utc).date()
    assert settings.current_shard_path().name == f"chat_logs.{today.isoformat()}.r1.jsonl"
    days = {n: today - timedelta(days=n) for n in (1, 2, 3, 9, 30)}
    for n, day in days.items():
        w = LogWriter(settings.shard_path_on(day))
        for i in range(300):
            assert w.append(_rec(f"day-{n}", i, f"day {n} line {i} " + "q" * 200))
        w.close()
        annotations.add_note(folder, f"day-{n}", f"note on day {n}")
    (folder / "undated.jsonl").write_text(json.dumps(_rec("undated", 0, "no date")) + "\n")
    store = LogStore(folder)
    assert len(store.frame) == 5 * 300 + 1
    store.wait_cache()
    cache_before = len(list((folder / ".chatcore-cache").glob("*.json")))
    assert cache_before >= 5

    ctx = mp.get_context("spawn")
    counter, stop = ctx.Value("i", 0), ctx.Event()
    proc = ctx.Process(target=_daily_writer, args=(str(log), counter, stop))
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while counter.value < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        during = counter.value
        result = retention(log, 3)
        assert counter.value >= during
    finally:
        stop.set()
        proc.join(60)
    assert proc.exitcode == 0 and during >= 100
    assert sorted(result["deleted"]) == sorted(f"chat_logs.{days[n].isoformat()}.r1.jsonl" for n in (9, 30))
    names = sorted(p.name for p in folder.glob("*.jsonl"))
    assert names == sorted([f"chat_logs.{days[n].isoformat()}.r1.jsonl" for n in (1, 2, 3)]
                           + [f"chat_logs.{today.isoformat()}.r1.jsonl", "undated.jsonl"])
    today_lines = (folder / f"chat_logs.{today.isoformat()}.r1.jsonl").read_text().splitlines()
    assert [json.loads(x)["turn"] for x in today_lines] == list(range(counter.value))
    notes = annotations.load_annotations(folder)
    assert set(notes) == {"day-1", "day-2", "day-3"}
    # the reading store and the cache drop the deleted shards
    store.refresh()
    assert set(store.frame["conversation_id"]) == {"day-1", "day-2", "day-3", "undated", "today-writer"}
    store.wait_cache()
    for manifest in (folder / ".chatcore-cache").glob("*.json"):
        assert os.path.exists(json.loads(manifest.read_text())["path"])
    for p in _all_files(folder / ".chatcore-cache"):
        assert b"day 9 line" not in p.read_bytes() and b"day 30 line" not in p.read_bytes()

    r = _cli("retention", "--keep-days", "1", "--dry-run", "--format", "json", "--log", str(folder))
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["deleted"]) == sorted(
        f"chat_logs.{days[n].isoformat()}.r1.jsonl" for n in (2, 3))
    assert _cli("retention", "--keep-days", "0", "--log", str(folder)).returncode == 2


def test_writer_moves_to_the_next_day(tmp_path):
    current = {"p": tmp_path / "a.2026-01-01.jsonl"}
    w = LogWriter(current["p"], path_for=lambda: current["p"])
    assert w.append(_rec("c", 0, "one"))
    current["p"] = tmp_path / "a.2026-01-02.jsonl"
    assert w.append(_rec("c", 1, "two"))
    assert (tmp_path / "a.2026-01-01.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "a.2026-01-02.jsonl").read_text().count("\n") == 1
    # a log path that is a folder: the daily shards go inside it
    day = date(2026, 11, 21)
    assert Settings(log_path=tmp_path, rotate="daily").shard_path_on(day) == tmp_path / "chat_logs.2026-11-21.jsonl"
    assert Settings(log_path=tmp_path, rotate="daily", replica="r2").shard_path_on(day) == \
        tmp_path / "chat_logs.2026-11-21.r2.jsonl"


def test_dashboard_forget_button_asks_for_the_id(tmp_path, monkeypatch, _env):
    from conftest import free_port
    from test_pages import button, open_page, rec, shown_ids, write_log

    now = datetime.now(timezone.utc)
    log = tmp_path / "chat.jsonl"
    write_log(log, [
        rec("drop-me", 0, now - timedelta(minutes=5), f"{SECRET} mail jane@example.com", "Noted."),
        rec("keep-me", 0, now - timedelta(minutes=3), "Where is my order?", "It ships tomorrow."),
    ])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    at = open_page("conversations")
    at.selectbox(key="conv_pick").select("drop-me").run()
    assert button(at, "conv_forget_btn").disabled  # not before the id is typed
    at.text_input(key="conv_forget_confirm").input("keep-me").run()
    assert button(at, "conv_forget_btn").disabled
    at.text_input(key="conv_forget_confirm").input("drop-me").run()
    button(at, "conv_forget_btn").click().run()
    assert not at.exception and not at.error
    assert any("Forgot drop-me" in s.value for s in at.success), (list(at.success), list(at.exception), log.read_text())
    assert shown_ids(at) == ["keep-me"]
    assert SECRET.encode() not in log.read_bytes()
    audit = json.loads((tmp_path / "annotations" / "audit.jsonl").read_text().splitlines()[-1])
    assert audit["by"] == "staff" and audit["conversation_id"] == "drop-me"


def test_space_writes_daily_shards_and_runs_retention_itself(tmp_path, space_factory):
    from gradio_client import Client

    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "chat_logs.jsonl"
    today = datetime.now(timezone.utc).date()
    old = folder / f"chat_logs.{(today - timedelta(days=5)).isoformat()}.r1.jsonl"
    recent = folder / f"chat_logs.{(today - timedelta(days=1)).isoformat()}.r1.jsonl"
    for p in (old, recent):
        LogWriter(p).append(_rec("earlier-" + p.name[10:20], 0, "earlier"))
    space = space_factory(log, env={"CHAT_ROTATE": "daily", "CHAT_REPLICA_ID": "r1", "CHAT_RETENTION_DAYS": "2"})
    client = Client(space.url, verbose=False)
    try:
        reply = client.predict(message={"text": "daily hello", "files": []}, conversation_id="daily-1",
                               api_name="/chat")
    finally:
        client.close()
    assert "daily hello" in reply
    shard = folder / f"chat_logs.{today.isoformat()}.r1.jsonl"
    assert [json.loads(x)["conversation_id"] for x in shard.read_text().splitlines()] == ["daily-1"]
    assert not log.exists()
    deadline = time.monotonic() + 30
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not old.exists() and recent.exists()
    assert space.health()["log_path"] == str(shard.resolve())


def test_forget_takes_its_replays_suites_and_eval_reports(tmp_path):
    folder = tmp_path / "logs"
    log = folder / "chat_logs.jsonl"
    w = LogWriter(log)
    for cid in ("orig-1", "orig-1-replay", "eval-replay-1"):
        assert w.append(_rec(cid, 0, f"{SECRET} where is my parcel"))
    assert w.append(_rec("other-1", 0, "unrelated question"))
    w.close()
    annotations.link_replay(log, "orig-1", "orig-1-replay")
    annotations.add_note(log, "orig-1-replay", f"replayed {SECRET}")
    suites = LogWriter(folder / "annotations" / "suites.jsonl")
    suites.append({"v": 1, "ts": "2026-11-21T10:00:00Z", "kind": "add", "suite": "s", "conversation_id": "orig-1",
                   "turns": [{"turn": 0, "user_text": f"{SECRET} where is my parcel", "reference": "r"}]})
    suites.append({"v": 1, "ts": "2026-11-21T10:00:00Z", "kind": "add", "suite": "s", "conversation_id": "other-1",
                   "turns": [{"turn": 0, "user_text": "unrelated question", "reference": "r"}]})
    suites.close()
    runs = folder / "annotations" / "eval-runs"
    runs.mkdir()
    (runs / "run-1.json").write_text(json.dumps({"run_id": "run-1", "conversations": [
        {"conversation_id": "orig-1", "replay_id": "eval-replay-1",
         "turns": [{"turn": 0, "user_text": f"{SECRET} where is my parcel", "passed": True}]},
        {"conversation_id": "other-1", "replay_id": None, "turns": [{"turn": 0, "user_text": "unrelated question"}]},
    ]}))

    dry = forget(log, "orig-1", by="t", dry_run=True)
    assert dry["lines"] == 1 and dry["eval_reports"] == 1
    assert sorted(r["conversation_id"] for r in dry["replays"]) == ["eval-replay-1", "orig-1-replay"]
    assert SECRET.encode() in log.read_bytes()

    res = forget(log, "orig-1", by="t")
    assert sorted(r["conversation_id"] for r in res["replays"]) == ["eval-replay-1", "orig-1-replay"]
    for p in _all_files(folder):
        assert SECRET.encode() not in p.read_bytes(), p
    assert [r["conversation_id"] for r in _records(folder)] == ["other-1"]
    report = json.loads((runs / "run-1.json").read_text())
    assert [c["conversation_id"] for c in report["conversations"]] == ["other-1"]
    assert b"other-1" in (folder / "annotations" / "suites.jsonl").read_bytes()
