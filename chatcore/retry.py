"""The one retry policy of the project: exponential backoff that a stop event ends at once.

Used by the mirror's event stream (:mod:`chatcore.remote.mirror`) and the alert webhooks
(:mod:`chatcore.staff.alerts`)::

    for attempt in backoff(first=1.0, most=60.0, stop=stop_event):
        with attempt:
            deliver()

waits ``first`` seconds after the first failure, twice as long after each next one, never
more than ``most``; the last error is raised again when ``stop`` is set or ``give_up`` says so.
"""
from __future__ import annotations

import threading
from typing import Callable

import tenacity


def backoff(first: float, most: float, stop: threading.Event, *,
            give_up: Callable[[tenacity.RetryCallState], bool] | None = None,
            before_sleep: Callable[[tenacity.RetryCallState], None] | None = None) -> tenacity.Retrying:
    """A :class:`tenacity.Retrying` that retries any exception (see the module docstring).

    ``give_up(state)`` is asked after each failure (``state.outcome`` holds the error,
    ``state.attempt_number`` counts the tries); ``before_sleep(state)`` is told each wait
    (``state.next_action.sleep`` seconds). A wait ends early when ``stop`` is set.
    """
    def stopped(state: tenacity.RetryCallState) -> bool:
        return stop.is_set() or (give_up is not None and give_up(state))

    return tenacity.Retrying(
        wait=tenacity.wait_exponential(multiplier=first, max=most),
        stop=stopped,
        sleep=stop.wait,
        before_sleep=before_sleep,
        reraise=True,
    )
