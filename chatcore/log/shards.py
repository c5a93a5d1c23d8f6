"""The shards of a log, and the one way any JSONL file is read as it grows.

* :func:`shard_paths`: which files are the shards of a log, in order (a file is its own only
  shard; a folder's shards are its ``*.jsonl`` files, sorted by name; sub-folders such as
  ``annotations/`` are not shards).
* :func:`line_blocks`: the whole lines of a file from an offset, a block at a time; a last
  line without its newline is held back (the writer may still be writing it).
* :class:`ShardFollower`: what changed in a log (or in any one JSONL file) since the last
  look, as :class:`Change` items: new bytes to read, or a signal that a file must be read
  again from its start (replaced by a rename, as ``forget`` and rotation do; truncated;
  rewritten in place), or that it is gone. Everything that reads the log as it grows takes
  its changes from here: the live tail (:class:`chatcore.log.follow.LogTail`, which adds the
  thread, the watchdog wake-up and the queue), the store's ingest, the hand-off event scan and
  the annotations' readers.

This module imports nothing from chatcore: every layer may use it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

#: Bytes read at once by :func:`line_blocks`.
BLOCK_BYTES = 8 << 20
#: Bytes at the start of a file and before the offset reached, compared when the file
#: changes: a file rewritten in place (same inode) is noticed and read again.
HEAD_BYTES = 4096
GUARD_BYTES = 64

#: Why a :class:`Change` starts again from the start of its file.
REPLACED, TRUNCATED, REWRITTEN = "replaced", "truncated", "rewritten"


def shard_paths(log) -> list[Path]:
    """The shards of ``log``, in order: the file itself, or the ``*.jsonl`` files of a folder."""
    p = Path(log)
    if p.is_dir():
        try:
            return sorted(q for q in p.glob("*.jsonl") if q.is_file())
        except OSError:
            return []
    return [p]


def pread(fd: int, offset: int, n: int) -> bytes:
    """Up to ``n`` bytes at ``offset`` (empty on an error or past the end)."""
    if n <= 0 or offset < 0:
        return b""
    try:
        return os.pread(fd, n, offset)
    except OSError:
        return b""


def find_newline(fd: int, start: int, size: int) -> int:
    """Offset of the first newline at or after ``start`` (before ``size``), or -1."""
    pos = start
    while pos < size:
        data = os.pread(fd, min(BLOCK_BYTES, size - pos), pos)
        if not data:
            return -1
        i = data.find(b"\n")
        if i >= 0:
            return pos + i
        pos += len(data)
    return -1


def line_blocks(fd: int, start: int, size: int, block_bytes: int | None = None,
                into: Callable[[int], bytearray] | None = None) -> Iterator[tuple[int, bytes | memoryview]]:
    """``(offset, data)`` for the whole lines of ``fd`` in ``[start, size)``, about
    ``block_bytes`` at a time (default :data:`BLOCK_BYTES`): ``data`` ends with a newline and
    ``offset + len(data)`` is where the next block starts. A line longer than a block comes
    whole; a last line without its newline is held back.

    ``into(n)``: a bytearray of at least ``n`` bytes, free to overwrite, to read the next block
    into; ``data`` is then a memoryview of it (no new memory per block, no copy to cut off the
    held-back part), valid until the consumer hands that bytearray out again."""
    block_bytes = block_bytes or BLOCK_BYTES
    if not hasattr(os, "preadv"):
        into = None
    pos = start
    while pos < size:
        n = min(block_bytes, size - pos)
        if into is None:
            data = os.pread(fd, n, pos)
            got = len(data)
            cut = data.rfind(b"\n")
        else:
            buf = into(n)
            got = os.preadv(fd, [memoryview(buf)[:n]], pos)
            data = memoryview(buf)[:got]
            cut = buf.rfind(b"\n", 0, got)
        if not got:
            return
        if cut < 0:
            if pos + got >= size:
                return  # the pending last line
            nl = find_newline(fd, pos + got, size)  # a line longer than a block
            if nl < 0:
                return
            data = os.pread(fd, nl + 1 - pos, pos)
            cut = len(data) - 1
        elif cut + 1 < got:
            data = data[: cut + 1]
        yield pos, data
        pos += cut + 1


def next_line_start(fd: int, start: int, size: int) -> int:
    """Offset just after the first newline at or after ``start`` (``size`` if none)."""
    nl = find_newline(fd, start, size)
    return size if nl < 0 else nl + 1


def last_line_end(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 if none)."""
    pos = size
    step = 64 << 10
    while pos > 0:
        lo = max(0, pos - step)
        data = pread(fd, lo, pos - lo)
        i = data.rfind(b"\n")
        if i >= 0:
            return lo + i + 1
        pos = lo
    return 0


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


@dataclass
class _Follow:
    path: str
    fd: int | None  # None: closed, watched by stat
    dev_ino: tuple[int, int]
    offset: int = 0  # just after the last complete line taken
    head: bytes = b""  # the first HEAD_BYTES before offset
    guard: bytes = b""  # the GUARD_BYTES before offset
    size: int = -1  # the file as last looked at
    mtime_ns: int = -1


class Change:
    """One file to read: its new lines from :attr:`start` up to :attr:`size`.

    :attr:`reset` says why reading starts again at 0: ``"replaced"`` (another file took the
    name: rotation, or a rewrite by ``forget`` or ``retention``), ``"truncated"``,
    ``"rewritten"`` (changed in place before the offset reached). A consumer that holds
    anything read from this path drops it when :attr:`again` is true. :attr:`new` marks a
    path seen for the first time (a consumer may set :attr:`start` to where it already is,
    e.g. from a cache); :attr:`gone` a path that no longer exists (nothing to read);
    :attr:`final` the rest of a file that left its name while held open (the lines written
    just before a rotation). :attr:`forgot` is the hash a rewrite note named when the follower
    continued across that rewrite instead of starting again (see ``rewrites``).

    Read with :meth:`blocks` (which records how far it got), or call :meth:`commit`."""

    __slots__ = ("path", "fd", "start", "size", "mtime_ns", "reset", "new", "gone", "final", "forgot", "_follow")

    def __init__(self, path: str, fd: int | None = None, start: int = 0, size: int = 0, mtime_ns: int = 0, *,
                 reset: str | None = None, new: bool = False, gone: bool = False, final: bool = False,
                 forgot: str | None = None, follow: _Follow | None = None):
        self.path, self.fd, self.start, self.size, self.mtime_ns = path, fd, start, size, mtime_ns
        self.reset, self.new, self.gone, self.final, self.forgot = reset, new, gone, final, forgot
        self._follow = follow

    @property
    def again(self) -> bool:
        """Read again from the start: what was read of this path before is no longer in it."""
        return self.reset is not None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def blocks(self, block_bytes: int | None = None, into: Callable[[int], bytearray] | None = None
               ) -> Iterator[tuple[int, bytes | memoryview]]:
        """:func:`line_blocks` from :attr:`start` (``into``: see there); each block counts as
        taken once the consumer asks for the next one (or the loop ends)."""
        pos = self.start
        for off, data in line_blocks(self.fd, self.start, self.size, block_bytes, into):
            yield off, data
            pos = off + len(data)
            self.commit(pos, final=False)
        self.commit(pos)

    def commit(self, offset: int, final: bool = True) -> None:
        """The consumer has taken the lines up to ``offset`` (just after a newline).
        ``final``: it looked at the file as it was when the change was made."""
        f = self._follow
        if f is None or self.fd is None:
            return
        f.offset = offset
        f.guard = pread(self.fd, offset - min(GUARD_BYTES, offset), min(GUARD_BYTES, offset))
        if len(f.head) < min(HEAD_BYTES, offset):
            f.head = pread(self.fd, 0, min(HEAD_BYTES, offset))
        if final:
            f.size, f.mtime_ns = self.size, self.mtime_ns


class ShardFollower:
    """Follows the shards of a log (a folder of ``*.jsonl``, or one JSONL file, which may not
    exist yet) and tells, on each :meth:`changes`, what to read: appended lines, files to read
    again from the start, files gone. Not thread-safe: one consumer, or its lock.

    ``keep_open``: files held open between looks (0: opened only while read). A file held open
    is read to its end even after it was renamed or deleted, so the lines written just before a
    rotation are not lost. ``track_moves``: a file renamed to another shard name in the folder
    keeps its offset (else the new name is a new shard). ``rewrites``: a callable returning
    ``{new (dev, ino): (old (dev, ino), removed [offset, length] ranges, forgotten hash)}``; a
    shard rewritten as such a note says is continued where it was, not read again."""

    def __init__(self, log, *, keep_open: int = 0, track_moves: bool = False,
                 rewrites: Callable[[], dict] | None = None):
        self.path = Path(log)
        self.keep_open = keep_open
        self.track_moves = track_moves
        self.rewrites = rewrites
        self._follows: dict[str, _Follow] = {}
        #: files that took the name of a followed one (rotation, replacement)
        self.rotations = 0
        #: files read again from the start because they shrank or changed in place
        self.truncations = 0

    def paths(self) -> list[str]:
        return [str(p) for p in shard_paths(self.path)]

    def changes(self, select: Callable[[str], bool] | None = None, listed: list[str] | None = None
                ) -> Iterator[Change]:
        """What changed since the last look, in shard order (a file's final lines before the
        file that took its name). ``select(path)``: look only at those paths (the others are
        neither read nor reported gone). ``listed``: :meth:`paths` if the caller just asked."""
        if listed is None:
            listed = self.paths()
        current: dict[str, os.stat_result] = {}
        skipped: set[str] = set()
        for p in listed:
            if select is not None and not select(p):
                skipped.add(p)
                continue
            try:
                current[p] = os.stat(p)
            except OSError:
                pass
        by_inode = {(st.st_dev, st.st_ino): p for p, st in current.items()}
        resets: dict[str, str] = {}
        forgot: dict[str, str] = {}

        # 1. followed paths that no longer name the same file
        for path, f in list(self._follows.items()):
            if path in skipped:
                continue
            st = current.get(path)
            if st is not None and (st.st_dev, st.st_ino) == f.dev_ino:
                continue
            del self._follows[path]
            if f.fd is not None:  # the rest of the old file, still open
                yield from self._final(f)
            moved = by_inode.get(f.dev_ino) if self.track_moves else None
            if moved is not None and moved not in self._follows:
                f.path = moved  # renamed to another shard name: keep following it
                self._follows[moved] = f
                continue
            _close(f.fd)
            if st is None:
                yield Change(path, gone=True)
                continue
            g, named = self._continued(f, path, st)
            if g is not None:
                self._follows[path] = g
                if named:
                    forgot[path] = named
                continue
            self.rotations += 1
            resets[path] = REPLACED

        # 2. paths not followed yet (new shards, or the file that took a name)
        for path, st in current.items():
            if path in self._follows:
                continue
            f = _Follow(path=path, fd=None, dev_ino=(st.st_dev, st.st_ino))
            self._follows[path] = f
            resets.setdefault(path, "")  # "" marks new

        # 3. new bytes, in shard order
        try:
            for path in sorted(self._follows):
                st = current.get(path)
                if st is None:
                    continue  # skipped by select, or gone between listing and now
                f = self._follows[path]
                reset = resets.get(path)
                if reset is None and st.st_size == f.size and st.st_mtime_ns == f.mtime_ns:
                    continue
                opened = f.fd is None
                if opened:
                    try:
                        f.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    except OSError:
                        continue
                try:
                    fst = os.fstat(f.fd)
                except OSError:
                    self._drop_fd(f)
                    continue
                if (fst.st_dev, fst.st_ino) != f.dev_ino:  # replaced meanwhile: the next look
                    self._drop_fd(f)
                    continue
                if reset is None:
                    if fst.st_size < f.offset:
                        reset = TRUNCATED
                    elif f.offset and (pread(f.fd, 0, len(f.head)) != f.head or
                                       pread(f.fd, f.offset - len(f.guard), len(f.guard)) != f.guard):
                        reset = REWRITTEN
                    if reset is not None:
                        self.truncations += 1
                        f.offset, f.head, f.guard = 0, b"", b""
                yield Change(path, f.fd, f.offset, fst.st_size, fst.st_mtime_ns, reset=reset or None,
                             new=reset == "", forgot=forgot.get(path), follow=f)
                if self.keep_open <= 0:
                    self._drop_fd(f)
        finally:
            self._limit_open_files()

    def _final(self, f: _Follow) -> Iterator[Change]:
        try:
            fst = os.fstat(f.fd)
        except OSError:
            return
        if fst.st_size != f.size or fst.st_mtime_ns != f.mtime_ns:
            yield Change(f.path, f.fd, f.offset, fst.st_size, fst.st_mtime_ns, final=True, follow=f)

    def _continued(self, f: _Follow, path: str, st: os.stat_result) -> tuple[_Follow | None, str | None]:
        """When the file now at ``path`` is ``f``'s rewritten without some lines (as a note
        says): its follow, at the offset matching where ``f`` was, and the hash the note named."""
        if self.rewrites is None:
            return None, None
        seen = self.rewrites().get((st.st_dev, st.st_ino))
        if seen is None or tuple(seen[0]) != f.dev_ino:
            return None, None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            fst = os.fstat(fd)
        except OSError:
            return None, None
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            _close(fd)
            return None, None
        gone = sum(max(0, min(n, f.offset - start)) for start, n in seen[1])
        g = _Follow(path=path, fd=fd, dev_ino=(fst.st_dev, fst.st_ino), offset=max(0, f.offset - gone))
        g.guard = pread(fd, g.offset - min(GUARD_BYTES, g.offset), min(GUARD_BYTES, g.offset))
        g.head = pread(fd, 0, min(HEAD_BYTES, g.offset))
        return g, seen[2]

    def _drop_fd(self, f: _Follow) -> None:
        _close(f.fd)
        f.fd = None

    def _limit_open_files(self) -> None:
        """At most ``keep_open`` files open (a folder may hold years of daily shards): the
        ones changed longest ago are closed and watched by stat."""
        open_ = [f for f in self._follows.values() if f.fd is not None]
        if len(open_) <= max(0, self.keep_open):
            return
        open_.sort(key=lambda f: f.mtime_ns)
        for f in open_[: len(open_) - max(0, self.keep_open)]:
            self._drop_fd(f)

    def close(self) -> None:
        for f in self._follows.values():
            self._drop_fd(f)
        self._follows.clear()

    # -- what a consumer may ask ------------------------------------------------------

    def positions(self) -> dict[str, list[int]]:
        """``{file name: [dev, ino, offset]}``: where reading stopped."""
        return {os.path.basename(p): [f.dev_ino[0], f.dev_ino[1], f.offset] for p, f in self._follows.items()}

    def offset(self, path) -> int | None:
        f = self._follows.get(str(path))
        return None if f is None else f.offset

    def pending_bytes(self) -> int:
        """Bytes after the last whole line taken (a line being written), over all files."""
        return sum(max(0, f.size - f.offset) for f in list(self._follows.values()) if f.size >= 0)

    def open_files(self) -> int:
        return sum(f.fd is not None for f in list(self._follows.values()))

    def __len__(self) -> int:
        return len(self._follows)
