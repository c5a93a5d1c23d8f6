"""Regression suites: named sets of logged conversations to replay before a change goes live.

Stored append-only beside the other annotations, in ``<log folder>/annotations/suites.jsonl``:

* ``{kind: "add", suite, conversation_id, turns: [{turn, user_text, reference, kind}], context,
  filter, author, ts}`` — a conversation joins the suite with a copy of its user turns and the
  replies logged then (the *reference*), so a suite runs the same even after the log is rotated
  or moved. Each turn's ``kind`` says what its reference is (see :data:`TURN_KINDS`), from the
  ratings and hand-offs known when it was added; ``context`` holds what people said in the
  conversation (staff messages, the visitor's messages to staff, take-over and hand-back), each
  placed ``before`` a turn: replayed as staff actions, never as bot turns.
* ``{kind: "remove", suite, conversation_id, author, ts}`` — it leaves the suite.
* ``{kind: "options", suite, conversation_id: "", golden, handoff, author, ts}`` — the suite is *golden* (every turn's
  reference is a known-good answer) and/or what a replayed request for a person should get
  (``handoff``: handed to a person again; ``answer``: a good answer from the bot).
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
MAX_CONTEXT_TEXT = 8000
#: Context items kept per conversation (as many as the Space keeps in memory for one).
MAX_CONTEXT_ITEMS = 200
#: What a turn's reference is. ``bad``: known-bad, a counter-example (rated down by a visitor or
#: staff, or the visitor asked for a person right after it); ``good``: known-good (rated up);
#: ``handoff``: the visitor asked for a person in this turn (the reference is the hand-off
#: notice); ``unrated``: nobody said (scored like ``good``: the logged reply is the answer
#: expected, as nobody complained).
TURN_KINDS = ("bad", "good", "handoff", "unrated")
#: What a replayed request for a person should get (a suite's ``handoff`` option).
HANDOFF_EXPECTATIONS = ("handoff", "answer")
#: Event kinds kept as a conversation's context (what people said and did in it).
CONTEXT_KINDS = ("handoff_taken", "staff_message", "visitor_message", "handoff_returned")


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
    kind: str = "unrated"  # one of TURN_KINDS


@dataclass
class SuiteConversation:
    conversation_id: str
    turns: list[SuiteTurn]
    added: str = ""
    filter: str = ""
    #: What people said and did, in order: ``{before, kind, text, staff}`` (``before``: the index
    #: of the turn it came before). Replayed as staff actions, never as bot turns.
    context: list[dict] = field(default_factory=list)
    #: The staff's notes on the conversation (filled in when the suite is loaded): the judge's rubric.
    note: str = ""


@dataclass
class Suite:
    name: str
    conversations: dict[str, SuiteConversation] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    golden: bool = False
    handoff: str = "handoff"  # one of HANDOFF_EXPECTATIONS

    @property
    def turn_count(self) -> int:
        return sum(len(c.turns) for c in self.conversations.values())

    def expectation(self, turn: SuiteTurn) -> str:
        """How a replayed ``turn`` is scored: ``bad`` (its reference is a counter-example),
        ``good`` (its reference is an answer to keep), ``handoff`` (it should be handed to a
        person again) or ``answer`` (a request for a person that the bot should now answer)."""
        if turn.kind == "handoff":
            return self.handoff
        if self.golden or turn.kind in ("good", "unrated"):
            return "good"
        return "bad"


# --------------------------------------------------------------------------- choosing


def conversation_turns(frame: pd.DataFrame, conversation_id: str, ratings: dict | None = None,
                       events=()) -> list[SuiteTurn]:
    """The turns of one conversation in the log, in order, as (user text, reference reply, kind).

    ``ratings``: ``{(conversation_id, turn): "up"|"down"}`` (:func:`feedback_by_turn`);
    ``events``: the conversation's event lines, for the requests for a person made with the
    widget's button (one made in a message is the turn the Space answered with the notice).
    """
    rows = frame[frame["conversation_id"] == conversation_id]
    if rows.empty:
        return []
    rows = rows.sort_values("ts", kind="stable")
    ratings = ratings or {}
    out, logged = [], []
    for i, row in enumerate(rows.itertuples(index=False)):
        out.append(SuiteTurn(i, str(row.user_text or ""), str(row.response or "")))
        logged.append(_logged_turn(row, i))
        if getattr(row, "backend", None) == "handoff":
            out[-1].kind = "handoff"
    asked_after = {i - 1 for i, t in enumerate(out) if t.kind == "handoff"}
    for e in events:
        if e.get("kind") == "handoff_requested" and e.get("via") != "chat" and isinstance(e.get("at_turn"), int):
            asked_after.add(_index_before(logged, e["at_turn"]) - 1)
    for i, t in enumerate(out):
        if t.kind == "handoff":
            continue
        rating = ratings.get((conversation_id, logged[i]))
        if rating == "down" or (i in asked_after and rating != "up"):
            t.kind = "bad"
        elif rating == "up":
            t.kind = "good"
    return out


def _logged_turn(row, index: int) -> int:
    """The Space's turn number of a row (ratings and events use it); its position when absent."""
    value = getattr(row, "turn", None)
    try:
        return int(value) if value is not None and not pd.isna(value) else index
    except (TypeError, ValueError):
        return index


def _index_before(logged: list[int], at_turn: int) -> int:
    """The index of the first turn whose Space turn number is ``at_turn`` or later."""
    return next((i for i, t in enumerate(logged) if t >= at_turn), len(logged))


def conversation_context(frame: pd.DataFrame, conversation_id: str, events) -> list[dict]:
    """What people said and did in the conversation (:data:`CONTEXT_KINDS`), each placed before a turn."""
    rows = frame[frame["conversation_id"] == conversation_id].sort_values("ts", kind="stable")
    logged = [_logged_turn(row, i) for i, row in enumerate(rows.itertuples(index=False))]
    out = []
    for e in events:
        if e.get("kind") not in CONTEXT_KINDS or not isinstance(e.get("at_turn"), int):
            continue
        text = e.get("text") if isinstance(e.get("text"), str) else None
        if e["kind"] in ("staff_message", "visitor_message") and not text:
            continue
        out.append({"before": _index_before(logged, e["at_turn"]), "kind": e["kind"],
                    "text": (text or "")[:MAX_CONTEXT_TEXT] or None,
                    "staff": e.get("staff") if isinstance(e.get("staff"), str) else None})
    return out[-MAX_CONTEXT_ITEMS:]


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
            from chatcore.staff.handoff_log import handed_off_ids

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

    Each turn's kind comes from the ratings and hand-offs known now (adding a conversation
    again refreshes them). Ids not in the log are skipped (a suite only holds conversations
    it can replay)."""
    from chatcore.staff.handoff_log import conversation_events

    check_suite_name(suite)
    ratings = feedback_by_turn(log_path)
    added = []
    for cid in conversation_ids:
        check_conversation_id(cid)
        events = conversation_events(log_path, cid)
        turns = conversation_turns(frame, cid, ratings, events)
        if not turns:
            continue
        _append(suites_file(log_path), {
            "v": 1, "ts": utc_now_iso(), "kind": "add", "suite": suite, "conversation_id": cid,
            "turns": [{"turn": t.turn, "user_text": t.user_text, "reference": t.reference, "kind": t.kind}
                      for t in turns],
            "context": conversation_context(frame, cid, events),
            "filter": filter[:200], "author": (author or "staff")[:64],
        })
        added.append(cid)
    return added


def set_options(log_path, suite: str, *, golden: bool | None = None, handoff: str | None = None,
                author: str = "staff") -> dict:
    """Mark ``suite`` golden (or not) and/or say what a replayed request for a person should get."""
    check_suite_name(suite)
    if handoff is not None and handoff not in HANDOFF_EXPECTATIONS:
        raise ValueError("a request for a person should get: handoff (a person again) or answer (from the bot)")
    current = load_suites(log_path).get(suite)
    # conversation_id "": the annotation files' reader keeps only lines that have one.
    rec = {"v": 1, "ts": utc_now_iso(), "kind": "options", "suite": suite, "conversation_id": "",
           "golden": bool(golden) if golden is not None else bool(current and current.golden),
           "handoff": handoff or (current.handoff if current else "handoff"),
           "author": (author or "staff")[:64]}
    _append(suites_file(log_path), rec)
    return rec


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
    """Every suite with its current conversations (ideal answers and staff notes filled in), by name."""
    suites: dict[str, Suite] = {}
    ideals = load_ideals(log_path)
    for rec in _records(log_path):
        name = rec.get("suite")
        kind = rec.get("kind")
        if kind not in ("add", "remove", "options") or not isinstance(name, str) or not SUITE_PATTERN.match(name):
            continue
        suite = suites.setdefault(name, Suite(name, created=str(rec.get("ts") or "")))
        suite.updated = str(rec.get("ts") or "")
        if kind == "options":
            suite.golden = rec.get("golden") is True
            suite.handoff = rec.get("handoff") if rec.get("handoff") in HANDOFF_EXPECTATIONS else "handoff"
            continue
        cid = rec["conversation_id"]
        if kind == "remove":
            suite.conversations.pop(cid, None)
            continue
        turns = []
        for t in rec.get("turns") or []:
            if isinstance(t, dict) and isinstance(t.get("turn"), int):
                turns.append(SuiteTurn(t["turn"], str(t.get("user_text") or ""), str(t.get("reference") or ""),
                                       kind=t.get("kind") if t.get("kind") in TURN_KINDS else "unrated"))
        if not turns:
            continue
        context = [c for c in rec.get("context") or [] if isinstance(c, dict) and c.get("kind") in CONTEXT_KINDS
                   and isinstance(c.get("before"), int)]
        suite.conversations.pop(cid, None)  # re-added: moves to the end with the fresh turns
        suite.conversations[cid] = SuiteConversation(cid, turns, str(rec.get("ts") or ""),
                                                     str(rec.get("filter") or ""), context)
    notes = load_annotations(log_path) if suites else {}
    for suite in suites.values():
        for conv in suite.conversations.values():
            for t in conv.turns:
                t.ideal = ideals.get((conv.conversation_id, t.turn))
            conv.note = "\n".join(str(n[2]) for n in notes.get(conv.conversation_id, {}).get("notes", []))
    return suites


def get_suite(log_path, name: str) -> Suite:
    check_suite_name(name)
    suite = load_suites(log_path).get(name)
    if suite is None or not suite.conversations:
        raise KeyError(name)
    return suite
