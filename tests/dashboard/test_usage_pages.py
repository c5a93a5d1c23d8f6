"""Tokens, cost and prompt versions on the dashboard (Streamlit's AppTest over a log the test
writes): the Overview's spend and per-version comparison, the Conversations page's cost column
and prompt-version filter."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from test_pages import _env, iso, metric, open_page  # noqa: F401  (_env: UTC, fresh caches)

from chatcore.log import annotations, records
from conftest import free_port


def _turn(cid, turn, ts, version, cost=None, usage=None, latency=100.0, model="m"):
    return records.make_record(conversation_id=cid, turn=turn, user_text=f"question of {cid}", response="a",
                               latency_ms=latency, source="widget", backend="openai", model=model, ts=iso(ts),
                               usage=usage, cost_usd=cost, prompt_version=version)


@pytest.fixture
def spend_log(tmp_path, monkeypatch):
    now = datetime.now(timezone.utc)
    week = now - timedelta(days=3)
    u = {"input_tokens": 1000, "output_tokens": 100}
    rows = [
        # v1, three days ago: two conversations, one handed to a person, one rated down
        _turn("old-a", 0, week, "v1", 0.02, u, latency=400), _turn("old-a", 1, week, "v1", 0.02, u, latency=400),
        _turn("old-b", 0, week, "v1", 0.01, u, latency=600),
        # v2, today: two conversations, both rated up, one priced model and one without a price
        _turn("new-a", 0, now - timedelta(seconds=30), "v2", 0.005, u, latency=100),
        _turn("new-b", 0, now - timedelta(seconds=20), "v2", None, {"input_tokens": 50, "output_tokens": 5},
              latency=200, model="unpriced"),
    ]
    log = tmp_path / "chat.jsonl"
    with open(log, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps(records.make_event(conversation_id="old-a", kind="handoff_taken", at_turn=2,
                                              staff="Ann", ts=iso(week))) + "\n")
    annotations.record_feedback(log, "old-b", 0, "down", by="visitor", source="widget")
    annotations.record_feedback(log, "new-a", 0, "up", by="visitor", source="widget")
    annotations.record_feedback(log, "new-b", 0, "up", by="visitor", source="widget")
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    return log


def test_overview_shows_tokens_cost_and_compares_prompt_versions(spend_log):
    at = open_page("overview")
    assert metric(at, "Tokens today") == "1,050 / 105"
    assert metric(at, "Cost today") == "$0.0050"
    assert metric(at, "Tokens, 7 days") == "4,050 / 405"
    assert metric(at, "Cost, 7 days") == "$0.0550"
    frames = {tuple(d.value.columns): d.value for d in at.dataframe}
    versions = next(v for cols, v in frames.items() if "prompt version" in cols and "👎 share" in cols)
    by = {r["prompt version"]: r for r in versions.to_dict("records")}
    assert list(by) == ["v2", "v1"]  # newest first
    assert (by["v1"]["conversations"], by["v1"]["👎 share"], by["v1"]["handed to a person"]) == (2, "100 %", "50 %")
    assert (by["v2"]["conversations"], by["v2"]["👎 share"], by["v2"]["handed to a person"]) == (2, "0 %", "0 %")
    assert by["v1"]["reply time p50"] != by["v2"]["reply time p50"]
    assert by["v1"]["cost per conversation"] == "$0.0250" and by["v2"]["cost per conversation"] == "$0.0025"
    models = next(v for cols, v in frames.items() if cols[0] == "model")
    assert "unpriced" in set(models["model"])


def test_overview_hides_spend_when_nothing_reports_usage(tmp_path, monkeypatch):
    log = tmp_path / "chat.jsonl"
    log.write_text(json.dumps(records.make_record(
        conversation_id="e", turn=0, user_text="q", response="a", latency_ms=1, source="api",
        backend="echo", ts=iso(datetime.now(timezone.utc)))) + "\n")
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    at = open_page("overview")
    assert not [m for m in at.metric if m.label == "Cost today"]


def test_conversations_show_cost_and_filter_by_prompt_version(spend_log):
    at = open_page("conversations")
    table = at.dataframe[0].value
    cost = dict(zip(table["conversation_id"], table["cost"]))
    assert cost["old-a"] == pytest.approx(0.04) and cost["new-a"] == pytest.approx(0.005)
    assert cost["new-b"] is None or cost["new-b"] != cost["new-b"]  # no price: empty (None or NaN), never 0
    picker = next(s for s in at.selectbox if s.key == "conv_prompt_version")
    assert sorted(picker.options) == ["v1", "v2"]
    picker.select("v1").run()
    assert not at.exception
    assert sorted(at.dataframe[0].value["conversation_id"]) == ["old-a", "old-b"]
    assert metric(at, "Conversations") == "2"
