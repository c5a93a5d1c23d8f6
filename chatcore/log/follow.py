"""Live tail of the JSONL chat log (a file or a folder of ``*.jsonl`` shards).

A watchdog observer on the log's folder wakes a reader thread whenever something
changes there; the reader also wakes every ``poll_interval`` seconds on its own, so
a missed or coalesced event only delays delivery. New complete lines are parsed
with :func:`chatcore.store.parse.parse_line` (the same rules as the store) and queued;
:meth:`LogTail.drain` hands them out in write order.

What changed in the folder comes from the one follower of the log's shards,
:class:`chatcore.log.shards.ShardFollower`: shards are kept open, so lines written to a
file just before it was rotated (renamed) or deleted are still read from the old file
before moving on to the new one; truncation, replacement, delete + recreate and new
shards are handled there. A shard that ``forget`` rewrote is continued where it was and
the forgotten conversation dropped from the queue (see :attr:`LogTail.forgotten`). A shard
read again from its start because it was truncated or rewritten in place (not through
forget or retention, whose notes say what left) is announced once, in order, by a
:class:`Reset` in ``drain(resets=True)``: its holder drops what came from that shard and takes
the lines read again as the truth.
Never imports streamlit.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from chatcore.log.forgotten import ForgottenRegistry, forgotten_hash, rewrite_map
from chatcore.log.records import BAD_REASONS, BadRecord
from chatcore.log.shards import (TRUNCATED, REWRITTEN, Change, ShardFollower, last_line_end, next_line_start,
                                 pread)
from chatcore.store.parse import parse_line

log = logging.getLogger(__name__)

READ_BYTES = 4 << 20
#: Shards kept open at once (open ones are read to the end even after a rotation).
MAX_OPEN = 64


@dataclass(frozen=True)
class Reset:
    """In :meth:`LogTail.drain` (with ``resets=True``): the shard named ``shard`` is read again
    from its start (``reason``: ``"truncated"`` or ``"rewritten"`` in place, as
    :class:`chatcore.log.shards.Change` says). What was handed out of it before no longer holds;
    the records of it that follow are its lines as they are now. A file that took the name of
    another (rotation) is not announced: what was read of the old file stays true."""

    shard: str
    reason: str


class LogTail:
    """Follows a log and queues the normalised records of new lines."""

    def __init__(self, path, poll_interval: float = 0.25, from_start: bool = False, max_queue: int = 1_000_000,
                 parse=None, resume: dict | None = None, backlog_bytes: int = 0):
        """``from_start=True`` delivers the lines already in the log too (meant for
        small logs: every record becomes a dict; use LogStore for history);
        ``backlog_bytes`` delivers the whole lines of the last that many bytes of each shard.
        ``max_queue`` bounds memory if nobody drains: the oldest records are dropped
        and counted in ``stats["dropped"]``. ``parse`` turns a line (bytes) into a dict
        or raises BadRecord (default: the store's :func:`parse_line`). ``resume`` is a
        :meth:`positions` result: the shards it names are read on from there, the
        others from their start (they appeared meanwhile)."""
        self.path = Path(path)
        self._parse = parse or parse_line
        self.resume = resume
        self.poll_interval = float(poll_interval)
        self.from_start = from_start
        self.backlog_bytes = max(0, int(backlog_bytes))
        self.max_queue = max_queue
        self._queue: deque = deque()  # records, and Reset markers
        self._markers = 0  # Reset markers in the queue
        self._qlock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # rewritten shards noted by forget are continued where they were (their
        # forgotten conversation is dropped below), not delivered again
        self._shards = ShardFollower(self.path, keep_open=MAX_OPEN, track_moves=True,
                                     rewrites=lambda: rewrite_map(self.path))
        self._bad: Counter = Counter()
        self._lines = 0
        self._dropped = 0
        self._errors = 0
        self._thread: threading.Thread | None = None
        self._initialised = False
        self._observer = None
        self._observer_failed = False
        self.observer_kind: str | None = None
        #: hashes (:func:`chatcore.log.forgotten.forgotten_hash`) of conversations forgotten
        #: while following; holders of delivered records drop theirs
        self.forgotten: set[str] = set()
        self._registry = ForgottenRegistry(self.path)

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> "LogTail":
        if self._thread is not None:
            return self
        self._stopping.clear()
        with self._scan_lock:
            self._scan(initial=True)
        self._start_observer()
        self._thread = threading.Thread(target=self._run, name=f"LogTail({self.path.name})", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=2)
            except Exception:  # pragma: no cover - best effort
                pass
            self._observer = None
        with self._scan_lock:
            self._shards.close()
            self._initialised = False

    def __enter__(self) -> "LogTail":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _watch_dir(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    def _start_observer(self) -> None:
        folder = self._watch_dir()
        if not folder.is_dir():
            return  # the periodic poll covers it until the folder exists
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
            from watchdog.observers.polling import PollingObserver
        except ImportError:  # pragma: no cover - watchdog is in requirements.txt
            return
        wake = self._wake

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # runs in the observer thread
                if event.event_type in ("opened", "closed_no_write"):
                    return  # our own reads
                wake.set()

        if self._stopping.is_set():
            return
        for kind, cls in (("inotify", Observer), ("polling", PollingObserver)):
            obs = None
            try:
                obs = cls(timeout=self.poll_interval) if kind == "polling" else cls()
                obs.schedule(Handler(), str(folder), recursive=False)
                obs.start()
            except Exception as exc:  # e.g. inotify watch limit reached
                log.info("log tail: %s observer unavailable (%s)", kind, exc)
                try:
                    if obs is not None:
                        obs.stop()
                except Exception:
                    pass
                continue
            self._observer, self.observer_kind = obs, kind
            return
        self._observer_failed = True  # polling only from now on

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stopping.is_set():
                break
            if self._observer is None and not self._observer_failed and self._watch_dir().is_dir():
                self._start_observer()  # the folder appeared after start()
            try:
                with self._scan_lock:
                    self._scan()
            except Exception as exc:  # never let the thread die
                self._errors += 1
                log.warning("log tail: scan failed: %s", exc)

    def poll(self) -> None:
        """Scan now. Also usable without start(): the first call only takes the
        starting position (the end of the log unless ``from_start``)."""
        with self._scan_lock:
            self._scan(initial=not self._initialised)

    # -- reading --------------------------------------------------------------------

    def _scan(self, initial: bool = False) -> None:
        self._initialised = True
        # forgotten anywhere in the folder (also by retention, which rewrites no shard)
        gone = self._registry.refresh()
        if gone and not initial:
            self._forget(gone)
        for ch in self._shards.changes():
            if ch.gone:
                continue
            if ch.forgot:
                self._forget({ch.forgot})
            if initial and ch.new:
                self._place(ch)
            elif ch.reset in (TRUNCATED, REWRITTEN):
                self._reset(ch.name, ch.reset)
            for _, data in ch.blocks(READ_BYTES):
                self._deliver(ch.path, data)

    def _place(self, ch: Change) -> None:
        """Where a shard present at the start is read from (``resume``, ``from_start``,
        ``backlog_bytes``; else its end)."""
        if self.resume is not None:
            saved = self.resume.get(ch.name)
            f = os.fstat(ch.fd)
            if saved and tuple(saved[:2]) == (f.st_dev, f.st_ino) and 0 <= saved[2] <= ch.size:
                ch.start = int(saved[2])
        elif not self.from_start:
            ch.start = last_line_end(ch.fd, ch.size)
            if self.backlog_bytes and ch.start:
                # back to the first whole line of the backlog
                start = max(0, ch.start - self.backlog_bytes)
                if start and pread(ch.fd, start - 1, 1) != b"\n":
                    start = next_line_start(ch.fd, start, ch.start)
                ch.start = start

    def _forget(self, hashes: set[str]) -> None:
        self.forgotten |= hashes
        with self._qlock:  # not handed out yet: drop now
            self._queue = deque(r for r in self._queue if not _is_forgotten(r, self.forgotten))

    def _reset(self, shard: str, reason: str) -> None:
        """``shard`` is read again from its start: what of it is still queued is stale."""
        with self._qlock:
            kept = deque(r for r in self._queue if not (isinstance(r, Reset) and r.shard == shard)
                         and not (isinstance(r, dict) and r.get("shard") == shard))
            kept.append(Reset(shard, reason))
            self._markers = sum(isinstance(r, Reset) for r in kept)
            self._queue = kept

    def _deliver(self, path: str, chunk: bytes) -> None:
        shard = os.path.basename(path)
        out = []
        bad = self._bad
        for line in chunk.split(b"\n")[:-1]:
            try:
                rec = self._parse(line)
            except BadRecord as exc:
                bad[exc.reason] += 1
                continue
            rec["shard"] = shard
            out.append(rec)
        if not out:
            return
        with self._qlock:
            self._queue.extend(out)
            self._lines += len(out)
            over = len(self._queue) - self.max_queue
            if over > 0:
                kept = []  # a reset is never dropped: its holder would count its lines twice
                for _ in range(over):
                    r = self._queue.popleft()
                    if isinstance(r, Reset):
                        kept.append(r)
                self._queue.extendleft(reversed(kept))
                self._dropped += over - len(kept)

    # -- consumer side --------------------------------------------------------------

    def drain(self, max_items: int | None = None, resets: bool = False) -> list:
        """New records since the last drain, oldest first. With ``resets=True`` a
        :class:`Reset` stands where a shard began to be read again (once per reset); without,
        such markers are left out (for readers that hold nothing per shard)."""
        with self._qlock:
            if max_items is None or max_items >= len(self._queue):
                out = list(self._queue)
                self._queue.clear()
                markers, self._markers = self._markers, 0
            else:
                out = [self._queue.popleft() for _ in range(max(0, max_items))]
                markers = sum(isinstance(r, Reset) for r in out) if self._markers else 0
                self._markers -= markers
        if markers and not resets:
            out = [r for r in out if not isinstance(r, Reset)]
        return out

    def positions(self) -> dict[str, list[int]]:
        """``{shard name: [dev, ino, offset]}``: where reading stopped (for ``resume``).
        Consistent with what was drained when called between :meth:`poll` calls."""
        with self._scan_lock:
            return self._shards.positions()

    @property
    def stats(self) -> dict:
        with self._qlock:
            queued, lines, dropped = len(self._queue), self._lines, self._dropped
        bad = {r: int(self._bad.get(r, 0)) for r in BAD_REASONS}
        shards = self._shards
        for _ in range(10):  # the reader thread may change its files meanwhile
            try:
                pending, count, open_files = shards.pending_bytes(), len(shards), shards.open_files()
                break
            except RuntimeError:
                continue
        else:
            pending = count = open_files = 0
        return {
            "lines": lines,
            "bad": bad,
            "bad_total": sum(v for r, v in bad.items() if r != "event"),  # event lines are not bad
            "queued": queued,
            "dropped": dropped,
            "pending_bytes": pending,
            "shards": count,
            "open_files": open_files,
            "rotations": shards.rotations,
            "truncations": shards.truncations,
            "errors": self._errors,
            "observer": self.observer_kind,
            "running": self._thread is not None,
        }


def _is_forgotten(rec, hashes: set[str]) -> bool:
    if not isinstance(rec, dict):
        return False
    cid = rec.get("conversation_id")
    return isinstance(cid, str) and forgotten_hash(cid) in hashes


def drop_forgotten(records: list[dict], tail: "LogTail") -> list[dict]:
    """``records`` without those of conversations forgotten since the tail started."""
    if not tail.forgotten:
        return records
    hashes = set(tail.forgotten)
    return [r for r in records if not _is_forgotten(r, hashes)]
