"""The compiled line scanner (``_scan.c``), loaded with ctypes when it has been built.

``./run.sh setup`` (``python -c "from chatcore.store.native import main; main()"``) compiles it with the machine's C
compiler into ``_scan.so`` beside the source. Nothing depends on it: without a compiler, or with
``CHAT_NATIVE_SCAN=0``, the parser does the same checks in numpy, more slowly. A library built
from another version of the source is never loaded (the source's hash is compiled into it).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "_scan.c"
LIBRARY = HERE / "_scan.so"

F_STRICT, F_TS, F_ESCKEY, F_CUT, F_UTF8 = 1, 2, 4, 8, 16


def source_hash() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def build(quiet: bool = False) -> Path | None:
    """Compile the scanner; returns the library's path, or None (and says why) when it cannot."""
    cc = compiler()
    if cc is None:
        if not quiet:
            print("chatcore: no C compiler found; the log parser uses its numpy checks "
                  "(correct, slower on cold reads)", file=sys.stderr)
        return None
    # compiled to a temporary name, then renamed: a process loading it never sees half a file
    try:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=HERE)
    except OSError as exc:  # e.g. installed where this user cannot write
        if not quiet:
            print(f"chatcore: cannot build the log scanner here ({exc.strerror}); using the numpy checks",
                  file=sys.stderr)
        return None
    os.close(fd)
    cmd = [cc, "-O3", "-shared", "-fPIC", f'-DSOURCE_HASH="{source_hash()}"', "-o", tmp, str(SOURCE)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            if not quiet:
                print(f"chatcore: compiling the log scanner failed; using the numpy checks\n{res.stderr}",
                      file=sys.stderr)
            return None
        os.chmod(tmp, 0o755)
        os.replace(tmp, LIBRARY)
        return LIBRARY
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Scanner:
    """``scan(data, end)`` -> (out, out_len, ends, flags) over the complete lines of ``data[:end]``.

    ``out`` is a per-thread scratch buffer, reused by the next call on that thread."""

    def __init__(self, lib: ctypes.CDLL):
        fn = lib.chatcore_scan
        fn.restype = ctypes.c_int64
        fn.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)]
        self._fn = fn
        self._local = threading.local()

    def _scratch(self, end: int, lines: int):
        s = self._local
        if getattr(s, "out", None) is None or len(s.out) < end:
            s.out = np.empty(max(end, 9 << 20), dtype=np.uint8)
        if getattr(s, "ends", None) is None or len(s.ends) < lines:
            s.ends = np.empty(max(lines, 1 << 16), dtype=np.int64)
            s.flags = np.empty(len(s.ends), dtype=np.uint8)
        return s.out, s.ends, s.flags

    def scan(self, data: bytes, end: int):
        out_len = ctypes.c_int64(0)
        cap = end // 64 + 1024
        for _ in range(2):
            out, ends, flags = self._scratch(end, cap)
            n = self._fn(data, end, out.ctypes.data, ends.ctypes.data, flags.ctypes.data, len(ends),
                         ctypes.byref(out_len))
            if n >= 0:
                return out, out_len.value, ends[:n], flags[:n]
            cap = data.count(b"\n", 0, end) + 1
        raise RuntimeError("line scanner: line count changed")  # cannot happen: data is immutable


def load() -> Scanner | None:
    """The scanner, or None when it is turned off, not built, or built from other source."""
    if os.environ.get("CHAT_NATIVE_SCAN", "1") == "0" or not LIBRARY.exists():
        return None
    try:
        lib = ctypes.CDLL(str(LIBRARY))
        lib.chatcore_scan_source.restype = ctypes.c_char_p
        if lib.chatcore_scan_source().decode() != source_hash():
            return None
        return Scanner(lib)
    except (OSError, AttributeError):
        return None


def main() -> None:
    """Build the scanner once, and again only when the source changed. Never fails a setup:
    the numpy checks are always there."""
    if os.environ.get("CHAT_NATIVE_SCAN", "1") != "0" and load() is None:
        path = build()
        if path is not None and load() is not None:
            print(f"==> built the log scanner ({path.relative_to(HERE.parent.parent)})")
