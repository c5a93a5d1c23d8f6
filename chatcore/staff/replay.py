"""Replay: re-run a logged conversation's user turns against today's Space.

The replay is a new conversation (``source=replay``) whose id is linked to the
original in the annotations, so it shows up next to it. Old and new replies are
returned side by side with a word-level diff, to check a prompt or model change
against real conversations before shipping it.
"""
from __future__ import annotations

import difflib
import html
import re
import uuid
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from chatcore.remote.client import SpaceClient

_TOKEN = re.compile(r"\s+|[^\s]+")


@dataclass
class ReplayTurn:
    turn: int
    user_text: str
    old: str
    new: str
    error: str | None = None

    @property
    def same(self) -> bool:
        return self.error is None and self.old.strip() == self.new.strip()

    @property
    def similarity(self) -> float:
        return difflib.SequenceMatcher(None, _TOKEN.findall(self.old), _TOKEN.findall(self.new)).ratio()


@dataclass
class ReplayResult:
    original_id: str
    replay_id: str
    turns: list[ReplayTurn] = field(default_factory=list)

    @property
    def changed(self) -> int:
        """Turns the Space answered differently (a failed turn is counted in ``failed``, not here)."""
        return sum(t.error is None and not t.same for t in self.turns)

    @property
    def failed(self) -> int:
        """Turns that were not replayed (the Space failed or refused, or no user text)."""
        return sum(t.error is not None for t in self.turns)

    @property
    def answered(self) -> int:
        """Turns the Space answered: only a replay with at least one is worth linking."""
        return len(self.turns) - self.failed

    def summary(self) -> str:
        """``3 turn(s): 1 changed, 1 same, 1 failed``."""
        same = self.answered - self.changed
        return f"{len(self.turns)} turn(s): {self.changed} changed, {same} same, {self.failed} failed"


def new_replay_id() -> str:
    from chatcore.log.records import REPLAY_PREFIX

    return f"{REPLAY_PREFIX}{uuid.uuid4()}"


def replay_conversation(turns: pd.DataFrame, client: SpaceClient, *, replay_id: str | None = None,
                        on_turn: Callable[[ReplayTurn], None] | None = None,
                        before_turn: Callable[[int, str, SpaceClient], None] | None = None) -> ReplayResult:
    """Send each user turn of ``turns`` (one conversation) to the Space, in order.

    ``before_turn(index, replay_id, client)`` is called before each turn is sent (not once the
    Space stopped answering): where what people said in the conversation is replayed."""
    if turns.empty:
        raise ValueError("the conversation has no turns to replay")
    ordered = turns.sort_values("ts", kind="stable")
    original = str(ordered["conversation_id"].iloc[0])
    result = ReplayResult(original, replay_id or new_replay_id())
    client.reset()
    gone: str | None = None  # set once the Space stops answering: later turns are not sent
    for i, row in enumerate(ordered.itertuples(index=False)):
        text = row.user_text or ""
        old = row.response or ""
        if gone is not None:
            item = ReplayTurn(i, text, old, "", error=f"not sent: {gone}")
        elif not text.strip():
            item = ReplayTurn(i, text, old, "", error="no user text to replay")
        else:
            try:
                if before_turn is not None:
                    before_turn(i, result.replay_id, client)
                new = "".join(client.stream(text, result.replay_id, source="replay"))
                item = ReplayTurn(i, text, old, new)
            except Exception as exc:  # SpaceError and friends: keep going, mark the turn
                item = ReplayTurn(i, text, old, "", error=str(exc))
                if getattr(exc, "kind", None) == "unreachable":
                    gone = "the Space stopped answering at an earlier turn"
        result.turns.append(item)
        if on_turn:
            on_turn(item)
    return result


def diff_ops(old: str, new: str) -> list[tuple[str, str]]:
    """Word-level diff as ``[(op, text)]`` with op in ``=``, ``-``, ``+``."""
    a, b = _TOKEN.findall(old or ""), _TOKEN.findall(new or "")
    out: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(("=", "".join(a[i1:i2])))
        else:
            if i2 > i1:
                out.append(("-", "".join(a[i1:i2])))
            if j2 > j1:
                out.append(("+", "".join(b[j1:j2])))
    return out


def diff_html(old: str, new: str) -> tuple[str, str]:
    """(old, new) as escaped HTML with removed words in <del> and added words in <ins>."""
    left, right = [], []
    for op, text in diff_ops(old, new):
        esc = html.escape(text)
        if op == "=":
            left.append(esc)
            right.append(esc)
        elif op == "-":
            left.append(f"<del>{esc}</del>")
        else:
            right.append(f"<ins>{esc}</ins>")
    return "".join(left), "".join(right)


def diff_terminal(old: str, new: str, colour: bool = True) -> str:
    """One line of diff for a terminal: removed in red ``[-…-]``, added in green ``{+…+}``."""
    parts = []
    for op, text in diff_ops(old, new):
        text = strip_controls(text)
        if op == "=":
            parts.append(text)
        elif op == "-":
            parts.append(f"\x1b[31m[-{text}-]\x1b[0m" if colour else f"[-{text}-]")
        else:
            parts.append(f"\x1b[32m{{+{text}+}}\x1b[0m" if colour else f"{{+{text}+}}")
    return "".join(parts)


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def strip_controls(text: str) -> str:
    """Text safe for a terminal: no escape sequences, bells or direction overrides from visitors."""
    return _CONTROLS.sub("\ufffd", text or "")
