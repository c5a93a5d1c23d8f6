"""Rewriting a live shard without some of its lines, while writers append to it.

Under the exclusive ``flock`` that :class:`chatcore.log.writer.LogWriter` takes for each
append, the shard is copied without those lines to a temporary file that is renamed over it.
A writer that opened the old file waits for that lock and then finds the path names a new
file, so it reopens (see ``LogWriter._locked_fd``); no line of another conversation is lost or
torn. The bulk is copied before the lock is taken: appends wait only for the tail end.
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from chatcore.log.shards import last_line_end, line_blocks

_BLOCK = 8 << 20


@dataclass
class Rewrite:
    path: Path
    removed: int = 0
    #: ``[offset, length]`` of each removed line in the old file
    ranges: list = field(default_factory=list)
    old: tuple = ()
    new: tuple = ()


def _open_locked(path: Path) -> int | None:
    """``path`` opened and under an exclusive flock, checked to still be the file at
    ``path`` once locked (it may have been replaced while we waited)."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            st = os.stat(path)
            fst = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino):
                return fd
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    raise OSError(errno.EAGAIN, f"{path} keeps being replaced")


def _lines(fd: int, size: int, start: int = 0):
    """``(offset, line)`` for each line of the file from ``start`` up to ``size`` (the
    last one may lack its newline)."""
    end = start
    for off, data in line_blocks(fd, start, size, _BLOCK):
        i0 = 0
        while i0 < len(data):
            i = data.index(b"\n", i0)
            yield off + i0, data[i0:i + 1]
            i0 = i + 1
        end = off + len(data)
    if end < size:
        rest = os.pread(fd, size - end, end)
        if rest:
            yield end, rest


def _copy_without(src: int, dst: int, start: int, end: int, ranges: list) -> None:
    """Append the lines of ``src`` in ``[start, end)`` to ``dst``, except those at ``ranges``."""
    cuts = {r[0] for r in ranges}
    buf, pending = [], 0
    for off, line in _lines(src, end, start):
        if off in cuts:
            continue
        buf.append(line)
        pending += len(line)
        if pending >= _BLOCK:
            _write_all(dst, b"".join(buf))
            buf, pending = [], 0
    if buf:
        _write_all(dst, b"".join(buf))


def rewrite_without(path: Path, drop: Callable[[bytes], bool], needle: bytes, *, dry_run: bool = False,
                    before_rename: Callable[[Rewrite], None] | None = None) -> Rewrite:
    """Remove the lines for which ``drop(line)`` is true (only lines containing
    ``needle`` are asked). The file is untouched when nothing is dropped.
    ``before_rename`` runs once the new file is complete, before it takes the name.

    The complete lines present at the start are scanned and copied without the lock
    (writers only append after them); the writers' flock is held only to copy what was
    appended meanwhile and to rename, so appends wait for the tail end, not the file."""
    for _ in range(5):
        out = _rewrite_once(Path(path), drop, needle, dry_run, before_rename)
        if out is not None:
            return out
    raise OSError(errno.EAGAIN, f"{path} keeps being replaced")


def _rewrite_once(path: Path, drop, needle: bytes, dry_run: bool, before_rename) -> Rewrite | None:
    out = Rewrite(path=path)
    try:
        rfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return out
    tmp, tfd = None, None
    try:
        fst = os.fstat(rfd)
        out.old = (fst.st_dev, fst.st_ino)

        def scan(start: int, end: int) -> None:
            for off, line in _lines(rfd, end, start):
                if needle in line and drop(line):
                    out.removed += 1
                    out.ranges.append([off, len(line)])

        if dry_run:
            scan(0, fst.st_size)
            return out
        s0 = last_line_end(rfd, fst.st_size)
        scan(0, s0)

        def start_copy() -> None:
            nonlocal tmp, tfd
            tmp = path.with_name(f".{path.name}.rewrite.{os.getpid()}.{threading.get_ident()}.tmp")
            tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, fst.st_mode & 0o777)
            _copy_without(rfd, tfd, 0, s0, out.ranges)

        if out.ranges:
            start_copy()  # the bulk, unlocked
            os.fsync(tfd)  # so the fsync under the lock has only the tail end to flush
        lfd = _open_locked(path)
        if lfd is None:
            return out if not out.ranges else None
        try:
            lst = os.fstat(lfd)
            if (lst.st_dev, lst.st_ino) != out.old or lst.st_size < s0:
                return None  # replaced or truncated meanwhile: start again
            s1 = lst.st_size
            head = len(out.ranges)
            scan(s0, s1)
            if not out.ranges:
                return out
            if tfd is None:
                start_copy()
            _copy_without(rfd, tfd, s0, s1, out.ranges[head:])
            os.fsync(tfd)
            nst = os.fstat(tfd)
            out.new = (nst.st_dev, nst.st_ino)
            os.close(tfd)
            tfd = None
            if before_rename is not None:
                before_rename(out)
            os.rename(tmp, path)  # still under the old file's flock: no append is lost
            tmp = None
            _fsync_dir(path.parent)
            return out
        finally:
            fcntl.flock(lfd, fcntl.LOCK_UN)
            os.close(lfd)
    finally:
        if tfd is not None:
            os.close(tfd)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        os.close(rfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
