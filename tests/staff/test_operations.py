"""Feedback, notes and tags, replay, replicas, and the terminal commands — against real servers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from gradio_client import Client

from chatcore.log import annotations
from chatcore.log.records import make_record
from chatcore.staff.replay import diff_html, diff_ops
from chatcore.store import LogStore
from chatcore.log.writer import LogWriter
from conftest import ROOT


def run_cli(*args, env=None, timeout=90):
    return subprocess.run([sys.executable, "-m", "chatcore", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "NO_COLOR": "1", **(env or {})})


# ---------------------------------------------------------------------------- feedback

def test_feedback_route_appends_ratings_beside_the_log(space):
    cid = f"fb-{uuid.uuid4().hex[:8]}"
    Client(space.url, verbose=False).predict(message={"text": "rate me", "files": []},
                                             conversation_id=cid, api_name="/chat")
    log_before = space.log_path.read_bytes()
    ok = httpx.post(space.url + "/feedback", json={"conversation_id": cid, "turn": 0, "rating": "down"})
    assert ok.status_code == 200 and ok.json()["rating"] == "down"
    # A changed mind is one more line; the latest counts.
    httpx.post(space.url + "/feedback", json={"conversation_id": cid, "turn": 0, "rating": "up"})
    for bad in ({"conversation_id": "../x", "turn": 0, "rating": "up"},
                {"conversation_id": cid, "turn": -1, "rating": "up"},
                {"conversation_id": cid, "turn": 0, "rating": "meh"}, ["not", "an", "object"]):
        resp = httpx.post(space.url + "/feedback", json=bad)
        assert resp.status_code == 400 and resp.json()["error"]
    assert space.log_path.read_bytes() == log_before  # the turn log is untouched
    fb = annotations.load_feedback(space.log_path)
    mine = fb[fb["conversation_id"] == cid]
    assert mine[["turn", "rating", "by"]].values.tolist() == [[0, "up", "visitor"]]
    lines = (annotations.annotations_dir(space.log_path) / "feedback.jsonl").read_text().splitlines()
    assert sum(cid in line for line in lines) == 2


def test_tags_and_notes_are_append_only_and_searchable(tmp_path):
    log = tmp_path / "log.jsonl"
    annotations.add_tag(log, "c1", "Escalated")
    annotations.add_tag(log, "c1", "bug")
    annotations.add_tag(log, "c2", "bug")
    annotations.remove_tag(log, "c2", "bug")
    annotations.add_note(log, "c2", "Customer asked for a refund twice", author="ana")
    ann = annotations.load_annotations(log)
    assert ann["c1"]["tags"] == {"escalated", "bug"} and ann["c2"]["tags"] == set()
    assert ann["c2"]["notes"][0][1:] == ("ana", "Customer asked for a refund twice")
    assert annotations.conversations_with(ann, tag="bug") == {"c1"}
    assert annotations.conversations_with(ann, text="REFUND") == {"c2"}
    with pytest.raises(ValueError):
        annotations.add_tag(log, "c1", "<b>x</b>")
    with pytest.raises(ValueError):
        annotations.add_note(log, "../../etc/passwd", "x")
    assert len((tmp_path / "annotations" / "notes.jsonl").read_text().splitlines()) == 5


# ------------------------------------------------------------------------------ replay

def test_diff_marks_changed_words_and_escapes_html():
    ops = diff_ops("Your order ships today.", "Your order ships tomorrow.")
    assert ("-", "today.") in ops and ("+", "tomorrow.") in ops
    old, new = diff_html("<b>hi</b> there", "<b>hi</b> here")
    assert "&lt;b&gt;" in old and "<del>there</del>" in old and "<ins>here</ins>" in new


def test_replay_cli_reruns_a_conversation_as_a_new_linked_one(space_factory, tmp_path):
    log = tmp_path / "replay" / "log.jsonl"
    w = LogWriter(log)
    for t, (q, a) in enumerate([("Where is my order?", "You said: Where is my order?"),
                                ("Can I get a refund?", "An old reply that the bot no longer gives")]):
        w.append(make_record(conversation_id="orig-1", turn=t, user_text=q, response=a, latency_ms=5,
                             source="widget", backend="echo", ts=f"2026-11-20T10:0{t}:00.000Z"))
    sp = space_factory(log)
    out = run_cli("replay", "orig-1", "--space", sp.url, "--log", str(log), "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["original_id"] == "orig-1" and result["replay_id"].startswith("replay-")
    assert [t["same"] for t in result["turns"]] == [True, False]
    assert result["turns"][1]["new"].startswith("You said: Can I get a refund?")
    assert (result["changed"], result["failed"], result["answered"]) == (1, 0, 2)
    new = [r for r in sp.records() if r["conversation_id"] == result["replay_id"]]
    assert [(r["turn"], r["source"]) for r in new] == [(0, "replay"), (1, "replay")]
    assert annotations.load_annotations(log)["orig-1"]["replays"] == [result["replay_id"]]
    text = run_cli("replay", "orig-1", "--space", sp.url, "--log", str(log))
    assert "turn 1: changed" in text.stdout and "[-" in text.stdout and "{+" in text.stdout


def test_replay_with_space_down_is_a_clear_error(tmp_path):
    log = tmp_path / "log.jsonl"
    LogWriter(log).append(make_record(conversation_id="o", turn=0, user_text="hi", response="x",
                                      latency_ms=1, source="api", backend="echo"))
    out = run_cli("replay", "o", "--space", "http://127.0.0.1:9", "--log", str(log), timeout=60)
    assert out.returncode == 1 and "Cannot reach the Space" in (out.stdout + out.stderr)
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------- replicas

def test_four_replicas_write_shards_and_the_store_sees_one_log(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from conftest import SpaceProcess

    folder = tmp_path / "shared"
    spaces = [SpaceProcess(folder / "chat_logs.jsonl", args=["--replica", f"r{i}"]) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:  # start them side by side
        list(pool.map(SpaceProcess.start, spaces))
    try:
        _replicas_under_traffic(spaces, folder)
    finally:
        for sp in spaces:
            sp.stop()


def _replicas_under_traffic(spaces, folder):
    store = LogStore(folder)
    store.refresh()
    errors = []

    def visitor(i: int) -> None:
        try:
            client = Client(spaces[i % 4].url, verbose=False)
            for t in range(5):
                client.predict(message={"text": f"v{i} t{t}", "files": []}, conversation_id=f"v{i}",
                               api_name="/chat")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(12)]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        store.refresh()  # refreshing while the replicas write
        time.sleep(0.05)
    assert not errors, errors[:2]
    store.refresh()
    frame = store.frame
    assert sorted(p.name for p in folder.glob("*.jsonl")) == [f"chat_logs.r{i}.jsonl" for i in range(4)]
    assert len(frame) == 60 and frame["conversation_id"].nunique() == 12
    for cid, group in frame.groupby("conversation_id"):
        assert sorted(group["turn"].tolist()) == [0, 1, 2, 3, 4]
        assert sorted(group["user_text"]) == [f"{cid} t{t}" for t in range(5)]
    assert store.stats["bad_total"] == 0 and store.stats["shards"] == 4


# ---------------------------------------------------------------------------- terminal

def test_tail_follows_new_turns_with_filters(tmp_path):
    log = tmp_path / "log.jsonl"
    w = LogWriter(log)
    w.append(make_record(conversation_id="old", turn=0, user_text="backlog", response="r", latency_ms=1,
                         source="api", backend="echo"))
    proc = subprocess.Popen([sys.executable, "-m", "chatcore", "tail", "--log", str(log), "--source", "widget",
                             "--max", "2", "--seconds", "30", "-n", "5", "--colour", "never"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The tail says on stderr when it follows; what is written after that is new (a slow start
        # under load would otherwise read these turns as its backlog).
        assert "following" in proc.stderr.readline()
        w.append(make_record(conversation_id="skip", turn=0, user_text="from api", response="r", latency_ms=1,
                             source="api", backend="echo"))
        w.append(make_record(conversation_id="c-1", turn=0, user_text="hello \x1b[31mred", response="hi there",
                             latency_ms=12, source="widget", backend="echo"))
        w.append(make_record(conversation_id="c-1", turn=1, user_text="second", response="ok", latency_ms=3,
                             source="widget", backend="echo", error="backend down"))
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "from api" not in out and "backlog" not in out  # the backlog is api, filtered out
    assert "hello" in out and "\x1b" not in out  # a visitor's escape codes never reach the terminal
    assert "second" in out and "ERROR backend down" in out
    assert out.index("hello") < out.index("second")


def test_tail_finds_a_conversation_by_the_first_characters_of_its_id(tmp_path):
    log = tmp_path / "log.jsonl"
    w = LogWriter(log)
    for cid, text in (("6f1c0d7e-aaaa-4bbb", "the one I want"), ("6f1c9999-cccc-4ddd", "a neighbour")):
        w.append(make_record(conversation_id=cid, turn=0, user_text=text, response="r", latency_ms=1,
                             source="widget", backend="echo"))
    for query in ("6f1c0d7e…", "6f1c0d7e", "6f1c0d7e-aaaa-4bbb"):
        out = run_cli("tail", "--log", str(log), "--conversation", query, "--seconds", "0.5", "--colour", "never")
        assert out.returncode == 0, out.stderr
        assert "the one I want" in out.stdout and "a neighbour" not in out.stdout, query
    out = run_cli("tail", "--log", str(log), "--conversation", "0d7e", "--seconds", "0.5", "--colour", "never")
    assert "the one I want" not in out.stdout  # a prefix, not any substring


def test_stats_prints_the_overview_figures(tmp_path):
    log = tmp_path / "log.jsonl"
    w = LogWriter(log)
    for i in range(3):
        w.append(make_record(conversation_id=f"c{i}", turn=0, user_text="q", response="a", latency_ms=100 * (i + 1),
                             source="api", backend="echo", error="x" if i == 2 else None))
    with open(log, "a") as f:
        f.write("garbage\n")
    out = run_cli("stats", "--log", str(log), "--format", "json", "--space-url", "http://127.0.0.1:9")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures == {  # stable snake_case keys, numbers as numbers (documented in docs/operations.md)
        "since": None, "conversations": 3, "turns": 3, "conversations_today": 3, "turns_today": 3,
        "active_now": 3, "reply_time_p50_ms_today": 200.0, "reply_time_p95_ms_today": 290.0,
        "errors_today": 1, "bad_lines_skipped": 1, "space_status": "down",
        "space_error": figures["space_error"], "space_write_errors": None,
        "input_tokens": 0, "output_tokens": 0, "cost_usd": None,  # no usage reported
    }
    assert "cannot reach" in figures["space_error"]
    assert all(type(figures[k]) is int for k in ("conversations", "turns", "errors_today", "bad_lines_skipped"))
    text = run_cli("stats", "--log", str(log), "--space-url", "http://127.0.0.1:9")
    assert "reply time p50 today" in text.stdout and "200 ms" in text.stdout and "space " in text.stdout
    quiet = json.loads(run_cli("stats", "--log", str(log), "--format", "json", "--no-health",
                               "--since", "2020-01-01").stdout)
    assert quiet["space_status"] is None and quiet["since"].startswith("2020-01-01")


def test_stats_json_against_a_running_space(space_factory, tmp_path):
    sp = space_factory(tmp_path / "stats" / "log.jsonl")
    Client(sp.url, verbose=False).predict(message={"text": "hello", "files": []}, conversation_id="s-1",
                                          api_name="/chat")
    figures = json.loads(run_cli("stats", "--log", str(sp.log_path), "--format", "json",
                                 "--space-url", sp.url).stdout)
    assert figures["turns"] == 1 and figures["space_status"] == "ok" and figures["space_error"] is None
    assert figures["space_write_errors"] == 0 and isinstance(figures["reply_time_p50_ms_today"], float)
