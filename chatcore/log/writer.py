"""Append-only JSONL writer, safe across threads and processes.

A line is written whole or not at all:

* the record is serialised to one ``bytes`` ending in ``\\n`` before any I/O;
* the file is opened with ``O_APPEND`` and the write happens under an exclusive
  ``flock`` (other processes, e.g. several Space workers on one file) and a
  ``threading.Lock`` (other threads of this process);
* if the kernel writes only part of the line (disk full, file size limit), the
  file is truncated back to where the line started, so no torn line is left;
* if the file does not end in a newline (another process died mid-line), the
  fragment is ended first, so it cannot merge with this line.

A failed write never raises into the caller: it is counted (``errors``) and the
last error kept, so the Space can keep answering and report it on ``/healthz``.
The next append tries again, so writing resumes when space returns.
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

try:  # orjson is ~5x faster; the stdlib is the fallback
    import orjson

    def dumps(record: dict) -> bytes:
        return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)

except ImportError:  # pragma: no cover - orjson is in requirements.txt
    import json

    def dumps(record: dict) -> bytes:
        return json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")


def encode_line(record: dict) -> bytes:
    return dumps(record) + b"\n"


class LogWriter:
    """Appends records to one JSONL file. One instance per file per process."""

    def __init__(self, path: str | os.PathLike, path_for=None):
        """``path_for``: a callable giving the file to write now (daily rotation); it
        is asked before each append and the writer moves on when the answer changes."""
        self.path = Path(path)
        self._path_for = path_for
        self.written = 0
        self.errors = 0
        self.last_error: str | None = None
        #: False while the latest write failed (the Space reports "degraded").
        self.last_ok = True
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None

    # -- file handling -------------------------------------------------------------

    def _open(self) -> int:
        """The fd for ``self.path``, reopened if the file was rotated or deleted."""
        if self._path_for is not None:
            want = Path(self._path_for())
            if want != self.path:
                self._close()
                self.path = want
        if self._fd is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._ino:
                    return self._fd
            except FileNotFoundError:
                pass
            self._close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        self._fd, self._ino = fd, (st.st_dev, st.st_ino)
        return fd

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = self._ino = None

    def close(self) -> None:
        with self._lock:
            self._close()

    # -- writing -------------------------------------------------------------------

    def append(self, record: dict) -> bool:
        """Append one record. Returns True when the line is on disk (in the page cache)."""
        try:
            line = encode_line(record)
        except (TypeError, ValueError):
            # A lone surrogate (e.g. "\ud800" sent through JSON) cannot be UTF-8: log it as U+FFFD.
            from chatcore.log.records import clean_value

            try:
                line = encode_line(clean_value(record))
            except (TypeError, ValueError) as exc:
                self._fail(f"record is not serialisable: {exc}")
                return False
        return self.append_line(line)

    def append_line(self, line: bytes) -> bool:
        if not line.endswith(b"\n") or b"\n" in line[:-1]:
            self._fail("a log line must be one line ending in a newline")
            return False
        with self._lock:
            try:
                fd = self._locked_fd()
                try:
                    self._write_whole(fd, line)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as exc:
                self._close()  # a fresh open next time: the folder may come back
                self._fail(f"{type(exc).__name__}: {exc.strerror or exc}")
                return False
            self.written += 1
            self.last_ok = True
            return True

    def _locked_fd(self) -> int:
        """The fd of the current file at ``self.path``, under an exclusive flock.

        A shard rewritten in place (``forget``: copy without some lines, rename over
        the old name while holding the old file's flock) gets a new inode. A writer
        that opened the old file before the rename waits for that flock; once it has
        it, it checks the path still names its file and otherwise reopens, so no line
        lands in the replaced (unlinked) file."""
        for _ in range(100):
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._ino:
                    return fd
            except FileNotFoundError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._close()
        raise OSError(errno.EAGAIN, "the log file keeps being replaced")

    @staticmethod
    def _write_whole(fd: int, line: bytes) -> None:
        start = os.lseek(fd, 0, os.SEEK_END)
        if start and os.pread(fd, 1, start - 1) != b"\n":
            # Another writer died mid-line (kill -9, a crashed tool): end its fragment so it
            # stays one bad line on its own instead of swallowing this good one.
            line = b"\n" + line
        done = 0
        try:
            while done < len(line):
                n = os.write(fd, line[done:])
                if n <= 0:  # pragma: no cover - write(2) returns >0 or raises
                    raise OSError(errno.EIO, "short write")
                done += n
        except BaseException:
            if done:
                # Roll back the torn line; under the flock nobody appended after us.
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
            raise

    def _fail(self, message: str) -> None:
        self.last_ok = False
        self.errors += 1
        self.last_error = message

    def health(self) -> dict:
        return {
            "log_path": str(self.path),
            "turns_logged": self.written,
            "write_errors": self.errors,
            "last_write_error": self.last_error,
        }
