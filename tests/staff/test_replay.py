"""Replay when the Space is down, stops half way, or refuses every turn — against real Spaces."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from chatcore.log import annotations
from chatcore.remote.client import SpaceClient
from chatcore.log.records import make_record
from chatcore.staff.replay import replay_conversation
from chatcore.store import load_log
from chatcore.log.writer import LogWriter
from conftest import ROOT, free_port


def run_cli(*args, env=None, timeout=90):
    env = {k: v for k, v in os.environ.items() if k != "CHAT_SPACE_URL"}
    return subprocess.run([sys.executable, "-m", "chatcore", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**env, "NO_COLOR": "1", **(env or {})})


def write_conversation(log, cid="orig-1", questions=("Where is my order?", "Can I get a refund?", "Thanks!"),
                       replies=None):
    w = LogWriter(log)
    for t, q in enumerate(questions):
        reply = replies[t] if replies else f"You said: {q}"
        w.append(make_record(conversation_id=cid, turn=t, user_text=q, response=reply, latency_ms=5,
                             source="widget", backend="echo", ts=f"2026-11-20T10:0{t}:00.000Z"))


def test_replay_with_the_space_down_names_the_cli_flag_and_links_nothing(tmp_path):
    log = tmp_path / "log.jsonl"
    write_conversation(log)
    down = f"http://127.0.0.1:{free_port()}"
    out = run_cli("replay", "orig-1", "--log", str(log), env={"CHAT_SPACE_URL": down})
    err = out.stdout + out.stderr
    assert out.returncode == 1 and "Cannot reach the Space" in err and "Traceback" not in err
    assert "--space" in err and "settings" not in err  # the CLI has no settings; its flag is named
    assert "Nothing was replayed" in err and "changed" not in err
    assert "orig-1" not in annotations.load_annotations(log)  # no link to a replay that does not exist
    out = run_cli("replay", "orig-1", "--log", str(log), "--space", down)
    assert out.returncode == 1 and "check the --space URL" in out.stderr


def test_space_stopping_half_way_counts_failed_turns_as_failed(space_factory, tmp_path):
    log = tmp_path / "stops" / "log.jsonl"
    write_conversation(log)
    sp = space_factory(log)
    frame, _ = load_log(log)
    client = SpaceClient(sp.url, timeout=20, connect_timeout=2, log_path=log)  # reads the staff token
    try:
        result = replay_conversation(frame, client, on_turn=lambda t: t.turn == 0 and sp.stop())
    finally:
        client.close()
    assert [t.error is None for t in result.turns] == [True, False, False]
    assert "Cannot reach the Space" in result.turns[1].error and "settings" not in result.turns[1].error
    assert result.turns[2].error.startswith("not sent")  # nothing more is sent after the Space went away
    assert (result.answered, result.changed, result.failed) == (1, 0, 2)
    assert result.summary() == "3 turn(s): 0 changed, 1 same, 2 failed"


def test_every_turn_refused_is_reported_as_failed_and_not_linked(space_factory, tmp_path):
    log = tmp_path / "refused" / "log.jsonl"
    write_conversation(log, questions=("a question longer than twenty bytes", "another one, also too long"))
    sp = space_factory(log, env={"CHAT_MAX_MESSAGE_BYTES": "20"})
    out = run_cli("replay", "orig-1", "--space", sp.url, "--log", str(log))
    assert out.returncode == 1, out.stderr
    assert out.stdout.count(": FAILED") == 2 and "too long" in out.stdout
    assert "nothing was replayed" in out.stdout and "0 changed" not in out.stdout
    out = run_cli("replay", "orig-1", "--space", sp.url, "--log", str(log), "--format", "json")
    result = json.loads(out.stdout)
    assert (result["changed"], result["failed"], result["answered"]) == (0, 2, 0)
    assert result["replay_id"] is None and result["linked"] is False
    assert "orig-1" not in annotations.load_annotations(log)
    assert not [r for r in sp.records() if r["source"] == "replay"]


def test_partly_answered_replay_is_linked_and_counted(space_factory, tmp_path):
    log = tmp_path / "partly" / "log.jsonl"
    write_conversation(log, questions=("short one", "this second question is far too long to pass", "ok"),
                       replies=("You said: short one", "-", "An older reply"))
    sp = space_factory(log, env={"CHAT_MAX_MESSAGE_BYTES": "20"})
    out = run_cli("replay", "orig-1", "--space", sp.url, "--log", str(log), "--format", "json")
    assert out.returncode == 1  # a failed turn is an error exit, but the answered ones count
    result = json.loads(out.stdout)
    assert (result["answered"], result["changed"], result["failed"]) == (2, 1, 1)
    assert [(t["same"], t["error"] is None) for t in result["turns"]] == [(True, True), (False, False), (False, True)]
    assert annotations.load_annotations(log)["orig-1"]["replays"] == [result["replay_id"]]
    text = run_cli("replay", "orig-1", "--space", sp.url, "--log", str(log))
    assert "3 turn(s): 1 changed, 1 same, 1 failed" in text.stdout
