"""Tokens, cost and prompt versions: a Space with the openai responder against loopback model
servers (one that reports usage in its last chunk, one that reports none), the log it writes,
and the store reading those lines beside older ones."""
from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from gradio_client import Client
from openai_fake import CompletionsServer

from chatcore.llm import costs, openai_chat, prompts

USAGE = {"prompt_tokens": 1200, "completion_tokens": 85, "total_tokens": 1285,
         "prompt_tokens_details": {"cached_tokens": 200},
         "completion_tokens_details": {"reasoning_tokens": 30}}
PRICES = {"m-priced": {"input": 2.5, "output": 10.0}}
SYSTEM = "You are the support assistant of a parcel company. Be brief."


def _space(space_factory, tmp_path, server, model, **env):
    return space_factory(tmp_path / model / "log.jsonl", args=["--responder", "openai"],
                         env={"OPENAI_BASE_URL": server.url, "OPENAI_MODEL": model, "OPENAI_MAX_RETRIES": "0",
                              "CHAT_PRICES": json.dumps(PRICES), "CHAT_SYSTEM_PROMPT": SYSTEM, **env})


def _ask(sp, text, cid=None):
    return Client(sp.url, verbose=False).predict(message={"text": text, "files": []},
                                                 conversation_id=cid or str(uuid.uuid4()), api_name="/chat")


def test_usage_in_the_last_chunk_is_logged_with_its_cost_and_prompt_version(space_factory, tmp_path):
    with CompletionsServer(usage=USAGE) as server:
        sp = _space(space_factory, tmp_path, server, "m-priced")
        assert _ask(sp, "where is my parcel?") == "Model reply to: where is my parcel? (2 msgs)"
    sent = server.requests[-1]["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0] == {"role": "system", "content": SYSTEM}
    rec = sp.records()[-1]
    assert rec["usage"] == {"input_tokens": 1200, "output_tokens": 85, "cached_tokens": 200,
                            "reasoning_tokens": 30}
    price = PRICES["m-priced"]
    assert rec["cost_usd"] == pytest.approx((1200 * price["input"] + 85 * price["output"]) / 1e6)
    assert rec["prompt_version"] == hashlib.sha256(SYSTEM.encode()).hexdigest()[:prompts.VERSION_HASH_LENGTH]
    assert sp.health()["prompt_version"] == rec["prompt_version"]


def test_a_server_without_usage_logs_no_usage_and_no_cost(space_factory, tmp_path):
    with CompletionsServer(usage=None) as server:
        sp = _space(space_factory, tmp_path, server, "m-priced", CHAT_PROMPT_VERSION="faq-v3")
        _ask(sp, "hello")
    assert server.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    rec = sp.records()[-1]
    assert "usage" not in rec and "cost_usd" not in rec
    assert rec["prompt_version"] == "faq-v3"  # the name given wins over the hash


def test_a_model_without_a_price_has_usage_but_no_cost(space_factory, tmp_path):
    with CompletionsServer(usage=USAGE) as server:
        sp = _space(space_factory, tmp_path, server, "m-unpriced")
        _ask(sp, "hello")
    rec = sp.records()[-1]
    assert rec["usage"]["input_tokens"] == 1200 and "cost_usd" not in rec


def test_echo_turns_and_the_seed_shape_stay_as_they_were(space_factory, tmp_path):
    sp = space_factory(tmp_path / "echo" / "log.jsonl")
    _ask(sp, "hi")
    rec = sp.records()[-1]
    assert not {"usage", "cost_usd", "prompt_version"} & set(rec)


def test_prices_are_checked_and_cached_tokens_use_their_own_price():
    with pytest.raises(ValueError, match="CHAT_PRICES"):
        costs.parse_prices("{not json")
    with pytest.raises(ValueError, match="output"):
        costs.parse_prices('{"m": {"input": 1}}')
    with pytest.raises(ValueError, match="input"):
        costs.parse_prices('{"m": {"input": -1, "output": 1}}')
    prices = costs.parse_prices('{"m": {"input": 2, "output": 8, "cached_input": 0.5}}')
    usage = openai_chat.Usage(1000, 100, cached_tokens=400)
    assert costs.cost_usd(prices, "m", usage) == pytest.approx((600 * 2 + 400 * 0.5 + 100 * 8) / 1e6)
    assert costs.cost_usd(prices, "other", usage) is None
    assert costs.cost_usd(prices, "m", None) is None


def test_the_judge_never_sends_the_responders_key(monkeypatch):
    """The SDK reads OPENAI_API_KEY by itself; a judge without its own key must not send it."""
    from chatcore.staff.evaluate import Judge

    monkeypatch.setenv("OPENAI_API_KEY", "sk-responder-secret")
    with CompletionsServer() as server:
        for stream in (False, True):
            judge = Judge(server.url, stream=stream, prompt='{reply} -> answer {{"pass": true, "reason": "ok"}}')
            try:
                with pytest.raises(Exception):  # the fake echoes, which is not a verdict
                    judge.verdict("q", "ref", None, "new")
            finally:
                judge.close()
    assert [r["auth"] for r in server.requests] == [None, None]
    assert [r["body"].get("stream", False) for r in server.requests] == [False, True]


def test_the_store_reads_new_fields_old_lines_and_broken_usage_alike(tmp_path):
    """Every line through the fast (pyarrow) path and the reference parser gives the same rows."""
    from chatcore.log import records
    from chatcore.store import parse_bytes, parse_line
    from chatcore.log.records import BadRecord

    lines = []
    for i in range(60):
        rec = records.make_record(conversation_id=f"c{i % 7}", turn=i, user_text="q", response="a",
                                  latency_ms=3.5, source="api", backend="openai", model="m",
                                  usage={"input_tokens": 10 + i, "output_tokens": i, "cached_tokens": 1}
                                  if i % 3 else None,
                                  cost_usd=0.0001 * i if i % 3 else None,
                                  prompt_version="v1" if i % 2 else None)
        lines.append(json.dumps(rec))
    lines.append(json.dumps({"timestamp": "2026-01-01T00:00:00", "conversation_id": "seed",
                             "user_text": "hi", "response": ["a", "b"], "history": []}))
    lines += [
        '{"v":1,"ts":"2026-01-01T00:00:00Z","conversation_id":"x","usage":5}',
        '{"v":1,"ts":"2026-01-01T00:00:00Z","conversation_id":"x","usage":{"input_tokens":1.5}}',
        '{"v":1,"ts":"2026-01-01T00:00:00Z","conversation_id":"x","cost_usd":"free"}',
        '{"v":1,"ts":"2026-01-01T00:00:00Z","conversation_id":"y","cost_usd":-1,"usage":{"output_tokens":4}}',
        '{"v":1,"ts":"2026-01-01T00:00:00Z","conversation_id":"y","input_tokens":99}',
    ]
    table, bad = parse_bytes(("\n".join(lines) + "\n").encode())
    assert bad == {"wrong_type": 3}
    want = []
    for line in lines:
        try:
            want.append(parse_line(line.encode()))
        except BadRecord:
            pass
    cols = ["conversation_id", "input_tokens", "output_tokens", "cost_usd", "prompt_version"]
    got = table.select(cols).to_pylist()
    assert got == [{c: w[c] for c in cols} for w in want]
    assert got[1]["input_tokens"] == 11 and got[0]["input_tokens"] is None
    assert got[-2] == {"conversation_id": "y", "input_tokens": None, "output_tokens": 4, "cost_usd": None,
                       "prompt_version": None}
    assert got[-1]["input_tokens"] is None  # only usage.input_tokens counts


def _turn(writer, cid, ts, cost=None, usage=None, model="m", version=None, latency=100.0):
    from chatcore.log.records import make_record

    writer.append(make_record(conversation_id=cid, turn=0, user_text="q", response="a", latency_ms=latency,
                              source="api", backend="openai", model=model, ts=ts, usage=usage, cost_usd=cost,
                              prompt_version=version))


def test_stats_json_adds_tokens_and_cost_for_the_range(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    from chatcore.log.writer import LogWriter

    log = tmp_path / "log.jsonl"
    w = LogWriter(log)
    _turn(w, "a", "2026-03-01T10:00:00.000Z", 0.25, {"input_tokens": 1000, "output_tokens": 50})
    _turn(w, "b", "2026-03-02T10:00:00.000Z", 0.5, {"input_tokens": 3000, "output_tokens": 70})
    _turn(w, "c", "2026-03-02T11:00:00.000Z", None, {"input_tokens": 7, "output_tokens": 3})  # no price
    _turn(w, "d", "2026-03-02T12:00:00.000Z")  # a server without usage

    def stats(*extra):
        out = subprocess.run([sys.executable, "-m", "chatcore", "stats", "--log", str(log), "--no-health",
                              "--format", "json", *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    every = stats()
    assert (every["input_tokens"], every["output_tokens"]) == (4007, 123)
    assert every["cost_usd"] == pytest.approx(0.75)
    since = stats("--since", "2026-03-02")
    assert (since["input_tokens"], since["output_tokens"], since["cost_usd"]) == (3007, 73, pytest.approx(0.5))
    empty = stats("--since", "2026-03-02T12:00:00")
    assert (empty["input_tokens"], empty["output_tokens"], empty["cost_usd"]) == (0, 0, None)


def test_spend_alert_once_a_day_and_across_a_restart(tmp_path):
    from chatcore.log.writer import LogWriter
    from chatcore.staff.alerts import Config, Watcher

    log = tmp_path / "log.jsonl"
    w = LogWriter(log)
    config = Config(log_path=log, hooks=[], space_url=None, spend_usd=1.0)

    def spend_alerts(watcher):
        watcher.poll_once()
        watcher.save()
        return [a["detail"] for a in watcher.recent if a["event"] == "spend"]

    watcher = Watcher(config)
    assert spend_alerts(watcher) == []  # a new watcher reads from the end of the log on
    _turn(w, "a", "2026-03-01T10:00:00.000Z", 0.6)
    assert spend_alerts(watcher) == []
    _turn(w, "b", "2026-03-01T11:00:00.000Z", 0.6)  # read by a restarted watcher: 1.2 USD that day
    watcher = Watcher(config)
    first = spend_alerts(watcher)
    assert len(first) == 1 and "1.20 USD on 2026-03-01" in first[0]
    _turn(w, "c", "2026-03-01T12:00:00.000Z", 0.6)
    assert spend_alerts(watcher) == first  # once a day
    _turn(w, "d", "2026-03-02T00:10:00.000Z", 0.9)
    assert spend_alerts(watcher) == first  # a new day starts from 0
    _turn(w, "e", "2026-03-02T00:20:00.000Z", 0.2)
    assert len(spend_alerts(watcher)) == 2
    with pytest.raises(SystemExit, match="CHAT_ALERT_SPEND_USD must be a number of USD, got 'lots'"):
        import os
        os.environ["CHAT_ALERT_SPEND_USD"] = "lots"
        try:
            Config.from_env(log)
        finally:
            del os.environ["CHAT_ALERT_SPEND_USD"]


def test_the_hf_responder_reports_usage_where_its_server_sends_it(monkeypatch):
    from chatcore.llm.responders import TurnReport, make_hf

    for usage, want in ((USAGE, openai_chat.Usage(1200, 85, 200, 30)), (None, None)):
        with CompletionsServer(usage=usage) as server:
            monkeypatch.setenv("HF_BASE_URL", server.url.removesuffix("/v1"))
            report = TurnReport()
            text = "".join(make_hf().answer("hello", [], report))
        assert text == "Model reply to: hello (1 msgs)"
        assert server.requests[-1]["body"]["stream_options"] == {"include_usage": True}
        assert report.usage == want


def test_a_handoff_the_model_asked_for_raises_the_person_alert(tmp_path):
    from chatcore.log import records
    from chatcore.log.writer import LogWriter
    from chatcore.staff.alerts import Config, Watcher

    log = tmp_path / "log.jsonl"
    w = LogWriter(log)
    watcher = Watcher(Config(log_path=log, hooks=[], space_url=None))
    watcher.poll_once()
    w.append(records.make_event(conversation_id="m-1", kind="handoff_requested", at_turn=1, via="model"))
    watcher.poll_once()
    assert [(a["event"], a["conversation_id"], a["detail"]) for a in watcher.recent] == \
        [("person_requested", "m-1", "the model asked for a person")]
