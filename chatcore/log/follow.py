"""Live tail of the JSONL chat log (a file or a folder of ``*.jsonl`` shards).

A watchdog observer on the log's folder wakes a reader thread whenever something
changes there; the reader also wakes every ``poll_interval`` seconds on its own, so
a missed or coalesced event only delays delivery. New complete lines are parsed
with :func:`chatcore.store.parse_line` (the same rules as the store) and queued;
:meth:`LogTail.drain` hands them out in write order.

The reader keeps every shard open, so lines written to a file just before it was
rotated (renamed) or deleted are still read from the old file before moving on to
the new one. Truncation, replacement, delete + recreate and new shards in a
folder are handled. Never imports streamlit.
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
from chatcore.store import find_newline, parse_line

log = logging.getLogger(__name__)

READ_BYTES = 4 << 20
#: Shards kept open at once (open ones are read to the end even after a rotation).
MAX_OPEN = 64
#: Bytes before the offset compared on each change, to notice a rewrite past it.
_GUARD = 64


@dataclass
class _Follow:
    path: str
    fd: int | None  # None: dormant (closed, watched by stat)
    dev_ino: tuple[int, int]
    offset: int = 0  # just after the last complete line read
    guard: bytes = b""  # the _GUARD bytes before offset
    size: int = -1
    mtime_ns: int = -1
    pending: int = 0


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
        self._queue: deque[dict] = deque()
        self._qlock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._follows: dict[str, _Follow] = {}
        self._bad: Counter = Counter()
        self._lines = 0
        self._dropped = 0
        self._rotations = 0
        self._truncations = 0
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
            for f in self._follows.values():
                if f.fd is not None:
                    _close(f.fd)
            self._follows.clear()
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

    def _current_paths(self) -> list[str]:
        p = self.path
        if p.is_dir():
            try:
                return sorted(str(q) for q in p.glob("*.jsonl"))
            except OSError:
                return []
        return [str(p)]

    def _scan(self, initial: bool = False) -> None:
        self._initialised = True
        # forgotten anywhere in the folder (also by retention, which rewrites no shard)
        gone = self._registry.refresh()
        if gone and not initial:
            self._forget(gone)
        current: dict[str, os.stat_result] = {}
        for p in self._current_paths():
            try:
                current[p] = os.stat(p)
            except OSError:
                pass
        by_inode = {(st.st_dev, st.st_ino): p for p, st in current.items()}

        # 1. shards we follow whose path no longer points at the same file
        for path, f in list(self._follows.items()):
            st = current.get(path)
            if st is not None and (st.st_dev, st.st_ino) == f.dev_ino:
                continue
            if f.fd is not None:
                self._read(f)  # the rest of the old file (still open)
            del self._follows[path]
            moved = by_inode.get(f.dev_ino)
            if moved is not None and moved not in self._follows:
                # renamed to another shard name inside the folder: keep following it
                f.path = moved
                self._follows[moved] = f
                continue
            if f.fd is not None:
                _close(f.fd)
            if st is not None:
                if self._continue_rewritten(f, path, st):
                    continue
                self._rotations += 1

        # 2. new shards (or the new file after a rotation)
        for path, st in current.items():
            if path in self._follows:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            fst = os.fstat(fd)
            f = _Follow(path=path, fd=fd, dev_ino=(fst.st_dev, fst.st_ino))
            if initial and self.resume is not None:
                saved = self.resume.get(os.path.basename(path))
                if saved and tuple(saved[:2]) == f.dev_ino and 0 <= saved[2] <= fst.st_size:
                    f.offset = int(saved[2])
                    f.guard = _pread(fd, max(0, f.offset - _GUARD), min(_GUARD, f.offset))
            elif initial and not self.from_start:
                f.offset = _last_line_end(fd, fst.st_size)
                if self.backlog_bytes and f.offset:
                    # back to the first whole line of the backlog
                    start = max(0, f.offset - self.backlog_bytes)
                    if start and _pread(fd, start - 1, 1) != b"\n":
                        start = _next_line_start(fd, start, f.offset)
                    f.offset = start
                f.guard = _pread(fd, max(0, f.offset - _GUARD), min(_GUARD, f.offset))
            self._follows[path] = f

        # 3. new bytes, in shard order
        for path in sorted(self._follows):
            f = self._follows[path]
            if f.fd is None:  # dormant: reopen only when it changed
                st = current.get(path)
                if st is None or (st.st_size == f.size and st.st_mtime_ns == f.mtime_ns):
                    continue
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    fst = os.fstat(fd)
                except OSError:
                    continue
                if (fst.st_dev, fst.st_ino) != f.dev_ino:  # replaced meanwhile: next scan
                    _close(fd)
                    continue
                f.fd = fd
            self._read(f)
        self._limit_open_files()

    def _continue_rewritten(self, f: _Follow, path: str, st: os.stat_result) -> bool:
        """A shard rewritten without some lines (``forget``): follow the new file from
        the place matching where we were, instead of reading it again from the start."""
        seen = rewrite_map(self.path).get((st.st_dev, st.st_ino))
        if seen is None or tuple(seen[0]) != f.dev_ino:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            fst = os.fstat(fd)
        except OSError:
            return False
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            _close(fd)
            return False
        gone = sum(max(0, min(n, f.offset - start)) for start, n in seen[1])
        g = _Follow(path=path, fd=fd, dev_ino=(fst.st_dev, fst.st_ino), offset=max(0, f.offset - gone))
        g.guard = _pread(fd, max(0, g.offset - _GUARD), min(_GUARD, g.offset))
        self._follows[path] = g
        if seen[2]:
            self._forget({seen[2]})
        return True

    def _forget(self, hashes: set[str]) -> None:
        self.forgotten |= hashes
        with self._qlock:  # not handed out yet: drop now
            self._queue = deque(r for r in self._queue if not _is_forgotten(r, self.forgotten))

    def _limit_open_files(self) -> None:
        """Keep at most MAX_OPEN shards open (a folder may hold years of daily
        shards); the ones changed longest ago are closed and watched by stat."""
        open_ = [f for f in self._follows.values() if f.fd is not None]
        if len(open_) <= MAX_OPEN:
            return
        open_.sort(key=lambda f: f.mtime_ns)
        for f in open_[: len(open_) - MAX_OPEN]:
            _close(f.fd)
            f.fd = None

    def _read(self, f: _Follow) -> None:
        try:
            st = os.fstat(f.fd)
        except OSError:
            return
        if st.st_size == f.size and st.st_mtime_ns == f.mtime_ns:
            return
        f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
        if st.st_size < f.offset or (f.offset and _pread(f.fd, f.offset - len(f.guard), len(f.guard)) != f.guard):
            self._truncations += 1
            f.offset, f.guard = 0, b""
        while f.offset < st.st_size:
            data = _pread(f.fd, f.offset, min(READ_BYTES, st.st_size - f.offset))
            if not data:
                break
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) < READ_BYTES:
                    break  # a pending partial line
                # a line longer than READ_BYTES: read it whole
                try:
                    end = find_newline(f.fd, f.offset + len(data), st.st_size)
                except OSError:
                    end = -1
                if end < 0:
                    break
                data = _pread(f.fd, f.offset, end + 1 - f.offset)
                cut = len(data) - 1
            self._deliver(f.path, data[: cut + 1])
            f.offset += cut + 1
            f.guard = data[max(0, cut + 1 - _GUARD) : cut + 1]
        f.pending = max(0, st.st_size - f.offset)

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
                for _ in range(over):
                    self._queue.popleft()
                self._dropped += over

    # -- consumer side --------------------------------------------------------------

    def drain(self, max_items: int | None = None) -> list[dict]:
        """New records since the last drain, oldest first."""
        with self._qlock:
            if max_items is None or max_items >= len(self._queue):
                out = list(self._queue)
                self._queue.clear()
                return out
            return [self._queue.popleft() for _ in range(max(0, max_items))]

    def positions(self) -> dict[str, list[int]]:
        """``{shard name: [dev, ino, offset]}``: where reading stopped (for ``resume``).
        Consistent with what was drained when called between :meth:`poll` calls."""
        with self._scan_lock:
            return {os.path.basename(p): [f.dev_ino[0], f.dev_ino[1], f.offset] for p, f in self._follows.items()}

    @property
    def stats(self) -> dict:
        with self._qlock:
            queued, lines, dropped = len(self._queue), self._lines, self._dropped
        bad = {r: int(self._bad.get(r, 0)) for r in BAD_REASONS}
        for _ in range(10):  # the reader thread may change the dict meanwhile
            try:
                follows = list(self._follows.values())
                break
            except RuntimeError:
                continue
        else:
            follows = []
        return {
            "lines": lines,
            "bad": bad,
            "bad_total": sum(v for r, v in bad.items() if r != "event"),  # event lines are not bad
            "queued": queued,
            "dropped": dropped,
            "pending_bytes": sum(f.pending for f in follows),
            "shards": len(follows),
            "rotations": self._rotations,
            "truncations": self._truncations,
            "errors": self._errors,
            "observer": self.observer_kind,
            "running": self._thread is not None,
        }


def _is_forgotten(rec: dict, hashes: set[str]) -> bool:
    cid = rec.get("conversation_id")
    return isinstance(cid, str) and forgotten_hash(cid) in hashes


def drop_forgotten(records: list[dict], tail: "LogTail") -> list[dict]:
    """``records`` without those of conversations forgotten since the tail started."""
    if not tail.forgotten:
        return records
    hashes = set(tail.forgotten)
    return [r for r in records if not _is_forgotten(r, hashes)]


def _pread(fd: int, offset: int, n: int) -> bytes:
    if n <= 0:
        return b""
    try:
        return os.pread(fd, n, offset)
    except OSError:
        return b""


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _next_line_start(fd: int, start: int, size: int) -> int:
    """Offset just after the first newline at or after ``start`` (``size`` if none)."""
    pos = start
    while pos < size:
        data = _pread(fd, pos, min(64 << 10, size - pos))
        if not data:
            break
        i = data.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(data)
    return size


def _last_line_end(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 if none)."""
    pos = size
    step = 64 << 10
    while pos > 0:
        start = max(0, pos - step)
        data = _pread(fd, start, pos - start)
        i = data.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0
