"""The CLI: conversations and export over a real log, dates, and clear errors."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.log.records import make_record
from chatcore.log.writer import LogWriter
from conftest import ROOT


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "chatcore", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "log.jsonl"
    w = LogWriter(path)
    for cid, day, n in [("c-old", "2026-11-19", 2), ("c-mid", "2026-11-20", 3), ("c-new", "2026-11-21", 1)]:
        for t in range(n):
            w.append(make_record(conversation_id=cid, turn=t, user_text=f"{cid} q{t} =SUM(A1)",
                                 response=f"answer {t}", latency_ms=12.5, source="widget",
                                 backend="echo", ts=f"{day}T10:0{t}:00.000Z"))
    with open(path, "a") as f:  # the seed's older shape, and a bad line
        f.write(json.dumps({"timestamp": "2026-11-20T08:00:00", "conversation_id": "c-seed",
                            "user_text": "Hi", "response": ["Hello from your Gradio Space!", "You said: Hi"],
                            "history": []}) + "\n")
        f.write("{not json\n")
    return path


def test_conversations_json_has_the_keys_scripts_use(log):
    out = run_cli("conversations", "--log", str(log), "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    by_id = {r["conversation_id"]: r for r in rows}
    assert set(by_id) == {"c-old", "c-mid", "c-new", "c-seed"}
    assert by_id["c-mid"]["turns"] == 3
    assert by_id["c-mid"]["first_ts"] == "2026-11-20T10:00:00.000Z"
    assert by_id["c-mid"]["last_ts"] == "2026-11-20T10:02:00.000Z"
    assert by_id["c-mid"]["first_user_text"] == "c-mid q0 =SUM(A1)"
    assert by_id["c-seed"]["first_user_text"] == "Hi" and by_id["c-seed"]["turns"] == 1
    assert rows[0]["conversation_id"] == "c-new"  # newest first
    assert "skipped 1 bad line" in out.stderr


@pytest.mark.parametrize("args, expected", [
    (["--since", "2026-11-20"], {"c-mid", "c-new", "c-seed"}),
    (["--until", "2026-11-20"], {"c-old", "c-mid", "c-seed"}),  # a bare --until date includes that day
    (["--since", "2026-11-20T09:00:00Z", "--until", "2026-11-20T10:01:30+00:00"], {"c-mid"}),
])
def test_conversations_date_filters(log, args, expected):
    out = run_cli("conversations", "--log", str(log), "--format", "json", *args)
    assert out.returncode == 0, out.stderr
    got = {r["conversation_id"]: r for r in json.loads(out.stdout)}
    assert set(got) == expected
    if "10:01:30" in " ".join(args):
        assert got["c-mid"]["turns"] == 2  # only the turns inside the range


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "21/11/2026"])
def test_bad_dates_are_clear_errors_with_exit_2(log, bad):
    out = run_cli("conversations", "--log", str(log), "--since", bad)
    assert out.returncode == 2
    assert "not a" in out.stderr and "2026-11-21" in out.stderr
    assert "Traceback" not in out.stderr


def test_conversations_table_and_csv(log):
    table = run_cli("conversations", "--log", str(log))
    assert table.returncode == 0 and "c-mid" in table.stdout and "4 conversation(s)" in table.stdout
    out = run_cli("conversations", "--log", str(log), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["conversation_id"] for r in rows][0] == "c-new" and len(rows) == 4


def test_export_formats(log):
    out = run_cli("export", "--conversation", "c-mid", "--log", str(log))
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert [l["turn"] for l in lines] == [0, 1, 2] and lines[0]["response"] == "answer 0"
    out = run_cli("export", "--conversation", "c-mid", "--log", str(log), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows[0]["user_text"] == "c-mid q0 =SUM(A1)"  # not a formula: starts with text
    out = run_cli("export", "--conversation", "c-mid", "--log", str(log), "--format", "md")
    assert out.stdout.startswith("# Conversation c-mid") and out.stdout.count("## Turn") == 3
    out = run_cli("export", "--conversation", "nope", "--log", str(log))
    assert out.returncode == 2 and "no conversation" in out.stderr  # an unknown id is a usage error


def test_missing_log_is_a_clear_error(tmp_path):
    out = run_cli("conversations", "--log", str(tmp_path / "none.jsonl"))
    assert out.returncode == 2 and "no log at" in out.stderr


def test_log_path_from_env(log):
    import os

    out = run_cli("conversations", "--format", "json", env={**os.environ, "CHAT_LOG_PATH": str(log)})
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 4


EVIL = "hi \x1b[2J\x1b]0;pwned\x07 there \u202egnp.exe\x9b31m"


def test_human_readable_output_replaces_control_characters(tmp_path):
    """Visitor text with terminal escapes is shown inert by every human-readable output;
    JSON and JSONL keep it exactly."""
    path = tmp_path / "log.jsonl"
    LogWriter(path).append(make_record(conversation_id="c-evil", turn=0, user_text=EVIL, response=EVIL,
                                       latency_ms=1, source="widget", backend="echo", error=EVIL))
    for args in (["conversations"], ["conversations", "--format", "csv"],
                 ["export", "--conversation", "c-evil", "--format", "md"],
                 ["export", "--conversation", "c-evil", "--format", "csv"]):
        out = run_cli(*args, "--log", str(path))
        assert out.returncode == 0, out.stderr
        assert "pwned" in out.stdout, args  # the text is still there, only its controls are not
        for ch in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert ch not in out.stdout, (args, ch)
    out = run_cli("conversations", "--log", str(path), "--format", "json")
    assert json.loads(out.stdout)[0]["first_user_text"] == EVIL
    out = run_cli("export", "--conversation", "c-evil", "--log", str(path))
    row = json.loads(out.stdout)
    assert row["user_text"] == EVIL and row["response"] == EVIL and row["error"] == EVIL


def test_conversation_list_process_never_imports_pandas(log):
    """The list is built from Arrow: a ``conversations`` process must not load pandas (a
    large part of a warm run's start-up), not even through another command's parser."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "chatcore", "conversations", "--log", str(log),
                          "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 4
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "pyarrow" in imported
    # (an attempt the command refuses is listed as "pandas" alone; a real import loads its parts)
    assert not {m for m in imported if m.startswith("pandas.")}


def test_eval_command_defaults_are_those_of_the_evaluator():
    from chatcore.staff import evaluate
    from chatcore.cli import eval as eval_cmd

    assert (eval_cmd.DEFAULT_SIMILARITY, eval_cmd.DEFAULT_PARALLEL) == (evaluate.DEFAULT_SIMILARITY,
                                                                      evaluate.DEFAULT_PARALLEL)


def _iso_reference(us: int) -> str:
    from datetime import datetime, timedelta, timezone

    d = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)
    return (f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}."
            f"{d.microsecond // 1000:03d}Z")


def test_iso_times_equal_the_reference_over_the_calendar():
    import random

    import pyarrow as pa

    from chatcore.cli.listing import _iso_array

    rng = random.Random(5)
    lo, hi = -62_135_596_800_000_000, 253_402_300_799_999_999  # 0001-01-01 .. 9999-12-31T23:59:59.999999
    values = [lo, hi, 0, -1, 999, -1000, -1001, 951_782_400_000_000]  # and 2000-02-29
    values += [rng.randint(lo, hi) for _ in range(3000)] + [rng.randint(-10**10, 10**10) for _ in range(1000)]
    values += [1_790_000_000_000_000 + rng.randint(0, 86_400_000_000 * 30) for _ in range(3000)]  # a month of log
    got = _iso_array(pa.array(values, pa.timestamp("us", tz="UTC"))).to_pylist()
    assert got == [_iso_reference(v) for v in values]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=40), st.integers(0, 10**6),
                          st.integers(-10**15, 4 * 10**15)), max_size=30))
def test_summary_json_is_exact_for_any_text(rows):
    import pyarrow as pa

    from chatcore.cli.listing import summary_json

    table = pa.table({"conversation_id": pa.array([r[0] for r in rows], pa.string()),
                      "turns": pa.array([r[2] for r in rows], pa.int64()),
                      "first_ts": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC")),
                      "last_ts": pa.array([r[3] + 5 for r in rows], pa.timestamp("us", tz="UTC")),
                      "first_user_text": pa.array([r[1] for r in rows], pa.string())})
    text = summary_json(table)
    assert json.loads(text) == [{"conversation_id": r[0], "turns": r[2], "first_ts": _iso_reference(r[3]),
                                 "last_ts": _iso_reference(r[3] + 5), "first_user_text": r[1]} for r in rows]
    # one object a line, control characters as \u escapes (never raw)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == (len(rows) + 2 if rows else 1)
    assert not any(ord(ch) < 32 for ch in text.replace("\n", ""))


def test_an_unchanged_whole_list_is_sent_as_saved_and_a_changed_log_is_listed_again(log):
    """``conversations --format json`` keeps what it printed beside the store's cache; the next
    run on the unchanged log sends those bytes as they are (here doctored, to see that they are
    what is sent), and a run after an append lists the log again."""
    first = run_cli("conversations", "--log", str(log), "--format", "json")
    assert first.returncode == 0, first.stderr
    saved = list((log.parent / ".chatcore-cache").glob("summary-*.cli-json"))
    assert len(saved) == 1
    head, _, body = saved[0].read_bytes().partition(b"\n")
    assert body.decode() == first.stdout and json.loads(head)  # the store state it was made from
    assert run_cli("conversations", "--log", str(log), "--format", "json").stdout == first.stdout
    saved[0].write_bytes(head + b"\n" + body.replace(b'"c-new"', b'"c-NEW"'))
    assert '"c-NEW"' in run_cli("conversations", "--log", str(log), "--format", "json").stdout
    # a filtered list or another format is never taken from it
    assert '"c-NEW"' not in run_cli("conversations", "--log", str(log), "--format", "json",
                                    "--since", "2026-11-01").stdout
    assert "c-NEW" not in run_cli("conversations", "--log", str(log), "--format", "csv").stdout
    LogWriter(log).append(make_record(conversation_id="c-newest", turn=0, user_text="later", response="r",
                                      latency_ms=5.0, source="widget", backend="echo",
                                      ts="2026-11-22T10:00:00.000Z"))
    after = run_cli("conversations", "--log", str(log), "--format", "json")
    rows = json.loads(after.stdout)
    assert [r["conversation_id"] for r in rows][:2] == ["c-newest", "c-new"] and '"c-NEW"' not in after.stdout
    assert saved[0].read_bytes().partition(b"\n")[2].decode() == after.stdout  # saved again
    # a saved file that is cut short or from other rows is a miss, never sent
    saved[0].write_bytes(b"[]\n")
    assert run_cli("conversations", "--log", str(log), "--format", "json").stdout == after.stdout


def test_command_table_matches_each_modules_register():
    """--help lists the commands from the table without importing their modules: the table must
    name every command each module registers, with the same help line."""
    import argparse
    import importlib
    import pkgutil

    from chatcore import cli
    from chatcore.cli.main import COMMANDS

    modules = [f"{cli.__name__}.{m.name}" for m in pkgutil.iter_modules(cli.__path__)] + ["chatcore.dashboard.launcher"]
    registered = {}
    for name in modules:
        register = getattr(importlib.import_module(name), "register", None)
        if register is None:
            continue
        sub = argparse.ArgumentParser().add_subparsers()
        register(sub)
        registered.update({a.dest: (name, a.help) for a in sub._choices_actions})
    assert registered == COMMANDS


def test_a_command_imports_only_its_own_module():
    code = ("import sys\nfrom chatcore.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('chatcore.cli.', 'chatcore.dashboard'))))")
    out = subprocess.run([sys.executable, "-c", code, "say", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert "--as NAME" in out.stdout  # say's options, from its module
    assert out.stdout.splitlines()[-1] == "['chatcore.cli.main', 'chatcore.cli.takeover']"


def test_help_lists_every_command():
    from chatcore.cli.main import COMMANDS

    out = run_cli("--help")
    assert out.returncode == 0
    for name, (_, helptext) in COMMANDS.items():
        assert name in out.stdout
        assert helptext.split()[0] in out.stdout
    for name in ("space", "conversations", "export"):
        assert name in out.stdout
    assert "the overview's figures" in out.stdout


def test_the_list_of_a_local_log_loads_no_settings(log):
    """A cold list of a local --log reads no setting: the settings library is not even imported
    (it is a good part of a cold list's time). Without --log, CHAT_LOG_PATH still names the log."""
    code = ("import runpy, sys\nsys.argv = ['chatcore', 'conversations', '--log', sys.argv[1], '--format', 'json']\n"
            "try:\n    runpy.run_module('chatcore', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('pydantic' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, str(log)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert '"c-seed"' in out.stdout
    assert out.stderr.strip().splitlines()[-1] == "False"
