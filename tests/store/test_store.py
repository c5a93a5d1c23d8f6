"""LogStore: incremental reading equals a full per-line re-read."""
from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from chatcore import store as store_mod
from chatcore.store import ingest as ingest_mod
from chatcore.store import segments as segments_mod
from chatcore.log.records import BAD_REASONS, COLUMNS, BadRecord, make_record
from chatcore.store import LogStore, load_log, parse_bytes, parse_line

# --------------------------------------------------------------------------- helpers


def reference(path: Path) -> tuple[list[dict], Counter, int]:
    """Per-line normalise over every shard: (rows, bad counts, pending bytes)."""
    paths = sorted(path.glob("*.jsonl")) if path.is_dir() else ([path] if path.exists() else [])
    rows, bad, pending = [], Counter(), 0
    for p in paths:
        data = p.read_bytes()
        lines = data.split(b"\n")
        pending += len(lines[-1])
        for line in lines[:-1]:
            try:
                rows.append(parse_line(line))
            except BadRecord as exc:
                bad[exc.reason] += 1
    return rows, bad, pending


def _py(value):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, (list, str)):
        return value.item()
    return value


def rows_of(df: pd.DataFrame) -> list[dict]:
    out = []
    cols = list(df.columns)
    for values in zip(*(df[c].tolist() for c in cols)):
        out.append({c: _py(v) for c, v in zip(cols, values)})
    return out


def norm_ref(rows: list[dict], columns=COLUMNS) -> list[dict]:
    return [{c: _py(r[c]) for c in columns} for r in rows]


def assert_matches(store: LogStore, path: Path) -> None:
    rows, bad, pending = reference(path)
    assert rows_of(store.frame) == norm_ref(rows, store.columns)
    stats = store.stats
    assert stats["lines"] == len(rows)
    assert stats["bad"] == {r: bad.get(r, 0) for r in BAD_REASONS}
    assert stats["bad_total"] == sum(bad.values())
    assert stats["pending_bytes"] == pending


T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def good_line(i: int, conv: str | None = None, day: int = 0) -> bytes:
    ts = (T0 + timedelta(days=day, seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{i % 1000:03d}Z"
    rec = make_record(
        conversation_id=conv or f"c{i % 7}",
        turn=i,
        user_text=f"question {i} é🙂",
        response=f"answer {i}\nline two",
        latency_ms=i * 1.5,
        source="widget" if i % 3 else "api",
        backend="echo",
        model=None if i % 2 else "m",
        error=None if i % 5 else "boom",
        files=[{"name": f"f{i}.png", "size": 3}] if i % 4 == 0 else None,
        session=None if i % 2 else "s",
        ts=ts,
    )
    return orjson.dumps(rec) + b"\n"


SEED_LINE = json.dumps(
    {
        "timestamp": "2026-10-01T10:00:00",
        "conversation_id": "seed-1",
        "user_text": "hi",
        "response": ["hello", "there"],
        "history": [["a", "b"]],
    }
).encode() + b"\n"

BAD_LINES = {
    "blank": [b"", b"   ", b"\t\r"],
    "bad_utf8": [b'{"conversation_id": "\xff\xfe", "ts": "2026-11-01T00:00:00Z"}', b"\xc3\x28"],
    "not_json": [b"hello world", b"{'single': 'quotes'}", b'{"a":1}{"b":2}', b"[" * 100_000, b"]]]"],
    "not_object": [b"[1, 2, 3]", b"42", b'"a string"', b"null", b"true"],
    "wrong_type": [
        b'{"conversation_id": 5, "ts": "2026-11-01T00:00:00Z"}',
        b'{"conversation_id": "a", "ts": 12345}',
        b'{"conversation_id": "a", "ts": "yesterday"}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "turn": "3"}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "turn": -1}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "turn": 1.5}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "latency_ms": "fast"}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "latency_ms": true}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "files": "x.png"}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "files": [{"size": 1}]}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "response": {"a": 1}}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "v": "1"}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "source": 3}',
        b'{"conversation_id": "", "ts": "2026-11-01T00:00:00Z"}',
        b'{"ts": "2026-11-01T00:00:00Z"}',
        b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "latency_ms": ' + b"9" * 400 + b"}",
    ],
    "truncated": [b'{"conversation_id": "a", "ts": "2026-11-0', b'{"conversation_id": "a", "turn": 1', b"{"],
}
# valid JSON only with NaN/Infinity: accepted, the latency becomes missing
NAN_LINES = [
    b'{"conversation_id": "nan", "ts": "2026-11-01T00:00:00Z", "latency_ms": NaN}',
    b'{"conversation_id": "inf", "ts": "2026-11-01T00:00:00Z", "latency_ms": Infinity, "x": -Infinity}',
]


def mixed_file(path: Path, rng: random.Random) -> Counter:
    lines, expected = [], Counter()
    for i in range(300):
        lines.append(good_line(i))
    for reason, bad in BAD_LINES.items():
        for b in bad:
            lines.append(b + b"\n")
            expected[reason] += 1
    lines.append(SEED_LINE)
    lines.extend(l + b"\n" for l in NAN_LINES)
    lines.append(bytes(rng.getrandbits(8) for _ in range(200)).replace(b"\n", b"") + b"\n")
    lines.append(b'{"conversation_id": "big", "ts": "2026-11-01T00:00:00Z", "response": "' + b"x" * (10 << 20) + b'"}\n')
    rng.shuffle(lines)
    path.write_bytes(b"".join(lines))
    return expected


# --------------------------------------------------------------------------- reader


def test_every_kind_of_bad_line(tmp_path):
    log = tmp_path / "log.jsonl"
    expected = mixed_file(log, random.Random(3))
    store = LogStore(log)
    df = store.frame
    assert_matches(store, log)
    stats = store.stats
    for reason, n in expected.items():
        # the random-bytes line lands in bad_utf8 or not_json
        assert stats["bad"][reason] >= n, reason
    assert stats["bad_total"] == sum(expected.values()) + 1
    assert stats["lines"] == 300 + 1 + 2 + 1
    seed = df[df.conversation_id == "seed-1"].iloc[0]
    assert seed.response == "hello\nthere"
    assert seed.ts == pd.Timestamp("2026-10-01T10:00:00Z")
    assert df[df.conversation_id == "nan"].latency_ms.isna().all()
    assert len(df[df.conversation_id == "big"].iloc[0].response) == 10 << 20


def test_dtypes_and_columns(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(good_line(i) for i in range(50)))
    df = LogStore(log).frame
    assert list(df.columns) == list(COLUMNS)
    assert str(df.ts.dtype) == "datetime64[us, UTC]"
    assert df.turn.dtype == pd.Int64Dtype()
    assert df.latency_ms.dtype == "float64"
    assert df.error.dtype == object
    assert df.error.iloc[1] is None and df.error.iloc[0] == "boom"
    assert df.files.iloc[0] == ["f0.png"] and df.files.iloc[1] == []
    assert isinstance(df.files.iloc[1], list)
    proj = LogStore(log, columns=["turn", "ts", "conversation_id"]).frame
    assert list(proj.columns) == ["ts", "conversation_id", "turn"]
    assert rows_of(proj) == rows_of(df[["ts", "conversation_id", "turn"]])
    only = LogStore(log, columns=["conversation_id"], cache_dir=tmp_path / "c2")
    assert list(only.frame.conversation_id) == list(df.conversation_id)
    with pytest.raises(ValueError):
        only.query(since=T0)


def test_empty_and_missing(tmp_path):
    store = LogStore(tmp_path / "nope.jsonl")
    assert len(store.refresh()) == 0
    assert list(store.frame.columns) == list(COLUMNS)
    assert store.stats["lines"] == 0
    folder = tmp_path / "logs"
    folder.mkdir()
    assert len(LogStore(folder).frame) == 0


def test_block_fallback_isolates_bad_line(tmp_path, monkeypatch):
    # small blocks: each bad line costs only its own run, neighbours stay fast
    monkeypatch.setattr(ingest_mod, "BLOCK_BYTES", 4096)
    log = tmp_path / "log.jsonl"
    lines = [good_line(i) for i in range(500)]
    lines[100] = b'{"conversation_id": "a", "ts": "2026-11-01T00:00:00Z", "turn": "x"}\n'
    lines[250] = b"\n"
    lines[400] = SEED_LINE
    log.write_bytes(b"".join(lines))
    store = LogStore(log)
    assert_matches(store, log)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)
FIELD_KEYS = list(COLUMNS) + ["timestamp", "history"]
record_like = st.fixed_dictionaries(
    {},
    optional={
        k: json_values
        | st.sampled_from(["2026-11-01T00:00:00Z", "2026-11-01T00:00:00.5+02:00", "2026-11-01", "c1", ""])
        | st.lists(st.text(max_size=3), max_size=2)
        | st.integers(min_value=-5, max_value=2**40)
        for k in FIELD_KEYS
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()) | record_like.map(lambda v: json.dumps(v).encode()), max_size=40))
def test_fuzz_parser_never_raises_and_fast_equals_reference(lines):
    data = b"".join(l.replace(b"\n", b" ") + b"\n" for l in lines)
    table, bad = parse_bytes(data)
    rows, ref_bad = _reference_of(data)
    assert +bad == +ref_bad
    df = store_mod._to_pandas(table)
    assert rows_of(df) == norm_ref(rows)


@settings(max_examples=100, deadline=None)
@given(st.lists(record_like.map(lambda v: json.dumps({"conversation_id": "c", "ts": "2026-11-01T00:00:00Z", **v}).encode()), min_size=16, max_size=40))
def test_fuzz_fast_path_record_like(lines):
    # many record-like lines at once, so the fast path is actually taken
    data = b"".join(l + b"\n" for l in lines)
    table, bad = parse_bytes(data)
    rows, ref_bad = _reference_of(data)
    assert +bad == +ref_bad
    assert rows_of(store_mod._to_pandas(table)) == norm_ref(rows)


def _reference_of(data: bytes) -> tuple[list[dict], Counter]:
    rows, bad = [], Counter()
    for line in data.split(b"\n")[:-1]:
        try:
            rows.append(parse_line(line))
        except BadRecord as exc:
            bad[exc.reason] += 1
    return rows, bad


history_messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                                   "content": st.text(max_size=30)}), max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.text(max_size=20), st.lists(st.text(max_size=20), max_size=3), history_messages,
                          st.booleans(), st.booleans()), min_size=16, max_size=40),
       st.booleans())
def test_fuzz_seed_lines_with_history(items, interleave):
    # seed-shaped lines with any text in the history, with and without ensure_ascii, alone
    # or interleaved with current-shape lines: the same rows and bad counts as the reference
    lines = []
    for i, (text, reply, history, ascii_, naive) in enumerate(items):
        ts = T0 + timedelta(seconds=i, microseconds=i * 991)
        rec = {"timestamp": (ts.replace(tzinfo=None) if naive else ts).isoformat(), "conversation_id": f"c{i % 3}",
               "user_text": text, "response": reply, "history": history}
        lines.append(json.dumps(rec, ensure_ascii=ascii_).encode())
        if interleave:
            lines.append(good_line(i).rstrip(b"\n"))
    data = b"".join(l + b"\n" for l in lines)
    table, bad = parse_bytes(data)
    rows, ref_bad = _reference_of(data)
    assert +bad == +ref_bad
    assert rows_of(store_mod._to_pandas(table)) == norm_ref(rows)


@pytest.mark.parametrize("shape", ["seed", "mixed"])
def test_seed_lines_with_history_take_the_fast_path(shape, monkeypatch):
    """Seed-shaped lines as the seed's Space logs them (a growing Gradio history with quotes,
    newlines and non-ASCII, naive times, ensure_ascii on and off), alone or interleaved line
    by line with current-shape lines, are read by pyarrow: no line goes to the reference
    parser, and the rows equal the reference's."""
    from chatcore.store import parse as parse_mod

    slow = []
    real = parse_mod._slow
    monkeypatch.setattr(parse_mod, "_slow", lambda block, idx, bad: slow.extend(idx) or real(block, idx, bad))
    lines = []
    for i in range(600):
        line = seed_line(i)
        if b'\\"ts"' in line:
            continue  # a text ending in "ts: looks like the key, so that line is read line by line
        lines.append(line)
        if shape == "mixed":
            lines.append(good_line(i))
    data = b"".join(lines)
    assert b"\\n" in data and "日本".encode() in data and b"\\u65e5" in data  # both encodings, escaped newlines
    table, bad = parse_bytes(data)
    rows, ref_bad = _reference_of(data)
    assert not ref_bad and not bad
    assert rows_of(store_mod._to_pandas(table)) == norm_ref(rows)
    assert slow == []
    # a line whose history text ends in "ts (so the raw line holds "ts") is still read right
    odd = [seed_line(i) for i in range(40) if b'\\"ts"' in seed_line(i)]
    assert odd
    data = b"".join(lines[:50] + odd + lines[50:100])
    table, bad = parse_bytes(data)
    rows, _ = _reference_of(data)
    assert rows_of(store_mod._to_pandas(table)) == norm_ref(rows)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_line_only_raises_badrecord(raw):
    try:
        rec = parse_line(raw)
    except BadRecord as exc:
        assert exc.reason in BAD_REASONS
    else:
        assert set(rec) == set(COLUMNS)


# --------------------------------------------------------------------------- incremental


def test_partial_last_line_is_pending(tmp_path):
    log = tmp_path / "log.jsonl"
    line = good_line(1)
    log.write_bytes(good_line(0) + line[:20])
    store = LogStore(log)
    assert len(store.refresh()) == 1
    assert store.stats["pending_bytes"] == 20
    assert store.stats["bad_total"] == 0
    with open(log, "ab") as f:
        f.write(line[20:])
    new = store.refresh()
    assert len(new) == 1 and new.turn.iloc[0] == 1
    assert store.stats["pending_bytes"] == 0
    assert len(store.refresh()) == 0
    assert_matches(store, log)


def test_truncate_replace_delete_new_shard(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    a = folder / "chat_logs.a.jsonl"
    a.write_bytes(b"".join(good_line(i) for i in range(20)))
    store = LogStore(folder)
    assert len(store.refresh()) == 20
    # truncation
    a.write_bytes(good_line(100))
    assert list(store.refresh().turn) == [100]
    assert_matches(store, folder)
    # truncated then written past the old offset before we looked
    a.write_bytes(b"".join(good_line(i) for i in range(200, 240)))
    store.refresh()
    assert_matches(store, folder)
    # replacement (rename over)
    tmp = folder / "x.tmp"
    tmp.write_bytes(b"".join(good_line(i) for i in range(300, 305)))
    os.replace(tmp, a)
    store.refresh()
    assert_matches(store, folder)
    # new shard
    b = folder / "chat_logs.b.jsonl"
    b.write_bytes(good_line(400))
    assert list(store.refresh().turn) == [400]
    assert store.stats["shards"] == 2
    # deleted shard
    a.unlink()
    store.refresh()
    assert list(store.frame.turn) == [400]
    assert_matches(store, folder)


#: Texts for the seed's history: quotes, backslashes, newlines, tabs, non-ASCII, and text
#: that looks like the keys the parser searches for (escaped inside a string, so not a key).
HISTORY_TEXTS = ['say "hi"', "two\nlines\tand a tab", "naïve café 日本 🙂", 'a \\ backslash', '{"ts": "x"}',
                 '"response": ["a"]', "", "ends in quote-ts \"ts"]


def seed_history(i: int) -> list[dict]:
    """The Gradio chat history before message ``i`` (``type="messages"``): the earlier turns
    of its conversation as a user and an assistant message; it grows with the conversation."""
    out = []
    for j in range(i % 5):
        out.append({"role": "user", "content": HISTORY_TEXTS[(i + j) % len(HISTORY_TEXTS)]})
        out.append({"role": "assistant", "content": f"Hello from your Gradio Space!\nYou said: {j}"})
    return out


def seed_line(i: int, conv: str | None = None) -> bytes:
    """A line as the seed's Space wrote it: ``timestamp`` (naive, as ``datetime.utcnow().isoformat()``,
    sometimes with a zone), the reply as a list of lines, the chat ``history`` before the
    message, ``json.dumps`` spacing (with and without ``ensure_ascii``)."""
    ts = T0 + timedelta(seconds=i, microseconds=(i * 7919) % 1_000_000 if i % 4 else 0)
    stamp = ts.replace(tzinfo=None).isoformat() if i % 5 else ts.isoformat()
    return json.dumps({"timestamp": stamp, "conversation_id": conv or f"c{i % 7}",
                       "user_text": f"seed question {i} ü", "response": [f"hello {i}", "You said: hi"],
                       "history": seed_history(i)}, ensure_ascii=bool(i % 3)).encode() + b"\n"


def reference_list(rows: list[dict], search: str = "") -> dict[str, dict]:
    """The conversation list computed the plain way from reference rows (file order)."""
    rows = [dict(r, _row=i) for i, r in enumerate(rows)]
    if search:
        low = search.lower()
        hit = {r["conversation_id"] for r in rows
               if r["conversation_id"].lower().startswith(low) or low in r["user_text"].lower()
               or low in r["response"].lower()}
        rows = [r for r in rows if r["conversation_id"] in hit]
    out: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: (r["ts"], r["_row"])):
        c = out.setdefault(r["conversation_id"], {"turns": 0, "first_ts": r["ts"], "first_user_text": r["user_text"],
                                                  "sources": set(), "errors": 0})
        c["turns"] += 1
        c["last_ts"] = r["ts"]
        if r["source"]:
            c["sources"].add(r["source"])
        c["errors"] += bool(r["error"])
    for c in out.values():
        c["source"] = ", ".join(sorted(c.pop("sources"))) or None
    return out


def questions_list(q, **filters) -> dict[str, dict]:
    from chatcore.store.questions import Filters

    table = q.conversations(Filters(**filters)).table.to_pylist()
    return {r["conversation_id"]: {"turns": r["turns"], "first_ts": r["first_ts"], "last_ts": r["last_ts"],
                                   "first_user_text": r["first_user_text"], "source": r["source"],
                                   "errors": r["errors"]} for r in table}


def assert_questions_match(q, path: Path) -> None:
    """The SQL answers equal the plain computation over the reference rows."""
    rows, _, _ = reference(path)
    want = reference_list(rows)
    assert questions_list(q) == want
    assert q.sources() == sorted({r["source"] for r in rows})
    totals = q.overview(T0, T0)
    assert (totals["turns_total"], totals["conversations_total"]) == (len(rows), len(want))
    # the CLI's list (persisted whole-log summary, merged after appends)
    got = {r["conversation_id"]: (r["turns"], r["first_ts"], r["last_ts"], r["first_user_text"])
           for r in q.summary().to_pylist()}
    assert got == {c: (v["turns"], v["first_ts"], v["last_ts"], v["first_user_text"]) for c, v in want.items()}
    lasts = [r["last_ts"] for r in q.summary().to_pylist()]
    assert lasts == sorted(lasts, reverse=True)
    for needle in ("QUESTION 1", "line TWO", "c3", "ü", "zz-none"):
        assert questions_list(q, search=needle) == reference_list(rows, needle), needle
    for cid in {r["conversation_id"] for r in rows[:3]}:
        want = [r for r in sorted(enumerate(rows), key=lambda x: (x[1]["ts"], x[0])) if r[1]["conversation_id"] == cid]
        got = rows_of(store_mod._to_pandas(q.transcript(cid)))
        assert got == norm_ref([r for _, r in want]), cid


class IncrementalMachine(RuleBasedStateMachine):
    """Random appends, partial lines, truncation, rotation and new shards; after each
    step the incremental store equals a full per-line re-read."""

    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="store-sm-"))
        self.folder = self.dir / "logs"
        self.folder.mkdir()
        self.n = 0
        self.store = LogStore(self.folder, cache_dir=self.dir / "cache")
        self.questions = None

    def teardown(self):
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def _shards(self):
        return sorted(self.folder.glob("*.jsonl"))

    def _lines(self, k, bad_every=0, shape="v1"):
        out = []
        for _ in range(k):
            self.n += 1
            if bad_every and self.n % bad_every == 0:
                out.append(random.Random(self.n).choice([b"\n", b"[1]\n", b'{"x": \n', SEED_LINE]))
            elif shape == "seed" or (shape == "mixed" and self.n % 2):
                out.append(seed_line(self.n))
            else:
                out.append(good_line(self.n))
        return b"".join(out)

    @rule(k=st.integers(0, 60), shard=st.integers(0, 2), bad=st.sampled_from([0, 7]), cut=st.integers(0, 30),
          shape=st.sampled_from(["v1", "seed", "mixed"]))
    def append(self, k, shard, bad, cut, shape):
        path = self.folder / f"chat_logs.{shard}.jsonl"
        data = self._lines(k, bad, shape)
        if cut and data:
            data = data[:-cut] if len(data) > cut else data
        with open(path, "ab") as f:
            f.write(data)

    @rule()
    def finish_partial_lines(self):
        for p in self._shards():
            data = p.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(p, "ab") as f:
                    f.write(b"\n")

    @rule(keep=st.integers(0, 2000))
    def truncate(self, keep):
        shards = self._shards()
        if shards:
            with open(shards[0], "r+b") as f:
                f.truncate(min(keep, os.path.getsize(shards[0])))

    @rule(k=st.integers(0, 20))
    def rotate(self, k):
        shards = self._shards()
        if shards:
            os.replace(shards[-1], self.dir / "rotated.old")
            shards[-1].write_bytes(self._lines(k))

    @rule()
    def delete(self):
        shards = self._shards()
        if shards:
            shards[0].unlink()

    @rule()
    def reopen(self):
        self.store = LogStore(self.folder, cache_dir=self.dir / "cache")
        self.questions = None

    @rule()
    def ask(self):
        """The SQL questions over the same store (sharing its rows) equal the plain answers."""
        from chatcore.store.questions import Questions

        if self.questions is None or self.questions.store is not self.store:
            self.questions = Questions(self.store, threads=1)
        self.questions.sync()
        assert_questions_match(self.questions, self.folder)

    @rule()
    def refresh(self):
        self.store.refresh()

    @invariant()
    def matches(self):
        self.store.refresh()
        assert_matches(self.store, self.folder)


def test_incremental_machine():
    run_state_machine_as_test(IncrementalMachine,
                              settings=settings(max_examples=50, stateful_step_count=12, deadline=None))


def test_refresh_returns_new_rows_in_order(tmp_path):
    log = tmp_path / "log.jsonl"
    store = LogStore(log)
    for start in range(0, 100, 10):
        with open(log, "ab") as f:
            f.write(b"".join(good_line(i) for i in range(start, start + 10)))
        assert list(store.refresh().turn) == list(range(start, start + 10))
    assert list(store.frame.turn) == list(range(100))


# --------------------------------------------------------------------------- cache


def _big_log(path: Path, n: int = 6000) -> None:
    path.write_bytes(b"".join(good_line(i) for i in range(n)))


def test_cache_is_used_on_reopen(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    _big_log(log)
    st0 = LogStore(log)
    first = st0.frame
    st0.wait_cache()
    assert list((tmp_path / ".chatcore-cache").glob("*.arrow"))
    calls = []
    real = ingest_mod._parse_data
    monkeypatch.setattr(ingest_mod, "_parse_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = LogStore(log)
    assert rows_of(again.frame) == rows_of(first)
    assert calls == []  # nothing parsed again
    with open(log, "ab") as f:
        f.write(good_line(99999))
    assert list(again.refresh().turn) == [99999]
    assert calls == [1]
    assert_matches(again, log)


@pytest.mark.parametrize("where", ["head", "tail"])
def test_cache_invalidated_by_same_size_rewrite(tmp_path, where):
    log = tmp_path / "log.jsonl"
    _big_log(log)
    st0 = os.stat(log)
    s0 = LogStore(log)
    s0.refresh()
    s0.wait_cache()
    # rewrite one line with the same size (the fingerprint covers the first and
    # last 64 KB and samples in between), and force the same mtime
    data = bytearray(log.read_bytes())
    if where == "head":
        i = data.index(b'"conversation_id":"c3"')
    else:
        i = data.rindex(b'"conversation_id":"c3"')
    data[i : i + 22] = b'"conversation_id":"zz"'
    with open(log, "r+b") as f:
        f.write(bytes(data))
    os.utime(log, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    st1 = os.stat(log)
    assert (st1.st_size, st1.st_mtime_ns, st1.st_ino) == (st0.st_size, st0.st_mtime_ns, st0.st_ino)
    store = LogStore(log)
    assert (store.frame.conversation_id == "zz").sum() == 1
    assert_matches(store, log)


def test_live_store_notices_same_size_rewrite(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(good_line(i, conv="aa") for i in range(10)))
    store = LogStore(log)
    store.refresh()
    log.write_bytes(b"".join(good_line(i, conv="bb") for i in range(10)))
    store.refresh()
    assert set(store.frame.conversation_id) == {"bb"}


def test_cache_write_failure_does_not_break_reading(tmp_path):
    log = tmp_path / "log.jsonl"
    _big_log(log)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    store = LogStore(log, cache_dir=blocker / "cache")
    assert len(store.frame) == 6000
    store.wait_cache()
    assert store.stats["cache_errors"] >= 1


def test_corrupt_cache_is_a_miss(tmp_path):
    log = tmp_path / "log.jsonl"
    _big_log(log)
    s0 = LogStore(log)
    s0.refresh()
    s0.wait_cache()
    for p in (tmp_path / ".chatcore-cache").glob("*.arrow"):
        p.write_bytes(b"garbage")
    store = LogStore(log)
    assert_matches(store, log)


# --------------------------------------------------------------------------- query, progress


def test_query_and_daily_shards(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    for day in range(5):
        d = (T0 + timedelta(days=day)).date().isoformat()
        (folder / f"chat_logs.{d}.jsonl").write_bytes(b"".join(good_line(i, day=day) for i in range(10)))
    since = pd.Timestamp(T0 + timedelta(days=2))
    until = since + pd.Timedelta(days=1)
    df, stats = load_log(folder, since=since, until=until)
    assert len(df) == 10 and (df.ts >= since).all() and (df.ts < until).all()
    assert stats["shards"] < 5  # far-away daily shards were not read
    partial = LogStore(folder)
    assert len(partial.query(since=since, until=until)) == 10
    assert len(partial.frame) == 50  # the skipped shards are loaded when needed
    store = LogStore(folder)
    store.refresh()
    q = store.query(since=since, until=until)
    assert rows_of(q) == rows_of(df)
    assert len(store.query(since=since)) == 30
    assert len(store.query(until=since)) == 20
    assert len(store.query()) == 50


def test_progress_callback(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_mod, "BLOCK_BYTES", 8192)
    log = tmp_path / "log.jsonl"
    _big_log(log, 2000)
    seen = []
    LogStore(log).refresh(progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 3
    assert seen[-1][0] == seen[-1][1] == log.stat().st_size
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))


def test_values_that_do_not_fit_the_columns(tmp_path):
    log = tmp_path / "log.jsonl"
    base = '"conversation_id": "a", "ts": "2026-11-01T00:00:00Z"'
    lines = [good_line(i) for i in range(40)]
    lines[5] = ("{" + base + ', "v": 9223372036854775808}\n').encode()  # > int64
    lines[6] = ("{" + base + ', "v": -9223372036854775809}\n').encode()
    lines[7] = ("{" + base + ', "turn": 2147483648}\n').encode()
    lines[8] = ("{" + base + ', "user_text": "\\ud800", "latency_ms": NaN}\n').encode()  # lone surrogate
    log.write_bytes(b"".join(lines))
    store = LogStore(log)
    assert_matches(store, log)
    assert store.stats["bad"]["wrong_type"] == 3
    assert store.stats["bad"]["bad_utf8"] == 1


def test_cache_segments_are_merged(tmp_path, monkeypatch):
    monkeypatch.setattr(segments_mod, "CACHE_MIN_BYTES", 1)
    monkeypatch.setattr(segments_mod, "MAX_SEGMENTS", 3)
    log = tmp_path / "log.jsonl"
    _big_log(log, 100)
    store = LogStore(log)
    store.refresh()
    for k in range(7):
        with open(log, "ab") as f:
            f.write(b"".join(good_line(1000 + 10 * k + i) for i in range(10)))
        store.refresh()
        store.wait_cache()
    cache = tmp_path / ".chatcore-cache"
    assert 1 <= len(list(cache.glob("*.arrow"))) <= 3
    again = LogStore(log)
    assert_matches(again, log)
    assert again._shards[str(log)].cached_upto == log.stat().st_size


def test_mixed_shapes_take_the_right_paths(tmp_path):
    # older-shape lines, naive times, blank lines and type errors scattered among
    # good lines: every path (whole block, pieces, row hints, slow) gives the reference
    rng = random.Random(5)
    lines = []
    for i in range(3000):
        r = rng.random()
        if r < 0.03:
            lines.append(SEED_LINE)
        elif r < 0.06:
            lines.append(good_line(i).replace(b'Z","conversation_id"', b'","conversation_id"'))
        elif r < 0.07:
            lines.append(b"\n")
        elif r < 0.08:
            lines.append(b'{"conversation_id": "t", "ts": "2026-11-01T00:00:00Z", "turn": "7"}\n')
        elif r < 0.09:
            lines.append(b'{"conversation_id": "t", "ts": "2026-02-30T00:00:00Z"}\n')
        else:
            lines.append(good_line(i))
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(lines))
    store = LogStore(log)
    assert_matches(store, log)
    assert store.stats["bad"]["wrong_type"] > 0 and store.stats["bad"]["blank"] > 0


def test_refresh_then_frame_after_a_large_first_load(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_mod, "BLOCK_BYTES", 8192)  # several blocks: the parallel path
    log = tmp_path / "log.jsonl"
    _big_log(log, 1000)
    store = LogStore(log)
    new = store.refresh()
    assert len(new) == 1000
    new["extra"] = 1  # the caller's copy only
    assert list(store.frame.columns) == list(COLUMNS)
    assert_matches(store, log)
    with open(log, "ab") as f:
        f.write(good_line(5000))
    assert list(store.refresh().turn) == [5000]
    assert list(store.frame.turn)[-2:] == [999, 5000]
    assert_matches(store, log)


def test_folder_of_small_shards_is_cached(tmp_path, monkeypatch):
    folder = tmp_path / "logs"
    folder.mkdir()
    for day in range(3):
        d = (T0 + timedelta(days=day)).date().isoformat()
        (folder / f"chat_logs.{d}.jsonl").write_bytes(b"".join(good_line(i, day=day) for i in range(400)))
    first = LogStore(folder)
    first.refresh()
    first.wait_cache()
    calls = []
    real = ingest_mod._parse_data
    monkeypatch.setattr(ingest_mod, "_parse_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = LogStore(folder)
    assert_matches(again, folder)
    assert calls == []


# --------------------------------------------------------------------------- SQL questions


@pytest.mark.parametrize("shape", ["v1", "seed", "mixed", "bad", "partial"])
def test_questions_equal_the_plain_answers_on_every_kind_of_log(tmp_path, shape):
    from chatcore.store.conversation_frames import conversation_table, conversations_matching
    from chatcore.store.questions import Filters, Questions

    log = tmp_path / "log.jsonl"
    lines = []
    for i in range(3000):
        if shape == "seed" or (shape == "mixed" and i % 3 == 0):
            lines.append(seed_line(i))
        else:
            lines.append(good_line(i))
        if shape == "bad" and i % 97 == 0:
            lines.append(random.Random(i).choice([b"\n", b"[1]\n", b'{"x": \n', b"\xff\xfe\n"] + BAD_LINES["wrong_type"]))
    data = b"".join(x if x.endswith(b"\n") else x + b"\n" for x in lines)
    if shape == "partial":
        data += good_line(99999)[:-9]
    log.write_bytes(data)
    store = LogStore(log)
    q = Questions(store)
    q.sync()
    assert_matches(store, log)
    assert_questions_match(q, log)
    # date, source and rating filters against the pandas path the page used before
    frame = store.frame
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=40)
    for f, view in [
        (Filters(since=since, until=until), frame[(frame.ts >= since) & (frame.ts < until)]),
        (Filters(sources=("api",)), frame[frame.source == "api"]),
        (Filters(since=since, sources=("widget", "unknown")), frame[(frame.ts >= since) & frame.source.isin(["widget", "unknown"])]),
        # a search counts the turns in range of the conversations with a matching turn in range
        (Filters(since=since, until=until, search="QUESTION 20"),
         conversations_matching(frame[(frame.ts >= since) & (frame.ts < until)], "QUESTION 20")),
        (Filters(sources=("api",), search="line two"), conversations_matching(frame[frame.source == "api"], "line two")),
    ]:
        want = conversation_table(view).set_index("conversation_id")
        lst = q.conversations(f)
        got = lst.table.to_pandas().set_index("conversation_id")
        assert sorted(got.index) == sorted(want.index)
        assert (got.loc[want.index, "turns"].to_numpy() == want["turns"].to_numpy()).all()
        assert (got.loc[want.index, "errors"].to_numpy() == want["errors"].to_numpy()).all()
        assert lst.turns == len(view)
    ratings = pd.DataFrame({"conversation_id": ["c1", "c2"], "up": [0, 2], "down": [1, 0]})
    q.set_ratings(ratings, key=1)
    assert set(q.conversations(Filters(rating="rated negatively")).ids()) == {"c1"}
    assert set(q.conversations(Filters(rating="rated positively")).ids()) == {"c2"}
    assert set(q.conversations(Filters(ids=frozenset({"c3", "nope"}))).ids()) == {"c3"}
    # pages: sorted by the engine, every row once
    lst = q.conversations()
    seen = []
    for off in range(0, lst.total, 3):
        seen += lst.page(off, 3, by="turns", descending=True).column("conversation_id").to_pylist()
    assert sorted(seen) == sorted(lst.ids()) and len(seen) == lst.total
    turns = [r["turns"] for r in lst.page(0, lst.total, by="turns", descending=True).to_pylist()]
    assert turns == sorted(turns, reverse=True)


def test_questions_follow_appends_and_rotation(tmp_path):
    from chatcore.store.questions import Questions

    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(good_line(i) for i in range(50)))
    q = Questions(LogStore(log))
    assert q.conversations().turns == 50
    with open(log, "ab") as f:
        f.write(b"".join(seed_line(i, conv="new-1") for i in range(50, 60)))
    q.sync()
    assert q.conversations().turns == 60 and q.has_conversation("new-1")
    os.replace(log, tmp_path / "old.jsonl.1")
    log.write_bytes(good_line(1, conv="after"))
    q.sync()
    assert q.conversations().ids() == ["after"]
    assert_questions_match(q, log)


def test_cache_of_an_older_store_version_is_rebuilt(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    _big_log(log)
    old = LogStore(log)
    old.refresh()
    old.wait_cache()
    manifests = list((tmp_path / ".chatcore-cache").glob("*.json"))
    assert manifests
    # a newer store must not trust what an older one wrote: even a manifest that is
    # found (same name) but says another version is a miss
    for m in manifests:
        meta = json.loads(m.read_text())
        meta["version"] = segments_mod.CACHE_VERSION - 1
        m.write_text(json.dumps(meta))
    calls = []
    real = ingest_mod._parse_data
    monkeypatch.setattr(ingest_mod, "_parse_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    store = LogStore(log)
    assert_matches(store, log)
    assert calls  # parsed again
    store.wait_cache()
    # ... and a store of a newer version does not even look at this version's files
    monkeypatch.setattr(segments_mod, "CACHE_VERSION", segments_mod.CACHE_VERSION + 1)
    calls.clear()
    assert_matches(LogStore(log), log)
    assert calls


READER = r"""
import json, sys, time
from chatcore.store import LogStore
from chatcore.store.questions import Questions
log, total, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
q = Questions(LogStore(log), threads=1)
seen = []
deadline = time.monotonic() + 120
first = True
while time.monotonic() < deadline:
    q.sync()
    if first:
        open(out + ".ready", "w").close()  # the writer starts when both readers run
        first = False
    lst = q.conversations()
    seen.append([time.time(), lst.turns, lst.total])
    if lst.turns >= total:
        break
    time.sleep(0.02)
json.dump({"seen": seen, "ids": sorted(lst.ids()), "stats": q.store.stats}, open(out, "w"))
"""

WRITER = r"""
import sys, time
from chatcore.log.records import make_record
from chatcore.log.writer import LogWriter
import os
log, total, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
deadline = time.monotonic() + 120
while not all(os.path.exists(r) for r in ready) and time.monotonic() < deadline:
    time.sleep(0.02)
w = LogWriter(log)
print(time.time(), flush=True)
for i in range(total):
    w.append(make_record(conversation_id=f"w-{i // 10}", turn=i % 10, user_text=f"q{i}", response="r",
                         latency_ms=1, source="api", backend="echo"))
    if i % 50 == 49:
        time.sleep(0.05)
print(time.time(), flush=True)
"""


def test_two_processes_read_while_one_writes(tmp_path):
    """Two reader processes (each its own SQL engine over the shared cache folder) follow
    a log another process is writing: no lock stops either, and both end with every turn."""
    import subprocess
    import sys

    from conftest import ROOT

    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(good_line(i, conv="start") for i in range(100)))
    total = 2000
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(log), str(total + 100), str(tmp_path / f"r{i}.json")],
                                cwd=ROOT) for i in range(2)]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(total),
                               *(str(tmp_path / f"r{i}.json.ready") for i in range(2))], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    out, _ = writer.communicate(timeout=120)
    started, ended = map(float, out.split())
    for r in readers:
        assert r.wait(timeout=120) == 0
    rows, _, _ = reference(log)
    want = sorted({r["conversation_id"] for r in rows})
    for i in range(2):
        res = json.loads((tmp_path / f"r{i}.json").read_text())
        assert res["ids"] == want and res["seen"][-1][1] == total + 100
        # it read while the writer wrote: a partial count inside the writer's lifetime
        assert any(started <= t <= ended and 100 <= n < total + 100 for t, n, _ in res["seen"]), res["seen"][:5]
        assert res["stats"]["bad_total"] == 0


def test_contains4_finds_the_needle_at_every_alignment_and_only_before_end():
    from chatcore.store.parse import _contains4

    for size in range(4, 24):
        for at in range(0, size - 3):
            data = bytearray(b"x" * size)
            data[at:at + 4] = b'"ts"'
            data = bytes(data)
            assert _contains4(data, size, b'"ts"'), (size, at)
            assert not _contains4(data, at + 3, b'"ts"')  # ends inside the needle
            assert _contains4(data, at + 4, b'"ts"')
        assert not _contains4(b"x" * size, size, b'"ts"')
    assert not _contains4(b'"t', 2, b'"ts"') and not _contains4(b"", 0, b'"ts"')


# --------------------------------------------------------------------------- impossible times

#: Times a line may carry that no calendar the readers use can hold: outside the years 1-9999
#: once in UTC (as written, or only after the zone is applied).
IMPOSSIBLE_TIMES = ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00", "0001-01-01T00:30:00+01:00",
                    "0000-06-01T12:00:00"]
#: ... and the good times nearest to them.
EDGE_TIMES = ["0001-01-01T00:00:00Z", "0001-01-01T01:00:00+01:00", "1969-07-20T20:17:40Z",
              "9999-12-31T23:59:59.999999Z", "9999-12-31T18:59:59-05:00"]


def _hostile_block_log(path: Path) -> int:
    """A log of more than two parser blocks (read in parallel, block by block) in both shapes,
    with a line at each impossible time, in its own conversation and in a busy one, inside a
    block and next to its edges. Returns the number of hostile lines."""
    from chatcore.store.ingest import BLOCK_BYTES

    lines = [good_line(i) if i % 3 else seed_line(i) for i in range(60_000)]
    hostile = 0
    for k, stamp in enumerate(IMPOSSIBLE_TIMES * 3):
        for conv in ("evil", "c3"):
            rec = orjson.loads(good_line(k, conv=conv))
            if k % 2:  # the seed's shape: the time under "timestamp"
                rec = {"timestamp": stamp, "conversation_id": conv, "user_text": "q", "response": ["a", "b"],
                       "history": []}
            else:
                rec["ts"] = stamp
            lines.insert(k * 5_000 + 7, orjson.dumps(rec) + b"\n")
            hostile += 1
    lines.insert(30_000, good_line(30_000, conv="evil"))  # the conversation also has a good turn
    # the edges of the calendar, and a time before 1970, are good times
    for k, stamp in enumerate(EDGE_TIMES):
        rec = orjson.loads(good_line(k, conv="edges"))
        rec["ts"] = stamp
        lines.insert(k * 9_000 + 11, orjson.dumps(rec) + b"\n")
    data = b"".join(lines)
    assert len(data) > 2 * BLOCK_BYTES
    path.write_bytes(data)
    return hostile


def test_impossible_times_are_bad_lines_for_the_cli_list_and_export(tmp_path):
    """A replica's shard, an imported log or a hostile mirrored Space can carry a time outside
    the years 1-9999: the reference reader rejects such a line, and so must the block parser, or
    the whole conversation list fails (the engine cannot hold the time) and the export of that
    conversation with it."""
    import subprocess
    import sys

    from conftest import ROOT

    log = tmp_path / "log.jsonl"
    hostile = _hostile_block_log(log)
    rows, bad, _ = reference(log)
    assert bad == {"wrong_type": hostile}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "chatcore", *args, "--log", str(log)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    for _cache in ("cold", "warm"):  # the first run parses the log and saves the cache, the second reads it
        listed = cli("conversations", "--format", "json")
        assert listed.returncode == 0, listed.stderr[-2000:]
        got = {c["conversation_id"]: c["turns"] for c in json.loads(listed.stdout)}
        assert got == Counter(r["conversation_id"] for r in rows)
        assert got["edges"] == len(EDGE_TIMES)
        assert f"skipped {hostile} bad line(s)" in listed.stderr

    exported = cli("export", "--conversation", "evil", "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr[-2000:]
    turns = [json.loads(line) for line in exported.stdout.splitlines()]
    want = [r for r in rows if r["conversation_id"] == "evil"]
    assert len(turns) == len(want) == 1 and turns[0]["user_text"] == want[0]["user_text"]
    for conv, fmt in (("edges", "jsonl"), ("edges", "csv"), ("c3", "md")):
        out = cli("export", "--conversation", conv, "--format", fmt)
        assert out.returncode == 0, out.stderr[-2000:]
    assert_matches(LogStore(log), log)


# --------------------------------------------------------------------------- lines the block path must read exactly


def test_a_key_spelled_with_escapes_is_read_as_the_reference_reads_it():
    # "\u0074s" is the key "ts": it wins over "timestamp", as in the reference, on both paths
    base = {"timestamp": "2020-05-05T00:00:00", "conversation_id": "c", "user_text": "u", "response": ["r"]}
    lines = []
    for key in ("\\u0074s", "t\\u0073", "ts"):
        for i in range(20):
            body = json.dumps(dict(base, conversation_id=f"c{i}"))[1:]
            lines.append(f'{{"{key}": "2026-01-01T00:00:0{i % 10}Z", '.encode() + body.encode() + b"\n")
    data = b"".join(lines)
    table, bad = parse_bytes(data)
    rows, ref_bad = _reference_of(data)
    assert +bad == +ref_bad and not ref_bad
    assert rows_of(store_mod._to_pandas(table)) == norm_ref(rows)
    assert {r["ts"].year for r in rows} == {2026}


_history_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=12)
_raw_history = st.sampled_from([b"[NaN]", b"[1,]", b'["\\ud800"]', b'"\xff"', b"[", b"{}", b"[[[]]]", b"1e999",
                                b'"\\ud83d\\ude00"', b"-0.5E+3", b"01", b"[true false]", b'{"a" 1}', b"nul"])


_field_values = (st.text(max_size=8) | st.lists(st.text(max_size=6), max_size=3) | st.none() | st.integers()
                 | st.datetimes().map(lambda d: d.isoformat()) | st.sampled_from(["2026-10-01T10:00:00.5",
                                                                                 "2026-10-01 10:00:00", "2026-10-01"])
                 | st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3))


def _among_good_lines(lines: list[bytes]) -> bytes:
    """``lines`` between enough good lines of both shapes that the block path reads them (a
    short run is read line by line)."""
    pad = [seed_line(i) for i in range(12)] + [good_line(i) for i in range(12)]
    return b"".join(pad[:12] + [line + b"\n" for line in lines] + pad[12:])


#: The columns the CLI's list reads: a store of only these builds no other column.
LIST_COLUMNS = ["ts", "conversation_id", "user_text", "source"]


def assert_block_reads_as_reference(data: bytes) -> None:
    from chatcore.store.parse import parse_block

    table, bad = parse_bytes(data)
    rows, ref_bad = _reference_of(data)
    assert +bad == +ref_bad
    assert rows_of(store_mod._to_pandas(table)) == norm_ref(rows)
    # read for the list's columns only, from a buffer the store overwrites with the next block
    # afterwards: the same rows of those columns, the same lines rejected
    buf = bytearray(data)
    few_bad = Counter()
    few, _, _ = parse_block(memoryview(buf), len(data), few_bad, LIST_COLUMNS)
    buf[:] = b"\n" * len(buf)
    assert +few_bad == +bad
    assert few.to_pylist() == table.select(LIST_COLUMNS).to_pylist()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.dictionaries(st.sampled_from(["ts", "timestamp", "conversation_id", "user_text", "response",
                                                           "a"]), _field_values, max_size=4),
                          st.one_of(st.none(), _history_values.map(lambda v: json.dumps(v).encode()), _raw_history),
                          st.integers(0, 3), st.booleans(), st.sampled_from([b"", b" ", b"\t", b"\r"]),
                          st.booleans()),
                min_size=1, max_size=12),
       st.lists(st.binary(max_size=30), max_size=4))
def test_fuzz_lines_with_any_history_read_as_the_reference_reads_them(items, junk):
    """Lines of either shape with generated fields and a history, valid or broken (NaN, a
    trailing comma, lone surrogate escapes, bytes that are not UTF-8, deep nesting), with
    spaces around and among junk: the block path gives the reference's rows and bad counts
    (a broken history makes the whole line bad, as in the reference, although no reader uses it)."""
    lines = []
    for fields, history, where, ascii_, pad, compact in items:
        sep = b"," if compact else b", "
        parts = [json.dumps(k, ensure_ascii=ascii_).encode() + b": " + json.dumps(v, ensure_ascii=ascii_).encode()
                 for k, v in fields.items()]
        if history is not None:
            parts.insert(min(where, len(parts)), b'"history": ' + history)
        lines.append(pad + b"{" + sep.join(parts) + b"}" + pad)
    lines += [j.replace(b"\n", b"") for j in junk]
    assert_block_reads_as_reference(_among_good_lines(lines))


#: JSON values that strict JSON (RFC 8259) or UTF-8 rejects, and unusual values it accepts.
NOT_STRICT_VALUES = [b"NaN", b"[1,]", b'"\\ud800"', b'"\\udc00x"', b'"\xc0\x80"', b'"\xed\xa0\x80"',
                     b'"\xf4\x90\x80\x80"', b'"tab\there"', b"01", b"1.", b".5", b"+1", b"tru", b'"\\x41"',
                     b'"\\u12G4"', b"[" * 200 + b"]" * 200, b'{"a" 1}']
UNUSUAL_VALUES = [b'"\\ud83d\\ude00"', b"-0.5e-3", b'"\xf0\x9f\x99\x82"', b"1e999", b'[[], {}, [{"b": null}]]',
                  b"[" * 100 + b"]" * 100, b'"\\u0000"']


def test_values_strict_json_rejects_read_as_the_reference_reads_them():
    """Each value above, in the history, in a key no reader uses and in the text fields of both
    shapes, and lines that are broken as a whole or repeat a key: the block path gives the
    reference's rows and bad counts."""
    lines = []
    for value in NOT_STRICT_VALUES + UNUSUAL_VALUES:
        for key in (b"history", b"x", b"user_text", b"response"):
            lines.append(b'{"timestamp": "2026-10-01T10:00:00", "conversation_id": "s", "user_text": "u", '
                         b'"response": ["r"], "' + key + b'": ' + value + b"}")
            lines.append(b'{"v": 1, "ts": "2026-10-01T10:00:00Z", "conversation_id": "v", "response": "r", "'
                         + key + b'": ' + value + b"}")
    lines += [b"{", b"}", b'{"a": 1} x', b"[1]", b'"s"', b"", b"  ", b'{"a": 1,}',
              b'{"ts": "2026-11-01T00:00:00Z", "timestamp": "2026-10-01T10:00:00", "response": ["a", 1]}',
              b'{"timestamp": "2026-10-01T10:00:00", "timestamp": "2026-10-01T10:00:01", "conversation_id": "d"}',
              b'{"t\\u0073": 1, "timestamp": "2026-10-01T10:00:00", "response": "x", "conversation_id": "e"}',
              b' {"timestamp": "2026-10-01T10:00:00.123456", "conversation_id": "c", "user_text": "hi", '
              b'"response": ["a \\"q\\"", "", "\xc3\xa9"], "history": [["x", "y"]]}\r']
    data = _among_good_lines(lines)
    assert_block_reads_as_reference(data)
    table, _ = parse_bytes(data)
    seed = table.filter(pc.equal(table.column("conversation_id"), "c")).to_pylist()
    assert [r["response"] for r in seed] == ['a "q"\n\n\u00e9']


def test_the_blocks_utf8_check_agrees_with_python():
    """Text a visitor typed reaches the log as bytes: the block's UTF-8 check (one pyarrow
    validation per block) says what Python's decoder says, on every two-byte input and on
    random sequences of lead and continuation bytes."""
    from chatcore.store.parse import _utf8_ok

    rng = random.Random(5)
    samples = [bytes([a, b]) for a in range(256) for b in range(256)]
    samples += [bytes(rng.choice((rng.randrange(256), rng.randrange(0x80, 0xC0), rng.randrange(0xC0, 0x100)))
                      for _ in range(rng.randint(3, 6))) for _ in range(20_000)]
    for raw in samples:
        try:
            raw.decode("utf-8")
            want = True
        except UnicodeDecodeError:
            want = False
        assert _utf8_ok(memoryview(raw)) == want, raw


_NAIVE = "2026-01-02T03:04:05.123456"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from([_NAIVE[:19], *(_NAIVE[:w] for w in range(20, 27))]),
                          st.tuples(st.sampled_from([19, 21, 24, 26]), st.integers(0, 25),
                                    st.sampled_from("0 9-T:.Z+/éa\u0663")).map(
                              lambda m: (_NAIVE[:m[0]][:m[1]] + m[2] + _NAIVE[:m[0]][m[1] + 1:])[:m[0]])),
                min_size=1, max_size=8),
       st.integers(1, 3), st.integers(0, 2))
def test_the_byte_check_of_naive_times_agrees_with_the_regex(values, chunks, skip):
    """Seed times of one length are checked byte by byte instead of with the regex: whenever the
    check passes, every time is one the regex accepts; and for times of one length it passes
    exactly when the regex accepts them all (in any chunking, at any offset)."""
    import pyarrow as pa

    from chatcore.store.parse import _TS_NAIVE_RE, _naive_of_one_width
    from chatcore.store.schema import STR

    arr = pa.array(["x" * 19] * skip + values, STR).slice(skip)
    cut = [len(values) * k // chunks for k in range(chunks + 1)]
    col = pa.chunked_array([arr.slice(a, b - a) for a, b in zip(cut, cut[1:])], STR)
    accepted = pc.fill_null(pc.match_substring_regex(col, _TS_NAIVE_RE), False)
    all_accepted = bool(pc.all(accepted).as_py())
    widths = {len(v.encode()) for v in values if v is not None}
    assert _naive_of_one_width(col) == (all_accepted and len(widths) == 1)


# --------------------------------------------------------------------------- import


def _log_to_import(path: Path) -> tuple[list[bytes], int]:
    """A seed-shaped log (history and all) with what a real one may also hold: lines in the
    current shape (one answered again), event lines, broken lines, impossible times, a history
    quoting a "ts" key, a key spelled with escapes, and a last line still being written.
    Returns (the lines, the number of event lines)."""
    from chatcore.log.records import make_event

    lines = [seed_line(i, conv=f"s{i % 40}") for i in range(3000)]
    current = orjson.loads(good_line(7, conv="s3"))
    extra = [
        good_line(1, conv="now"),
        orjson.dumps(dict(current, retry_of=current["turn"])) + b"\n",
        orjson.dumps(make_event(conversation_id="s3", kind="handoff_requested", at_turn=2, via="button")) + b"\n",
        orjson.dumps(make_event(conversation_id="s4", kind="staff_message", at_turn=1, staff="ann", text="hi")) + b"\n",
        b'{"timestamp": "2026-10-01T10:00:00", "conversation_id": "s1", "response": ["a"], "history": [NaN, 1,]}\n',
        b'{"timestamp": "0000-01-01T00:00:00", "conversation_id": "s1", "response": ["a"], "history": []}\n',
        b'{"ts": "9999-12-31T23:59:59-05:00", "conversation_id": "s1", "response": "a"}\n',
        b'{"t\\u0073": "2026-10-02T10:00:00Z", "timestamp": "2026-10-01T10:00:00", "conversation_id": "esc", '
        b'"response": ["a", "b"]}\n',
        b"not json\n",
    ]
    for k, line in enumerate(extra):
        lines.insert(k * 311 + 5, line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines) + b'{"timestamp": "2026-10-01T10:00:00", "conversation_id": "unfini')
    return lines, 2


def test_an_imported_log_reads_as_the_reference_reads_the_original(tmp_path, monkeypatch):
    """``import`` writes each turn in the current shape without its history: the store reads the
    converted log exactly as the reference reads the original (same rows, in order), event lines
    and current-shape lines are copied byte for byte, and only rejected lines are left out."""
    from chatcore.store import convert as convert_mod

    monkeypatch.setattr(convert_mod, "BLOCK_BYTES", 64 << 10)  # many blocks, converted in parallel
    src = tmp_path / "old" / "chat_logs.jsonl"
    original, events = _log_to_import(src)
    rows, bad, pending = reference(src)
    assert pending and bad["event"] == events

    result = convert_mod.convert_log(src, tmp_path / "new")
    dst = tmp_path / "new" / "chat_logs.jsonl"
    assert result.files == [dst] and result.unfinished == [src]

    new_rows, new_bad, new_pending = reference(dst)
    assert norm_ref(new_rows) == norm_ref(rows)
    assert new_bad == {"event": events} and new_pending == 0
    store = LogStore(dst)
    assert rows_of(store.frame) == norm_ref(rows)
    assert store.stats["events"] == events and store.stats["bad_total"] == 0

    left_out = +Counter({k: v for k, v in bad.items() if k != "event"})
    assert result.bad == left_out and result.turns == len(rows) and result.events == events
    assert result.converted == len(rows) - 3  # three turns are in the current shape already
    kept = set(original)
    for line in dst.read_bytes().splitlines(keepends=True):
        obj = orjson.loads(line)
        if line in kept:  # copied: a line with a "ts" key, or an event
            assert "ts" in obj or obj.get("kind") not in (None, "turn"), line
        else:
            assert "history" not in obj and "timestamp" not in obj and isinstance(obj["response"], str), line
            assert obj["ts"].endswith("Z")
    assert dst.stat().st_size < src.stat().st_size  # without the history


def test_the_import_command_converts_once_and_never_overwrites(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "chatcore", "import", *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    src = tmp_path / "old" / "chat_logs.jsonl"
    _log_to_import(src)
    rows, _, _ = reference(src)
    done = cli(src)
    assert done.returncode == 0, done.stderr
    dst = tmp_path / "old" / "imported" / "chat_logs.jsonl"  # the default: beside the log
    assert rows_of(LogStore(dst).frame) == norm_ref(rows)
    assert f"imported {len(rows):,} turn(s)" in done.stdout
    assert "3 turn(s) already in the current shape, 2 event line(s)" in done.stdout
    assert "left out: 4 line(s)" in done.stderr and "no newline yet" in done.stderr

    before = dst.read_bytes()
    again = cli(src)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert dst.read_bytes() == before

    # a folder of shards: nothing is written when one of the files exists already
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(seed_line(1))
    (folder / "b.jsonl").write_bytes(seed_line(2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.jsonl").write_bytes(b"mine\n")
    refused = cli(folder, "--out", out)
    assert refused.returncode == 2 and "b.jsonl" in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b.jsonl"] and (out / "b.jsonl").read_bytes() == b"mine\n"
    (out / "b.jsonl").unlink()
    assert cli(folder, "--out", out).returncode == 0
    assert rows_of(LogStore(out).frame) == norm_ref(reference(folder)[0])

    missing = cli(tmp_path / "nowhere.jsonl")
    assert missing.returncode == 2 and "no log at" in missing.stderr


# --------------------------------------------------------------------------- the whole log's groups on disk


def test_a_fresh_process_reads_the_whole_logs_groups_instead_of_grouping_every_turn(tmp_path, monkeypatch):
    """The dashboard's all-time list (and the totals and sources) of a log whose cache is on disk:
    a new Questions reads the saved groups; after appends it groups only the new rows; after a
    rewrite it groups everything again. Every answer equals the plain one."""
    from chatcore.store.questions import Filters, Questions

    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(good_line(i) if i % 4 else seed_line(i) for i in range(3000)))
    first = Questions(LogStore(log))
    assert_questions_match(first, log)
    first.store.wait_cache()

    grouped = []
    original = Questions._grouped

    def counting(self, f, source="turns_narrow"):
        grouped.append((f, source))
        return original(self, f, source)

    monkeypatch.setattr(Questions, "_grouped", counting)
    fresh = Questions(LogStore(log))
    assert_questions_match(fresh, log)
    assert [g for g in grouped if g[0] == Filters()] == []  # read from disk, not grouped

    with open(log, "ab") as f:
        f.write(b"".join(good_line(i, conv=f"new{i % 3}") for i in range(3000, 3100)))
    grouped.clear()
    after = Questions(LogStore(log))
    assert_questions_match(after, log)
    assert [g for g in grouped if g[0] == Filters()] == [(Filters(), "turns_tail")]  # only the new rows

    log.write_bytes(b"".join(good_line(i, conv=f"other{i % 5}") for i in range(500)))  # rewritten
    grouped.clear()
    rewritten = Questions(LogStore(log))
    assert_questions_match(rewritten, log)
    assert [g for g in grouped if g[0] == Filters()] == [(Filters(), "turns_narrow")]


def seed_plain_line(i: int) -> dict:
    """A line in the seed's shape without a history: its four usual keys only."""
    return {"timestamp": (T0 + timedelta(seconds=i)).replace(tzinfo=None).isoformat(),
            "conversation_id": f"s{i % 5}", "user_text": f"question {i} ü", "response": [f"hello {i}", "You said: hi"]}


_ODD_SEED_LINES = [
    b'{"timestamp": "2026-01-01T10:00:00", "ts": null, "conversation_id": "odd", "user_text": "u", "response": ["r"]}',
    b'{"timestamp": "2026-01-01T10:00:00", "\\u0074s": null, "conversation_id": "odd", "user_text": "u", "response": []}',
    b'{"timestamp": "2026-01-01T10:00:00", "t\\u0073": "2027-01-01T00:00:00Z", "conversation_id": "odd", '
    b'"user_text": "u", "response": ["r"]}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "odd", "user_text": "u", "response": ["r", null]}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "odd", "user_text": "u", "response": "text"}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "odd", "user_text": "u", "response": ["r"], "turn": -1}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "odd", "user_text": "u", "response": ["r"], '
    b'"kind": "event"}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "odd", "user_text": "u", "response": ["r"], '
    b'"files": [{"size": 1}]}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "odd", "user_text": "u", "response": ["r"], '
    b'"latency_ms": NaN}',
    b'{"timestamp": "0000-01-01T00:00:00", "conversation_id": "odd", "user_text": "u", "response": ["r"]}',
    b'{"timestamp": "2026-01-01 10:00", "conversation_id": "odd", "user_text": "u", "response": ["r"]}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "", "user_text": "u", "response": ["r"]}',
    b'{"timestamp": "2026-01-01T10:00:00", "timestamp": "2026-02-02T10:00:00", "conversation_id": "odd", '
    b'"user_text": "u", "response": ["r"]}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "odd", "user_text": null, "response": null}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "odd", "user_text": "u", "response": ["r"], "a": 1}',
    b'{"timestamp": "2026-01-01T10:00:00", "conversation_id": "odd", "user_text": "u", "response": ["r", null]}',
    b'{"timestamp": "2026-01-01T10:00:00.5", "conversation_id": "odd", "user_text": "u", "response": ["r"]}',
    b'{"timestamp": "2026-01-01T10:00:00.123456Z", "conversation_id": "odd", "user_text": "u", "response": ["r"]}',
    b'{"timestamp": "2026-01-01T10:00:00.12345\u0036", "conversation_id": "odd", "user_text": "u", "response": []}',
]


@pytest.mark.parametrize("odd", _ODD_SEED_LINES)
def test_a_block_of_plain_seed_lines_with_one_odd_line_reads_as_the_reference(odd):
    """Blocks that start with the seed's four usual keys are first read with only those keys
    declared: a line with any other key (a "ts" key, null or escaped, among them) or a value the
    reference rejects still reads as the reference reads it."""
    lines = [json.dumps(seed_plain_line(i)).encode() for i in range(40)]
    for at in (0, 1, 20, 40):
        if at == 0:
            data = b"".join(l + b"\n" for l in [lines[0], odd, *lines[1:]])  # the first line stays plain
        else:
            data = b"".join(l + b"\n" for l in [*lines[:at], odd, *lines[at:]])
        assert_block_reads_as_reference(data)


def test_a_block_of_plain_seed_lines_takes_the_narrow_pass(monkeypatch):
    from chatcore.store import parse as parse_mod

    calls = []
    real = parse_mod._fast_buf
    monkeypatch.setattr(parse_mod, "_fast_buf", lambda *a, **k: calls.append(k.get("narrow", False)) or real(*a, **k))
    data = b"".join(json.dumps(seed_plain_line(i), ensure_ascii=bool(i % 2)).encode() + b"\n" for i in range(100))
    assert_block_reads_as_reference(data)
    assert calls == [True, True]  # one narrow pass for all the columns, one for the list's


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 39), record_like), min_size=1, max_size=4))
def test_fuzz_plain_seed_blocks_with_any_extra_keys_read_as_the_reference(extras):
    lines = [seed_plain_line(i) for i in range(40)]
    for at, extra in extras:
        if at:  # the first line keeps the four keys, so the narrow pass is tried
            lines[at] = {**lines[at], **extra}
    assert_block_reads_as_reference(b"".join(json.dumps(l).encode() + b"\n" for l in lines))
