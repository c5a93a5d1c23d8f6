"""Forget a conversation everywhere: the log and its annotations, caches and reports
(:func:`chatcore.log.retention.forget`), and the alerts watcher's files, which live above the log."""
from __future__ import annotations

from chatcore.log.retention import forget
from chatcore.staff.alerts import forget_in_state


def forget_conversation(log_path, conversation_id: str, *, by: str, dry_run: bool = False) -> dict:
    """What the ``forget`` command and the dashboard's Forget button do; returns the counts."""
    result = forget(log_path, conversation_id, by=by, dry_run=dry_run)
    if not dry_run:
        for cid in [conversation_id, *(r["conversation_id"] for r in result["replays"])]:
            forget_in_state(log_path, cid)
    return result
