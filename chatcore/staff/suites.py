"""Regression suites: named sets of logged conversations to replay before a change goes live.

Stored append-only beside the other annotations, in ``<log folder>/annotations/suites.jsonl``:

* ``{kind: "add", suite, conversation_id, turns: [{turn, user_text, reference}], filter, author, ts}``
  — a conversation joins the suite with a copy of its user turns and the replies logged then
  (the *reference*), so a suite runs the same even after the log is rotated or moved.
* ``{kind: "remove", suite, conversation_id, author, ts}`` — it leaves the suite.
* ``{kind: "ideal", conversation_id, turn, value, author, ts}`` — the answer staff would have
  liked for that turn (written on the transcript; shared by every suite holding the
  conversation). An empty value clears it.

The latest line per (suite, conversation) wins, as for tags.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from chatcore.log.annotations import _read, _writer, annotations_dir, feedback_by_turn, load_annotations, normalise_tag
from chatcore.log.records import check_conversation_id, utc_now_iso

SUITE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
MAX_IDEAL = 4000
#: Staff sources whose turns in a conversation mean a person took it over.


def suites_file(log_path):
    return annotations_dir(log_path) / "suites.jsonl"


def _append(path, record: dict) -> None:
    """Append one line to ``path`` (a local file: suites are kept where the CLI or dashboard runs)."""
    w = _writer(path)
    if not w.append(record):
        raise OSError(f"could not save to {path.name}: {w.last_error}")


def check_suite_name(name) -> str:
    if not isinstance(name, str) or not SUITE_PATTERN.match(name):
        raise ValueError("a suite name is 1–64 characters: letters, digits, - _ or . (e.g. refunds-v2)")
    return name


@dataclass
class SuiteTurn:
    turn: int
    user_text: str
    reference: str
    ideal: str | None = None


@dataclass
class SuiteConversation:
    conversation_id: str
    turns: list[SuiteTurn]
    added: str = ""
    filter: str = ""


@dataclass
class Suite:
    name: str
    conversations: dict[str, SuiteConversation] = field(default_factory=dict)
    created: str = ""
    updated: str = ""

    @property
    def turn_count(self) -> int:
        return sum(len(c.turns) for c in self.conversations.values())


# --------------------------------------------------------------------------- choosing


def conversation_turns(frame: pd.DataFrame, conversation_id: str) -> list[SuiteTurn]:
    """The turns of one conversation in the log, in order, as (user text, reference reply)."""
    rows = frame[frame["conversation_id"] == conversation_id]
    if rows.empty:
        return []
    rows = rows.sort_values("ts", kind="stable")
    out = []
    for i, row in enumerate(rows.itertuples(index=False)):
        out.append(SuiteTurn(i, str(row.user_text or ""), str(row.response or "")))
    return out


def select_conversations(frame: pd.DataFrame, log_path, *, rated: str | None = None, tags=(),
                         handed_off: bool = False, since: datetime | None = None,
                         until: datetime | None = None, ids=()) -> list[str]:
    """Conversation ids of ``frame`` matching every filter given (ids picked by hand are added).

    ``rated``: ``down`` or ``up`` — a turn rated so (a visitor's rating outranks staff's);
    ``tags``: every tag must be on the conversation; ``handed_off``: a staff member took it over (a ``handoff_taken`` line).
    With no filter at all, nothing is chosen but the ``ids``.
    """
    if frame.empty:
        chosen: list[str] = []
    else:
        ts = frame["ts"]
        mask = pd.Series(True, index=frame.index)
        if since is not None:
            mask &= ts >= pd.Timestamp(since)
        if until is not None:
            mask &= ts < pd.Timestamp(until)
        ids_in_range = set(frame.loc[mask, "conversation_id"])
        filtered = bool(rated or tags or handed_off or since or until)
        if not filtered:
            ids_in_range = set()
        if rated:
            if rated not in ("up", "down"):
                raise ValueError("rated must be 'up' or 'down'")
            ids_in_range &= {cid for (cid, _), r in feedback_by_turn(log_path).items() if r == rated}
        if tags:
            notes = load_annotations(log_path)
            wanted = {normalise_tag(t) for t in tags}
            ids_in_range &= {cid for cid, e in notes.items() if wanted <= e["tags"]}
        if handed_off:
            from chatcore.space.handoff import handed_off_ids

            ids_in_range &= handed_off_ids(log_path)
        first_seen = frame.drop_duplicates("conversation_id").sort_values("ts", kind="stable")
        chosen = [cid for cid in first_seen["conversation_id"] if cid in ids_in_range]
    for cid in ids:
        check_conversation_id(cid)
        if cid not in chosen:
            chosen.append(cid)
    return chosen


def describe_filter(*, rated=None, tags=(), handed_off=False, since=None, until=None, ids=()) -> str:
    parts = []
    if rated:
        parts.append(f"rated {rated}")
    parts += [f"tag {t}" for t in tags]
    if handed_off:
        parts.append("handed to a person")
    if since:
        parts.append(f"since {since:%Y-%m-%d %H:%M}")
    if until:
        parts.append(f"until {until:%Y-%m-%d %H:%M}")
    if ids and not parts:
        parts.append("picked by hand")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- writing


def add_conversations(log_path, suite: str, frame: pd.DataFrame, conversation_ids, *,
                      filter: str = "", author: str = "staff") -> list[str]:
    """Add the conversations (with their turns from ``frame``) to ``suite``; the ids added.

    Ids not in the log are skipped (a suite only holds conversations it can replay)."""
    check_suite_name(suite)
    added = []
    for cid in conversation_ids:
        check_conversation_id(cid)
        turns = conversation_turns(frame, cid)
        if not turns:
            continue
        _append(suites_file(log_path), {
            "v": 1, "ts": utc_now_iso(), "kind": "add", "suite": suite, "conversation_id": cid,
            "turns": [{"turn": t.turn, "user_text": t.user_text, "reference": t.reference} for t in turns],
            "filter": filter[:200], "author": (author or "staff")[:64],
        })
        added.append(cid)
    return added


def remove_conversation(log_path, suite: str, conversation_id: str, author: str = "staff") -> dict:
    check_suite_name(suite)
    check_conversation_id(conversation_id)
    rec = {"v": 1, "ts": utc_now_iso(), "kind": "remove", "suite": suite, "conversation_id": conversation_id,
           "author": (author or "staff")[:64]}
    _append(suites_file(log_path), rec)
    return rec


def set_ideal(log_path, conversation_id: str, turn: int, text: str, author: str = "staff") -> dict:
    """Write the ideal answer for one turn (an empty ``text`` clears it)."""
    check_conversation_id(conversation_id)
    if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn < 2**31:
        raise ValueError("turn must be a whole number from 0")
    text = (text or "").strip()
    if len(text) > MAX_IDEAL:
        raise ValueError(f"an ideal answer is at most {MAX_IDEAL} characters")
    rec = {"v": 1, "ts": utc_now_iso(), "kind": "ideal", "conversation_id": conversation_id, "turn": turn,
           "value": text, "author": (author or "staff")[:64]}
    _append(suites_file(log_path), rec)
    return rec


# ----------------------------------------------------------------------------- reading


def _records(log_path) -> list[dict]:
    frame = _read(suites_file(log_path))
    return [] if frame.empty else frame.to_dict("records")


def load_ideals(log_path) -> dict[tuple[str, int], str]:
    out: dict[tuple[str, int], str] = {}
    for rec in _records(log_path):
        if rec.get("kind") != "ideal" or not isinstance(rec.get("value"), str):
            continue
        turn = rec.get("turn")
        if isinstance(turn, float) and turn == int(turn):
            turn = int(turn)
        if not isinstance(turn, int):
            continue
        if rec["value"]:
            out[(rec["conversation_id"], turn)] = rec["value"]
        else:
            out.pop((rec["conversation_id"], turn), None)
    return out


def load_suites(log_path) -> dict[str, Suite]:
    """Every suite with its current conversations (ideal answers filled in), by name."""
    suites: dict[str, Suite] = {}
    ideals = load_ideals(log_path)
    for rec in _records(log_path):
        name = rec.get("suite")
        kind = rec.get("kind")
        if kind not in ("add", "remove") or not isinstance(name, str) or not SUITE_PATTERN.match(name):
            continue
        suite = suites.setdefault(name, Suite(name, created=str(rec.get("ts") or "")))
        suite.updated = str(rec.get("ts") or "")
        cid = rec["conversation_id"]
        if kind == "remove":
            suite.conversations.pop(cid, None)
            continue
        turns = []
        for t in rec.get("turns") or []:
            if isinstance(t, dict) and isinstance(t.get("turn"), int):
                turns.append(SuiteTurn(t["turn"], str(t.get("user_text") or ""), str(t.get("reference") or "")))
        if not turns:
            continue
        suite.conversations.pop(cid, None)  # re-added: moves to the end with the fresh turns
        suite.conversations[cid] = SuiteConversation(cid, turns, str(rec.get("ts") or ""),
                                                     str(rec.get("filter") or ""))
    for suite in suites.values():
        for conv in suite.conversations.values():
            for t in conv.turns:
                t.ideal = ideals.get((conv.conversation_id, t.turn))
    return suites


def get_suite(log_path, name: str) -> Suite:
    check_suite_name(name)
    suite = load_suites(log_path).get(name)
    if suite is None or not suite.conversations:
        raise KeyError(name)
    return suite
