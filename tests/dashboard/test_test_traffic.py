"""Real visitors by default: replays and simulated visitors (test traffic) stay out of the
Overview, the Conversations list and the CLI's list and stats unless asked for, with one rule
(:func:`chatcore.log.records.is_test_traffic`, asked in SQL by the store)."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from chatcore.log.records import is_test_traffic, make_event
from conftest import ROOT, free_port
from test_pages import _env, metric, open_page, rec, shown_ids, write_log  # noqa: F401  (_env: autouse)

REAL = {"real-widget": "widget", "real-api": "api"}
TEST = {"sim-visitor-1": "simulated", "replay-5f1c": "replay", "replay-7a2b": "operator"}


@pytest.fixture
def mixed_log(tmp_path, monkeypatch):
    """Two real visitors and three test conversations today, each with an error and a request
    for a person."""
    log = tmp_path / "logs" / "chat.jsonl"
    now = datetime.now(timezone.utc)
    rows = []
    for i, (cid, source) in enumerate({**REAL, **TEST}.items()):
        at = now - timedelta(minutes=30 - i)
        rows += [rec(cid, 0, at, f"question of {cid}", source=source),
                 rec(cid, 1, at + timedelta(seconds=5), "second", source=source, error=f"failed in {cid}")]
    write_log(log, rows)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # noqa: E731
    write_log(log, [make_event(conversation_id=cid, kind="handoff_requested", at_turn=2, ts=iso(now))
                    for cid in {**REAL, **TEST}])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    return log


def test_the_store_and_the_inbox_agree_on_what_is_test_traffic(mixed_log):
    from chatcore.store.questions import Filters, open_questions

    q = open_questions(mixed_log)
    q.sync()
    assert q.test_conversation_ids() == set(TEST)
    assert {cid for cid, source in {**REAL, **TEST}.items() if is_test_traffic(cid, source)} == set(TEST)
    assert q.has_test_traffic()
    assert set(q.conversations(Filters(include_test=False)).ids()) == set(REAL)
    assert set(q.conversations(Filters()).ids()) == set(REAL) | set(TEST)
    now = datetime.now(timezone.utc)
    real = q.overview(now - timedelta(hours=2), now - timedelta(hours=1), include_test=False)
    assert (real["conversations_total"], real["turns_total"], real["errors_today"]) == (2, 4, 2)
    assert q.overview(now - timedelta(hours=2), now - timedelta(hours=1))["conversations_total"] == 5
    assert sum(q.turns_per_hour(now - timedelta(hours=2), 3, include_test=False)) == 4
    assert set(q.latest_errors(10, include_test=False).column("conversation_id").to_pylist()) == set(REAL)
    assert q.spend(include_test=False) == [] or q.spend(include_test=False)[0]["turns"] == 4
    assert set(q.summary(include_test=False).column("conversation_id").to_pylist()) == set(REAL)
    from chatcore.staff.handoff_log import handoff_figures

    assert handoff_figures(mixed_log, now - timedelta(hours=1))["requests"] == 5
    assert handoff_figures(mixed_log, now - timedelta(hours=1), q.test_conversation_ids())["requests"] == 2


def test_overview_counts_real_visitors_unless_test_traffic_is_switched_on(mixed_log):
    at = open_page("overview")
    assert metric(at, "Conversations today") == "2"
    assert metric(at, "Turns today") == "4" and metric(at, "Errors today") == "2"
    assert metric(at, "Handed to a person") == "0 %"
    errors = " ".join(str(v) for d in at.dataframe for v in d.value.to_dict("list").values())
    assert "failed in real-widget" in errors and "failed in sim-visitor-1" not in errors
    at.toggle(key="overview_include_test").set_value(True).run()
    assert not at.exception, at.exception
    assert metric(at, "Conversations today") == "5" and metric(at, "Turns today") == "10"
    errors = " ".join(str(v) for d in at.dataframe for v in d.value.to_dict("list").values())
    assert "failed in sim-visitor-1" in errors


def test_overview_of_only_test_traffic_says_where_it_is(tmp_path, monkeypatch):
    log = tmp_path / "logs" / "chat.jsonl"
    write_log(log, [rec("sim-1", 0, datetime.now(timezone.utc), source="simulated")])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    at = open_page("overview")
    assert metric(at, "Turns today") == "0"
    assert any("Only test traffic so far" in i.value for i in at.info)


def test_conversations_list_real_visitors_unless_test_traffic_is_switched_on(mixed_log):
    at = open_page("conversations")
    assert set(shown_ids(at)) == set(REAL)
    assert metric(at, "Conversations") == "2"
    at.text_input(key="conv_search").input("question of sim-visitor").run()
    assert shown_ids(at) == []
    assert any("1 test conversation(s) do" in i.value for i in at.info)
    at.toggle(key="conv_include_test").set_value(True).run()
    assert shown_ids(at) == ["sim-visitor-1"]
    at.text_input(key="conv_search").input("").run()
    assert set(shown_ids(at)) == set(REAL) | set(TEST)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chatcore", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_list_and_stats_count_real_visitors_unless_asked(mixed_log):
    for extra, expected in (((), set(REAL)), (("--include-test",), set(REAL) | set(TEST))):
        for when in ((), ("--since", "2000-01-01")):  # the saved whole-log list and the dated one
            out = run_cli("conversations", "--log", str(mixed_log), "--format", "json", *when, *extra)
            assert out.returncode == 0, out.stderr
            assert {r["conversation_id"] for r in json.loads(out.stdout)} == expected, (when, extra)
        out = run_cli("conversations", "--log", str(mixed_log), *extra)
        assert out.stdout.strip().endswith(f"{len(expected)} conversation(s)")
        out = run_cli("stats", "--log", str(mixed_log), "--no-health", "--format", "json", *extra)
        assert out.returncode == 0, out.stderr
        figures = json.loads(out.stdout)
        assert (figures["conversations"], figures["turns"], figures["errors_today"]) == \
            (len(expected), 2 * len(expected), len(expected))
    assert "--include-test" in run_cli("conversations", "--help").stdout
