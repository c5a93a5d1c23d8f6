"""``python -m chatcore import LOG [--out FOLDER]``: convert a log in the seed's shape into the
current shape, once (see :mod:`chatcore.store.convert` and docs/log-format.md)."""
from __future__ import annotations

import sys
from pathlib import Path


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def run(args) -> int:
    from chatcore.cli.main import UsageError, _progress_to_stderr
    from chatcore.store.convert import convert_log, shards_of

    if args.log.strip().lower().startswith(("http://", "https://")):
        raise UsageError("import reads a local log: copy the Space's log here first (or use --log URL with "
                         "the other commands, which read it as it is)")
    log = Path(args.log)
    if not log.exists():
        raise UsageError(f"no log at {log}")
    shards = shards_of(log)
    if not shards:
        raise UsageError(f"no *.jsonl files in {log}")
    out = Path(args.out) if args.out else (log if log.is_dir() else log.parent) / "imported"
    try:
        result = convert_log(log, out, progress=_progress_to_stderr())
    except FileExistsError as exc:
        raise UsageError(f"{exc.args[0]} exists already and is never overwritten: choose another --out folder, "
                         "or move that file away") from None
    except OSError as exc:
        raise UsageError(f"cannot write into {out}: {exc.strerror or exc}") from None
    names = ", ".join(str(p) for p in result.files) if len(result.files) <= 3 else f"{len(result.files)} files in {out}"
    print(f"imported {result.turns:,} turn(s) from {log} ({_size(result.bytes_in)}) into {names} "
          f"({_size(result.bytes_out)})")
    copied = result.turns - result.converted
    if copied or result.events:
        print(f"copied as they were: {copied:,} turn(s) already in the current shape, {result.events:,} event line(s)")
    if result.bad:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(result.bad.items()))
        print(f"left out: {sum(result.bad.values()):,} line(s) the reader rejects ({reasons})", file=sys.stderr)
    for src in result.unfinished:
        print(f"note: the last line of {src} has no newline yet (still being written?): it was not imported",
              file=sys.stderr)
    from chatcore.log.annotations import annotations_dir

    notes = annotations_dir(log)
    if notes.is_dir() and notes != annotations_dir(out):
        print(f"ratings, notes and tags stay in {notes}: copy that folder to {annotations_dir(out)} "
              "to keep them with the new log")
    print(f"read it with --log {out} (or CHAT_LOG_PATH={out})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("import", help="convert a log in the seed's shape (timestamp, reply as a list, history) "
                                      "into the current shape, once")
    p.add_argument("log", metavar="LOG", help="the log file, or a folder of *.jsonl shards")
    p.add_argument("--out", metavar="FOLDER",
                   help="folder for the converted files, one per shard with the same name (default: 'imported' "
                        "beside the log file, or inside the log folder); an existing file is never overwritten")
    p.set_defaults(func=run)
