"""The Overview's figures and the Live page's first rows are SQL questions over the store.

Each answer is compared with the pandas computation the pages used to run over the whole
log as one frame (kept here as the reference), on the same logs: days cut by the viewer's
time zone, an empty log, turns without a reply time, errors, equal times. The pages are
then opened under AppTest and must not build the pandas form of the log at all.
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from chatcore.dashboard import views as dash
from chatcore.store import LogStore
from chatcore.store.questions import Questions, _read_summary, _write_summary
from conftest import ROOT, apptest_knows_the_entry_navigates, free_port

ENTRY = str(ROOT / "dashboard.py")
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Pacific/Chatham", "Pacific/Kiritimati"]


# ------------------------------------------------------------- the pandas reference


def ref_turns_per_hour(frame: pd.DataFrame, now: datetime, tz, hours: int = 24) -> pd.DataFrame:
    end = pd.Timestamp(now).tz_convert(tz).floor("h") + pd.Timedelta(hours=1)
    start = end - pd.Timedelta(hours=hours)
    index = pd.date_range(start, periods=hours, freq="h")
    if frame.empty:
        counts = pd.Series(0, index=index)
    else:
        local = frame["ts"].dt.tz_convert(tz)
        local = local[(local >= start) & (local < end)]
        counts = local.dt.floor("h").value_counts().reindex(index, fill_value=0)
    return pd.DataFrame({"hour": [t.strftime("%H:00") for t in index], "turns": counts.astype(int).to_numpy(),
                         "start": index})


def ref_error_turns(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    if frame.empty:
        return frame.head(0)
    has_error = frame["error"].map(lambda e: bool(e) if isinstance(e, str) else False)
    return frame[has_error].sort_values("ts", ascending=False).head(limit)


def ref_frame_records(frame: pd.DataFrame, last: int | None = None) -> list[dict]:
    if frame.empty:
        return []
    ordered = frame.sort_values("ts", kind="stable")
    if last is not None:
        ordered = ordered.tail(last)
    out = []
    for row in ordered.to_dict("records"):
        for key, value in list(row.items()):
            if value is not None and not isinstance(value, (str, list, dict)) and pd.isna(value):
                row[key] = None
        out.append(row)
    return out


def ref_catch_up(rows: list[dict], frame: pd.DataFrame, limit: int = 500) -> tuple[list[dict], int]:
    newest = max((pd.Timestamp(r["ts"]) for r in rows), default=None)
    recent = frame if newest is None or frame.empty else frame[frame["ts"] >= newest]
    before = {dash.record_key(r) for r in rows}
    merged = dash.merge_live(rows, ref_frame_records(recent, last=limit), limit)
    return merged, sum(1 for r in merged if dash.record_key(r) not in before)


# ------------------------------------------------------------------------- logs


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def line(cid: str, turn: int, ts: datetime, latency=120.0, error=None, source="widget", text="q") -> dict:
    rec = {"v": 1, "ts": iso(ts), "conversation_id": cid, "turn": turn, "user_text": f"{text} {cid}/{turn}",
           "files": [], "response": "a", "source": source, "backend": "echo", "model": None, "error": error,
           "session": None}
    if latency is not ...:
        rec["latency_ms"] = latency
    return rec


def write(path: Path, recs: list[dict], extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
        f.write(extra)
    return path


def mixed_log(path: Path, now: datetime, n: int = 3000, seed: int = 5) -> Path:
    """Turns over the last three days and a little ahead of ``now``: several per
    conversation, some at equal times, a few exactly on hour and day boundaries of
    every zone tested, some without a reply time, some with errors (and empty errors)."""
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        ts = now - timedelta(seconds=rng.uniform(-600, 3 * 86400))
        ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
        if i % 97 == 0:  # equal times
            ts = recs[-1]["_ts"] if recs else ts
        latency = round(rng.uniform(50, 5000), 3) if i % 11 else (None if i % 2 else ...)
        error = rng.choice(["timeout", "backend down", "", None, None, None, None, None]) if i % 7 == 0 else None
        r = line(f"c{rng.randrange(n // 6):04d}", i % 9, ts, latency=latency, error=error,
                 source=rng.choice(["widget", "api", "operator"]))
        r["_ts"] = ts
        recs.append(r)
    for name in ZONES:  # a turn at the zone's midnight and one just before it, and on the hour
        day = dash.start_of_day(now, ZoneInfo(name))
        for k, ts in enumerate([day, day - timedelta(microseconds=1000), day - timedelta(hours=5),
                                now - timedelta(minutes=5), now - timedelta(minutes=5, milliseconds=1)]):
            recs.append({**line(f"edge-{name}", k, ts, error="at the edge" if k == 0 else None), "_ts": ts})
    rng.shuffle(recs)  # file order is not time order
    return write(path, [{k: v for k, v in r.items() if k != "_ts"} for r in recs])


def both(log: Path):
    """The pandas frame of the log (the reference) and the SQL questions over it."""
    frame = LogStore(log, cache_dir=False).frame
    return frame, dash.SharedStore(log).questions()


NOW = datetime(2026, 11, 21, 12, 34, 56, 789000, tzinfo=timezone.utc)


# ------------------------------------------------------------------------ figures


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("now", [NOW, datetime(2026, 11, 21, 0, 0, tzinfo=timezone.utc),
                                 datetime(2026, 11, 20, 23, 59, 59, 999000, tzinfo=timezone.utc),
                                 datetime(2026, 11, 20, 18, 30, tzinfo=timezone.utc)])
def test_overview_figures_match_the_pandas_figures(tmp_path, zone, now):
    log = mixed_log(tmp_path / "chat.jsonl", now)
    frame, questions = both(log)
    tz = ZoneInfo(zone)
    want = dash.overview_figures(frame, now=now, tz=tz)
    got = dash.figures_of(questions, now=now, tz=tz)
    assert got.turns_today > 0 and got.errors_today > 0 and got.active_now > 0  # the log covers every figure
    for field in ("conversations_today", "turns_today", "active_now", "errors_today", "turns_total",
                  "conversations_total"):
        assert getattr(got, field) == getattr(want, field), field
    assert got.latency_p50 == pytest.approx(want.latency_p50, rel=1e-12)
    assert got.latency_p95 == pytest.approx(want.latency_p95, rel=1e-12)


@pytest.mark.parametrize("zone", ZONES)
def test_turns_per_hour_match_the_pandas_counts(tmp_path, zone):
    log = mixed_log(tmp_path / "chat.jsonl", NOW)
    frame, questions = both(log)
    tz = ZoneInfo(zone)
    for now in (NOW, NOW.replace(minute=0, second=0, microsecond=0), NOW + timedelta(hours=7, minutes=13)):
        want = ref_turns_per_hour(frame, now, tz)
        got = dash.turns_per_hour(questions, now=now, tz=tz)
        assert want["turns"].sum() > 0
        assert got["hour"].tolist() == want["hour"].tolist()
        assert got["turns"].tolist() == want["turns"].tolist()
        assert list(got["start"]) == list(want["start"])


def test_turns_per_hour_across_a_clock_change(tmp_path):
    """New York sets its clocks back on 2026-11-01: 01:00 comes twice. (The pandas floor of a
    local time raises in that hour; the question counts by absolute hours from the first start.)"""
    tz = ZoneInfo("America/New_York")
    now = datetime(2026, 11, 1, 6, 40, tzinfo=timezone.utc)  # 01:40 EST, the second 01:00 hour
    recs = [line(f"c{i}", 0, now - timedelta(minutes=10 * i)) for i in range(150)]
    questions = dash.SharedStore(write(tmp_path / "chat.jsonl", recs)).questions()
    got = dash.turns_per_hour(questions, now=now, tz=tz)
    assert got["hour"].tolist()[-3:] == ["00:00", "01:00", "01:00"]
    starts = list(got["start"]) + [got["start"].iloc[-1] + pd.Timedelta(hours=1)]
    want = [sum(1 for r in recs if starts[k] <= pd.Timestamp(r["ts"]) < starts[k + 1]) for k in range(24)]
    assert got["turns"].tolist() == want and want[-1] == 5 and sum(want) == 23 * 6 + 5  # 01:00 .. 01:40 (EST)


def test_empty_and_missing_logs(tmp_path):
    empty = write(tmp_path / "empty.jsonl", [])
    frame, questions = both(empty)
    assert questions is not None
    want = dash.overview_figures(frame, now=NOW)
    assert dash.figures_of(questions, now=NOW) == want == dash.OverviewFigures(0, 0, 0, None, None, 0, 0, 0)
    assert dash.turns_per_hour(questions, now=NOW)["turns"].tolist() == [0] * 24
    assert dash.error_turns(questions) == [] and dash.latest_records(questions) == []
    assert dash.catch_up([], questions) == ([], 0)
    missing = dash.SharedStore(tmp_path / "nothing.jsonl")
    assert missing.questions() is None and missing.stats()["missing"]
    assert dash.figures_of(None, now=NOW) == want
    assert dash.turns_per_hour(None, now=NOW)["turns"].tolist() == [0] * 24


def test_no_reply_time_today(tmp_path):
    """Turns without a logged reply time (null or absent) are left out of the percentiles;
    with none at all today the percentiles are None, as in pandas."""
    recs = [line("a", 0, NOW - timedelta(minutes=1), latency=None), line("a", 1, NOW, latency=...),
            line("b", 0, NOW - timedelta(days=1), latency=100.0)]
    frame, questions = both(write(tmp_path / "chat.jsonl", recs))
    want = dash.overview_figures(frame, now=NOW)
    got = dash.figures_of(questions, now=NOW)
    assert got == want and got.latency_p50 is None and got.turns_today == 2
    recs.append(line("c", 0, NOW, latency=300.0))
    frame, questions = both(write(tmp_path / "chat2.jsonl", recs))
    got = dash.figures_of(questions, now=NOW)
    assert got == dash.overview_figures(frame, now=NOW) and got.latency_p50 == got.latency_p95 == 300.0


def test_latest_errors_match_the_pandas_list(tmp_path):
    base = NOW - timedelta(days=2)
    recs = [line(f"c{i % 13}", i, base + timedelta(seconds=37 * i),
                 error=(["timeout", "", None, "backend down: <b>x</b>"][i % 4] if i % 3 == 0 else None))
            for i in range(400)]
    random.Random(1).shuffle(recs)
    frame, questions = both(write(tmp_path / "chat.jsonl", recs, extra="{broken\n"))
    for limit in (1, 10, 1000):
        want = ref_error_turns(frame, limit)
        got = dash.error_turns(questions, limit)
        assert len(got) == len(want) > 0
        assert [(r["ts"], r["conversation_id"], r["user_text"], r["error"]) for r in got] == \
            list(zip(want["ts"], want["conversation_id"], want["user_text"], want["error"]))
    assert all(r["error"] for r in dash.error_turns(questions, 1000))  # an empty error is no error


# ---------------------------------------------------------------------------- live


def test_latest_turns_match_the_pandas_records(tmp_path):
    """Oldest first, equal times in file order; every field as the frame had it (None for
    a missing value, lists for files)."""
    log = mixed_log(tmp_path / "chat.jsonl", NOW, n=1200)
    frame, questions = both(log)
    for last in (1, 50, 97, 5000):
        want = ref_frame_records(frame, last=last)
        got = dash.latest_records(questions, last)
        assert len(got) == min(last, len(frame))
        assert got == want


def test_catch_up_matches_the_pandas_catch_up(tmp_path):
    recs = [line(f"c{i % 5}", i, NOW + timedelta(seconds=i // 3)) for i in range(60)]  # three per second
    frame, questions = both(write(tmp_path / "chat.jsonl", recs))
    all_rows = ref_frame_records(frame)
    for seen in (0, 1, 10, 31, 59, 60):
        shown = dash.merge_live([], all_rows[:seen])
        want_rows, want_added = ref_catch_up(shown, frame)
        got_rows, got_added = dash.catch_up(shown, questions)
        assert (got_rows, got_added) == (want_rows, want_added)
        assert got_added == 60 - seen and len(got_rows) == 60
    shown = dash.merge_live([], all_rows)
    assert dash.catch_up(shown, questions, limit=20) == ref_catch_up(shown, frame, limit=20)


# --------------------------------------------------------------- the pages themselves


@pytest.fixture
def no_frames(monkeypatch):
    """Counts every conversion of stored rows to pandas (``LogStore.frame``, the eager
    conversion while parsing) in this process."""
    from chatcore.store import frames

    calls = []
    real = frames._to_pandas

    def counting(table):
        calls.append(table.num_rows)
        return real(table)

    monkeypatch.setattr(frames, "_to_pandas", counting)
    monkeypatch.setenv("CHAT_TIMEZONE", "UTC")
    apptest_knows_the_entry_navigates(monkeypatch)
    yield calls
    st.cache_resource.clear()


def test_overview_and_live_never_build_the_pandas_log(tmp_path, monkeypatch, no_frames):
    now = datetime.now(timezone.utc)
    log = write(tmp_path / "chat.jsonl",
                [line("a", 0, now - timedelta(seconds=30), latency=100.0),
                 line("a", 1, now - timedelta(seconds=20), latency=300.0, error="backend down"),
                 *[line(f"old{i}", 0, now - timedelta(days=2, seconds=i)) for i in range(80)]])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    at = AppTest.from_file(ENTRY, default_timeout=30).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Turns today"] == "2" and metrics["Errors today"] == "1" and metrics["Lines read"] == "82"
    errors = next(d.value for d in at.dataframe if "error" in d.value.columns)
    assert errors["error"].tolist() == ["backend down"]
    at.switch_page("pages/live.py").run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "user_text" in d.value.columns)  # (the inbox comes first)
    assert len(table) == 50 and table["user_text"].iloc[0] == "q a/1"  # the last 50, newest first
    from pages._shared import shared_store

    store = shared_store(str(log))._store
    assert store is not None and store.eager_frame is False and store._frame is None
    assert no_frames == []


# ------------------------------------------------------------------ handoff events


def test_event_lines_follow_the_log(tmp_path):
    """The Overview's handoff figures read the log's event lines once per process, then only
    what was appended; a partial last line waits, a replaced or rewritten shard is read again."""
    from chatcore.staff.handoff_log import _EVENTS, conversation_events, handoff_figures
    from chatcore.log.records import make_event

    log = tmp_path / "chat.jsonl"
    since = NOW - timedelta(hours=1)

    def ev(kind, cid, minutes, **kw):
        return json.dumps(make_event(conversation_id=cid, kind=kind, at_turn=0,
                                     ts=iso(NOW - timedelta(minutes=minutes)), **kw)) + "\n"

    turns = "".join(json.dumps(line(f"t{i}", 0, NOW - timedelta(minutes=30))) + "\n" for i in range(50))
    log.write_text(turns + ev("handoff_requested", "a", 20) + ev("handoff_taken", "a", 19, staff="Maya"))
    first = handoff_figures(log, since)
    assert (first["handoffs"], first["requests"]) == (1, 1)
    size = log.stat().st_size
    assert _EVENTS.offset(log, log) == size  # read up to the end
    with open(log, "a") as f:  # appended: a new takeover, and half of a line
        f.write(ev("handoff_taken", "b", 5, staff="Ann"))
        partial = ev("staff_message", "b", 4, staff="Ann", text="hello")
        f.write(partial[:20])
    assert handoff_figures(log, since)["handoffs"] == 2
    assert [e["kind"] for e in conversation_events(log, "b")] == ["handoff_taken"]
    with open(log, "a") as f:
        f.write(partial[20:])
    assert [e["kind"] for e in conversation_events(log, "b")] == ["handoff_taken", "staff_message"]
    assert handoff_figures(log, since)["first_replies"] == 1
    # rewritten from the start, same inode, longer: read again
    with open(log, "r+") as f:
        f.write(ev("handoff_requested", "z", 3) + turns + ev("handoff_taken", "z", 2, staff="Kim") + " " * 2000 + "\n")
    got = handoff_figures(log, since)
    assert (got["handoffs"], got["requests"]) == (1, 1) and conversation_events(log, "a") == []
    # replaced by another file (a new inode), shorter
    tmp = tmp_path / "new.jsonl"
    tmp.write_text(turns)
    tmp.replace(log)
    assert handoff_figures(log, since)["handoffs"] == 0


def test_answers_over_many_chunks(tmp_path):
    """Rows read in several goes are several Arrow chunks: the first questions of the list,
    the last turns and the latest errors are picked chunk by chunk, and still right."""
    from chatcore.store.questions import Filters, _take_sorted

    log = tmp_path / "chat.jsonl"
    recs = [line(f"c{i % 17}", i, NOW - timedelta(minutes=500 - i), text=f"q{i}",
                 error="boom" if i % 29 == 0 else None) for i in range(300)]
    random.Random(3).shuffle(recs)
    shared = dash.SharedStore(log)
    for part in range(0, 300, 60):  # five appends, five reads
        with open(log, "a") as f:
            for r in recs[part:part + 60]:
                f.write(json.dumps(r) + "\n")
        questions = shared.questions()
    assert questions._table.column("user_text").num_chunks >= 5
    frame = LogStore(log, cache_dir=False).frame
    first = frame.sort_values("ts", kind="stable").groupby("conversation_id")["user_text"].first()
    table = questions.conversations(Filters()).table
    assert dict(zip(table.column("conversation_id").to_pylist(), table.column("first_user_text").to_pylist())) == \
        first.to_dict()
    assert dash.latest_records(questions, 120) == ref_frame_records(frame, last=120)
    want = ref_error_turns(frame, 5)
    assert [r["user_text"] for r in dash.error_turns(questions, 5)] == list(want["user_text"])
    col = questions._table.column("user_text")
    rows = np.array([0, 1, 59, 60, 61, 119, 120, 299])
    assert _take_sorted(col, rows).to_pylist() == [col[int(i)].as_py() for i in rows]


def _priced(cid: str, turn: int, ts: datetime, cost: float, version: str, text: str = "q") -> dict:
    from chatcore.log import records

    return records.make_record(conversation_id=cid, turn=turn, user_text=f"{text} {cid}", response="a",
                               latency_ms=100.0, source="widget", backend="openai", model="m", ts=iso(ts),
                               usage={"input_tokens": 10, "output_tokens": 1}, cost_usd=cost, prompt_version=version)


def test_spend_costs_and_versions_follow_the_log_as_it_grows(tmp_path):
    """Their answers are kept between runs: a turn appended later must still count."""
    from chatcore.store.questions import Questions

    now = datetime.now(timezone.utc)
    log = write(tmp_path / "chat.jsonl", [_priced("a", 0, now - timedelta(hours=2), 0.25, "v1")])
    q = Questions(LogStore(log))
    q.sync()
    assert q.spend()[0]["cost_usd"] == pytest.approx(0.25)
    assert q.conversation_costs(["a", "b"]) == pytest.approx({"a": 0.25})
    assert [r["prompt_version"] for r in q.spend(by="prompt_version")] == ["v1"]
    assert q.prompt_version_ids("v2") == frozenset()
    with open(log, "a", encoding="utf-8") as f:
        for rec in (_priced("b", 0, now - timedelta(hours=1), 0.5, "v2"), _priced("a", 1, now, 0.125, "v1")):
            f.write(json.dumps(rec) + "\n")
    q.sync()
    assert q.spend()[0]["turns"] == 3
    assert q.spend()[0]["cost_usd"] == pytest.approx(0.875)
    assert q.conversation_costs(["a", "b"]) == pytest.approx({"a": 0.375, "b": 0.5})
    assert [r["prompt_version"] for r in q.spend(by="prompt_version")] == ["v2", "v1"]
    assert q.prompt_version_ids("v2") == frozenset({"b"})
    assert {r["prompt_version"]: r["turns"] for r in q.prompt_versions()} == {"v1": 2, "v2": 1}


def test_a_search_reads_the_same_after_the_mapped_pages_are_dropped(tmp_path):
    """A restarted reader maps its segments; the search releases the pages it read, and every
    later read (the same search, a transcript) still sees the same bytes."""
    from chatcore.store.questions import Filters, Questions

    now = datetime.now(timezone.utc)
    recs = [line(f"c{i // 3}", i % 3, now - timedelta(minutes=600 - i), text="refund" if i % 7 == 0 else "hello")
            for i in range(600)]
    log = write(tmp_path / "chat.jsonl", recs)
    first = Questions(LogStore(log))
    first.sync()
    first.store.wait_cache()
    q = Questions(LogStore(log))  # from the segments on disk
    q.sync()
    assert q.store.stats["bytes"] == log.stat().st_size and not q.store.stats["pending_bytes"]
    assert list(q.store.__dict__.get("_mapped", ())), "the rows should come from mapped segments"
    want = sorted({r["conversation_id"] for r in recs if "refund" in r["user_text"]})
    q.SEARCH_PIECE = 64  # several pieces, each releasing the pages
    got = q.conversations(Filters(search="REFUND"))
    assert sorted(got.ids()) == want
    before = q.transcript("c7").to_pylist()
    q.store.release_mapped()
    assert sorted(set(q._search_hits("Refund", Filters()).column("conversation_id").to_pylist())) == want
    assert q.transcript("c7").to_pylist() == before
    assert [r["user_text"] for r in before] == [r["user_text"] for r in recs if r["conversation_id"] == "c7"]


def test_distinct_sources_and_prompt_versions_are_kept_beside_the_segments(tmp_path):
    now = datetime.now(timezone.utc)
    recs = [line(f"c{i}", 0, now - timedelta(minutes=100 - i), source=["widget", "api", None][i % 3]) for i in range(30)]
    for i, r in enumerate(recs):
        r["prompt_version"] = ["v2", "v1", ""][i % 3]
    log = write(tmp_path / "chat.jsonl", recs)
    first = Questions(LogStore(log))
    first.sync()
    assert first.sources() == ["api", "unknown", "widget"]  # (a turn without a source is "unknown")
    assert [v for v in first.distinct("prompt_version") if v] == ["v1", "v2"]
    first.store.wait_cache()

    # a fresh reader takes the values saved with the log's state, without reading the column:
    # a saved file changed behind its back (same state) is what it answers with
    saved = first._distinct_path()
    table, state = _read_summary(saved, ["column", "value"])
    _write_summary(saved, pa.table({"column": ["source", "source"], "value": ["api", "saved-only"]}),
                   json.dumps(state))
    q = Questions(LogStore(log))
    q.sync()
    assert q.sources() == ["api", "saved-only"]
    assert q.distinct("prompt_version") == []

    # appended turns: only the new rows are read and merged in
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(dict(line("new", 0, now, source="email"), prompt_version="v3")) + "\n")
    q.sync()
    assert q.sources() == ["api", "email", "saved-only"]
    assert q.distinct("prompt_version") == ["v3"]

    # a log rewritten in place is read whole again
    write(log, recs[:2])
    q.sync()
    assert q.sources() == ["api", "widget"]
    with pytest.raises(ValueError):
        q.distinct("user_text")
