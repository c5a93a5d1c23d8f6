"""Progress while a large log is read for the first time: the CLI (stderr) and the dashboard's loader."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chatcore.dashboard.views import SharedStore
from conftest import ROOT


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    """~25 MB: over the size from which progress is shown."""
    path = tmp_path_factory.mktemp("big") / "log.jsonl"
    line = {"v": 1, "conversation_id": "", "turn": 0, "user_text": "where is my order " * 10,
            "response": "It left the warehouse this morning. " * 40, "latency_ms": 10.0, "source": "widget",
            "backend": "echo", "model": None, "error": None, "files": [], "session": None}
    with open(path, "w") as f:
        for i in range(16_000):
            line["conversation_id"], line["turn"] = f"c{i // 8}", i % 8
            line["ts"] = f"2026-11-{1 + i % 20:02d}T10:00:00.000Z"
            f.write(json.dumps(line) + "\n")
    assert path.stat().st_size > 20_000_000
    return path


def test_cli_reports_progress_on_stderr(big_log):
    out = subprocess.run([sys.executable, "-m", "chatcore", "conversations", "--log", str(big_log),
                          "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    steps = [line for line in out.stderr.splitlines() if line.startswith("loading log:")]
    assert len(steps) >= 2 and steps[-1] == "loading log: 100%"
    assert len(json.loads(out.stdout)) == 2000  # stdout stays clean for scripts


def test_dashboard_loader_reports_progress_once(big_log):
    calls = []
    store = SharedStore(big_log)
    questions = store.questions(progress=lambda done, total: calls.append((done, total)))
    stats = store.stats()
    assert questions.latest_turns(20_000).num_rows == 16_000 and stats["bad_total"] == 0
    assert stats["lines"] == 16_000
    assert len(calls) >= 2 and calls[-1][0] == calls[-1][1] >= big_log.stat().st_size - 1
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    again = []
    store.questions(progress=lambda done, total: again.append((done, total)))
    assert not [c for c in again if c[1] > 1_000_000]  # nothing new to read: no long progress
