"""The whole log's conversation list (chatcore.store.summary), grouped on the Arrow columns
without the SQL engine: it is the engine's list of the same turns (ties in time and all), and
after appends the saved list merged with the new rows' groups is the whole log's list."""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

from chatcore.store import LogStore
from chatcore.store import summary as summary_mod
from chatcore.store.questions import Questions

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
#: A date range holding every turn: the list of it is the engine's (SQL) answer.
EARLY = datetime(1, 1, 2, tzinfo=timezone.utc)
LIST_COLUMNS = ("ts", "conversation_id", "user_text", "source")
IDS = ["c-a", "c-b", "c-\u00e9", "c-z", "\u00e7", "A", "c-a2", "\U0001f600", "c-1", "c-10"]


def _lines(rng: random.Random, start: int, n: int, earliest: int = 0) -> str:
    """Turns in both shapes, their times out of file order and often equal: conversations end
    at the same time (ordered by id then), and a conversation's first turns share a time (the
    first in the file is its first question then)."""
    out = []
    for i in range(start, start + n):
        ts = T0 + timedelta(seconds=rng.choice([earliest, earliest + 1, 3, 3, 7, rng.randint(earliest, 40)]),
                            microseconds=rng.choice([0, 0, 250]))
        cid = rng.choice(IDS)
        if rng.random() < 0.5:
            line = {"timestamp": ts.replace(tzinfo=None).isoformat(), "conversation_id": cid,
                    "user_text": f"question {i}", "response": ["a", "b"]}
        else:
            line = {"ts": ts.isoformat().replace("+00:00", "Z"), "conversation_id": cid, "turn": i,
                    "user_text": f"question {i} \u00fc", "response": "r", "source": rng.choice(["widget", "api"])}
        out.append(json.dumps(line, ensure_ascii=rng.random() < 0.5) + "\n")
    return "".join(out)


def _list(q: Questions, **kw) -> list[dict]:
    return q.summary(**kw).to_pylist()


def test_the_whole_list_is_the_engines_list_of_the_same_turns(tmp_path):
    rng = random.Random(11)
    log = tmp_path / "log.jsonl"
    log.write_text(_lines(rng, 0, 500))
    q = Questions(LogStore(log, columns=LIST_COLUMNS))
    q.sync()
    whole = _list(q)
    assert q._connection is None  # listed without starting the engine
    assert whole == _list(q, since=EARLY)
    assert len(whole) == len(IDS)
    assert [r["first_user_text"] for r in whole if r["conversation_id"] == "c-a"]  # (texts are there)


def test_after_appends_the_saved_list_merged_with_the_new_rows_is_the_whole_logs_list(tmp_path, monkeypatch):
    """A fresh process over a log that only grew groups just the new rows and merges them into
    the saved list: new conversations, later last turns, and first turns earlier than the saved
    ones (the new rows' times reach back before the old ones)."""
    merged = []
    real = summary_mod.merged_lists
    monkeypatch.setattr(summary_mod, "merged_lists", lambda *a: merged.append(1) or real(*a))
    rng = random.Random(3)
    log = tmp_path / "log.jsonl"
    log.write_text(_lines(rng, 0, 300, earliest=5))
    first = Questions(LogStore(log, columns=LIST_COLUMNS))
    first.sync()
    first.summary()
    for k in range(3):
        with open(log, "a") as f:
            f.write(_lines(rng, 300 + 100 * k, 100, earliest=k))
        again = Questions(LogStore(log, columns=LIST_COLUMNS))
        again.sync()
        assert _list(again) == _list(again, since=EARLY)
        assert len(merged) == k + 1
    # and the merged list, saved, is what a process over the unchanged log reads
    last = Questions(LogStore(log, columns=LIST_COLUMNS))
    last.sync()
    assert _list(last) == _list(last, since=EARLY) and len(merged) == 3
