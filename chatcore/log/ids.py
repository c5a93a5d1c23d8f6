"""The one rule for naming a conversation: its full id, or a unique prefix of it.

Every command, staff route and page that takes a conversation id from a person resolves it
here, so a short id (the 8 characters the pages and ``simulate`` show) means the same
everywhere, and a made-up id is an error everywhere instead of a phantom conversation.
Where the ids come from (the store, the Space's memory) is the caller's business: it passes
a function that lists known ids starting with a prefix.
"""
from __future__ import annotations

from typing import Callable, Iterable

from chatcore.log.records import check_conversation_id

#: Shortest prefix accepted (shorter ones match too many ids to be meant).
MIN_PREFIX = 6
#: Candidates named in an "ambiguous" error.
SHOWN_CANDIDATES = 10


class ConversationNotFound(LookupError):
    """No conversation has this id (or starts with this prefix)."""

    def __init__(self, text: str):
        self.text = text
        hint = "" if len(text) >= MIN_PREFIX else f" (a prefix needs at least {MIN_PREFIX} characters)"
        super().__init__(f"no conversation {text!r} in the log{hint}: "
                         "check the id (`python -m chatcore conversations` lists them)")


class AmbiguousConversation(LookupError):
    """A prefix that names more than one conversation."""

    def __init__(self, text: str, candidates: list[str]):
        self.text = text
        self.candidates = candidates
        shown = ", ".join(candidates[:SHOWN_CANDIDATES])
        more = f" and {len(candidates) - SHOWN_CANDIDATES} more" if len(candidates) > SHOWN_CANDIDATES else ""
        super().__init__(f"{text!r} names {len(candidates)} conversations ({shown}{more}): "
                         "give more of the id")


def resolve_conversation_id(text, ids_starting_with: Callable[[str], Iterable[str]]) -> str:
    """The full id that ``text`` names.

    ``ids_starting_with(prefix)`` returns known ids that start with ``prefix`` compared
    without case (it may return more; they are filtered here). An exact id wins over longer
    ids it is a prefix of. Raises ``ValueError`` for text that is no id at all,
    :class:`ConversationNotFound` and :class:`AmbiguousConversation`.
    """
    text = check_conversation_id(text.strip() if isinstance(text, str) else text)
    folded = text.casefold()
    found = sorted({cid for cid in ids_starting_with(text)
                    if isinstance(cid, str) and cid.casefold().startswith(folded)})
    if text in found:
        return text
    exact = [cid for cid in found if cid.casefold() == folded]
    if len(exact) == 1:
        return exact[0]
    if len(text) < MIN_PREFIX or not found:
        raise ConversationNotFound(text)
    if len(found) > 1:
        raise AmbiguousConversation(text, found)
    return found[0]


def prefix_filter(ids: Iterable[str]) -> Callable[[str], list[str]]:
    """``ids_starting_with`` over an in-memory collection of ids."""
    def starting_with(prefix: str) -> list[str]:
        folded = prefix.casefold()
        return [cid for cid in ids if cid.casefold().startswith(folded)]

    return starting_with
