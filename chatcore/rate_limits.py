"""Where rate limits are counted: the ``limits`` library's storage.

By default each limit counts in this process's memory. Several Spaces (replicas) or
dashboards that must share one allowance name a shared store in ``CHAT_RATE_LIMIT_STORAGE``,
a ``limits`` storage URI such as ``redis://host:6379`` (the matching client package, e.g.
``redis``, must be installed). See ``docs/security.md``.
"""
from __future__ import annotations

import threading

from limits.errors import ConfigurationError
from limits.storage import MovingWindowSupport, Storage, storage_from_string

from chatcore.config import Settings, reveal

STORAGE_ENV = "CHAT_RATE_LIMIT_STORAGE"
_shared: dict[str, Storage] = {}
_shared_lock = threading.Lock()


def storage(uri: str | None = None) -> Storage:
    """The storage named by ``uri`` (default ``CHAT_RATE_LIMIT_STORAGE``, else memory).

    Memory storage is made anew for each caller, so two limits of one process never mix;
    a shared store is opened once per process and the limits keep apart by their keys.
    """
    if uri is None:
        uri = reveal(Settings.from_env().rate_limit_storage)
    uri = (uri or "").strip() or "memory://"
    if uri.startswith("memory://"):
        return storage_from_string(uri)
    with _shared_lock:
        if uri not in _shared:
            try:
                made = storage_from_string(uri)
            except ConfigurationError as exc:
                raise ValueError(f"{STORAGE_ENV} is not a storage this setup can use ({exc}); "
                                 "use memory:// or e.g. redis://host:6379 with the redis package") from None
            if not isinstance(made, MovingWindowSupport):
                raise ValueError(f"{STORAGE_ENV} names a storage without moving windows; use redis:// or memory://")
            _shared[uri] = made
        return _shared[uri]
