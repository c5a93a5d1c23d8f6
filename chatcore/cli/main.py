"""``python -m chatcore <command>``: a thin layer over the functions the pages use."""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path


class UsageError(Exception):
    """Bad input from the command line: printed without a traceback, exit code 2."""


def _add_log(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", metavar="PATH",
                   help="JSONL log file or folder of *.jsonl shards, or a Space's https:// URL "
                        "(comma-separated for several; needs $CHAT_OPERATOR_TOKEN) "
                        "(default: $CHAT_LOG_URL, $CHAT_LOG_PATH or ./data/chat_logs.jsonl)")


def _add_dates(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="DATE", help="from this date or ISO time (inclusive)")
    p.add_argument("--until", metavar="DATE", help="up to this date or ISO time (a bare date includes that whole day)")


def add_include_test(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include-test", action="store_true",
                   help="count test traffic too: replays and simulated visitors (real visitors only by default)")


def resolve_conversation(log_path, text, questions=None) -> str:
    """The full id ``text`` names in the log at ``log_path`` (an id or a unique prefix of
    6+ characters); a usage error (exit 2) when it names none or several."""
    from chatcore.log.ids import resolve_conversation_id

    if questions is None:
        from chatcore.store import LogStore
        from chatcore.store.questions import Questions

        if not Path(log_path).exists():
            raise UsageError(f"no log at {log_path} (set --log or CHAT_LOG_PATH)")
        questions = Questions(LogStore(log_path, columns=("ts", "conversation_id")))
        questions.sync(progress=_progress_to_stderr())
    try:
        return resolve_conversation_id(text, questions.ids_starting_with)
    except (ValueError, LookupError) as exc:
        raise UsageError(str(exc)) from None


def parse_date_arg(value: str | None, *, end: bool = False) -> datetime | None:
    from chatcore.cli.listing import parse_date

    if value is None:
        return None
    try:
        return parse_date(value, end=end)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _progress_to_stderr():
    """A progress callback printing a one-line bar on stderr for first large loads."""
    if not sys.stderr.isatty():
        shown = {"last": -1}

        def quiet(done: int, total: int) -> None:
            if total >= 20_000_000:
                pct = int(done * 10 / max(total, 1))
                if pct != shown["last"]:
                    shown["last"] = pct
                    print(f"loading log: {pct * 10}%", file=sys.stderr, flush=True)

        return quiet

    def bar(done: int, total: int) -> None:
        if total < 5_000_000:
            return
        pct = done / max(total, 1)
        print(f"\rloading log {done / 1e6:7.1f}/{total / 1e6:.1f} MB "
              f"[{'#' * int(pct * 30):<30}] {pct:4.0%}", end="" if done < total else "\n",
              file=sys.stderr, flush=True)

    return bar


# ------------------------------------------------------------------------- commands


def cmd_space(args) -> int:
    from chatcore.config import Settings
    from chatcore.space.app import serve

    if args.log and args.log.strip().lower().startswith(("http://", "https://")):
        raise UsageError("the Space writes a local log: --log must be a path")
    settings = Settings.from_env(  # the Space writes its own log: never a mirror
        host=args.host, port=args.port, log_path=args.log, responder=args.responder,
        replica=args.replica,
    )
    if args.allow_origin:
        settings = settings.with_(allowed_origins=args.allow_origin)
    serve(settings)
    return 0


class _NoPandas:
    """An import hook that makes ``import pandas`` fail (see :func:`_without_pandas`)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not used by this command")
        return None


def _one_shot() -> bool:
    """Whether this process is a one-shot ``python -m chatcore`` (not :func:`main` called inside
    a longer-lived process, which keeps its own settings)."""
    main_module = sys.modules.get("__main__")
    return (getattr(main_module, "__spec__", None) is not None
            and getattr(main_module.__spec__, "name", "") == "chatcore.__main__")


def _without_pandas() -> None:
    """The conversation list never builds a pandas frame, but pyarrow imports pandas (a good
    part of a warm run's time) the first time it checks whether a value is a pandas object.
    In a one-shot ``python -m chatcore`` process, tell it there is none (unless something
    imported it already); a caller of :func:`main` inside a longer-lived process keeps pandas."""
    if _one_shot() and "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())


def _no_blas_threads() -> None:
    """numpy, when imported, starts a BLAS thread per core, and each spins for a while waiting
    for work: about 0.1 s of CPU in a cold list, a core taken from the parse threads while they
    start. The list does no linear algebra: a one-shot process asks for none (before numpy is
    imported; a setting of the user's own is kept)."""
    if _one_shot() and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _system_allocator() -> None:
    """A one-shot cold list parses its log once, each block's columns allocated and most of them
    freed again: with Arrow's default allocator a fair part of its time goes to the kernel
    handing zeroed pages back (measured: about 0.3 s of 0.7-0.9 s of system time on a 1M-turn
    seed log), with the C library's far less."""
    if _one_shot():
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())


def _local_log(log: str | None) -> Path:
    """The local log a reading command opens. A ``--log`` that names a local path is that path
    and reads no setting (loading the settings costs a cold list a good part of its time);
    otherwise :func:`chatcore.remote.log_settings.load_settings` decides (a URL is mirrored)."""
    if log is not None and log.strip() and not log.strip().lower().startswith(("http://", "https://")):
        return Path(log)
    from chatcore.remote.log_settings import load_settings

    return load_settings(log_path=log).log_path


def cmd_conversations(args) -> int:
    _without_pandas()
    _no_blas_threads()
    _system_allocator()
    from chatcore.cli.listing import write_summary
    from chatcore.store import LogStore
    from chatcore.store.questions import Questions

    log_path = _local_log(args.log)
    since = parse_date_arg(args.since)
    until = parse_date_arg(args.until, end=True)
    if since and until and since >= until:
        raise UsageError("--since must be before --until")
    if not log_path.exists():
        raise UsageError(f"no log at {log_path} (set --log or CHAT_LOG_PATH)")
    # only the columns the list reads; the SQL engine groups, the Arrow answer is formatted as is
    questions = Questions(LogStore(log_path, columns=("ts", "conversation_id", "user_text", "source")))
    questions.sync(progress=_progress_to_stderr())
    everyone = args.include_test or not questions.has_test_traffic()
    if (args.format == "json" and since is None and until is None and everyone
            and getattr(sys.stdout, "buffer", None) is not None):
        # the whole list, unchanged since it was last printed: sent as it was saved
        if not questions.send_saved_summary_json(sys.stdout.buffer):
            table = questions.summary(iso=True)
            with questions.saving_summary_json() as copy:
                write_summary(table, "json", sys.stdout, copy_to=copy)
    else:
        write_summary(questions.summary(since, until, iso=True, include_test=everyone), args.format, sys.stdout)
    stats = questions.store.stats
    if stats.get("bad_total"):
        print(f"note: skipped {stats['bad_total']} bad line(s) in the log", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from chatcore.store.conversation_frames import export_conversation
    from chatcore.cli.listing import clean
    from chatcore.store import LogStore
    from chatcore.store.frames import _to_pandas
    from chatcore.store.questions import Questions

    from chatcore.remote.log_settings import load_settings

    settings = load_settings(log_path=args.log)
    if not settings.log_path.exists():
        raise UsageError(f"no log at {settings.log_path} (set --log or CHAT_LOG_PATH)")
    questions = Questions(LogStore(settings.log_path))
    questions.sync(progress=_progress_to_stderr())
    cid = resolve_conversation(settings.log_path, args.conversation, questions)
    turns = _to_pandas(questions.transcript(cid))
    from chatcore.staff.handoff_log import conversation_events

    text = export_conversation(turns, args.format, conversation_events(settings.log_path, cid))
    # JSONL stays exact; Markdown and CSV are read by people: no terminal controls
    sys.stdout.write(text if args.format == "jsonl" else clean(text))
    return 0


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv`` (default: this process's arguments): only the command it names is complete."""
    parser = argparse.ArgumentParser(prog="python -m chatcore", description="Chat Operator")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("space", help="run the chat Space (Gradio) that writes the log")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860)")
    _add_log(p)
    p.add_argument("--responder", choices=["echo", "openai", "hf"], default=None,
                   help="who writes the replies (default: $CHAT_RESPONDER or echo)")
    p.add_argument("--replica", default=None,
                   help="replica id: write the shard <log stem>.<replica>.jsonl (default $CHAT_REPLICA_ID)")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="browser origin allowed to call the Space (repeat; * for any; "
                        "default $CHAT_ALLOWED_ORIGINS, localhost only)")
    p.set_defaults(func=cmd_space)

    p = sub.add_parser("conversations", help="list conversations in the log, one row each")
    _add_log(p)
    _add_dates(p)
    add_include_test(p)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.set_defaults(func=cmd_conversations)

    p = sub.add_parser("export", help="export one conversation")
    p.add_argument("--conversation", required=True, metavar="ID")
    _add_log(p)
    p.add_argument("--format", choices=["jsonl", "csv", "md"], default="jsonl")
    p.set_defaults(func=cmd_export)

    _add_commands(sub, argv)
    return parser


#: The commands defined in other modules: name -> (module with a ``register(sub)``, one-line help).
#: Only the module of the command being run is imported (the others' imports cost a cold run
#: time); the help lines let ``--help`` list every command without importing any of them.
#: tests/cli/test_cli.py checks this table against what each ``register`` adds.
COMMANDS: dict[str, tuple[str, str]] = {
    "alerts": ("chatcore.cli.alerts", "follow the log and post alerts to webhooks (CHAT_ALERT_WEBHOOKS)"),
    "hash-password": ("chatcore.cli.auth", "hash a dashboard password for CHAT_DASHBOARD_PASSWORD_HASH"),
    "config-docs": ("chatcore.cli.config_docs", "write the settings reference into docs/configuration.md"),
    "eval": ("chatcore.cli.eval", "replay a suite against a Space and score it (exit 1 below --min-pass)"),
    "forget": ("chatcore.cli.forget", "delete a conversation everywhere (log shards, annotations, caches)"),
    "import": ("chatcore.cli.import_log", "convert a log in the seed's shape (timestamp, reply as a list, "
                                          "history) into the current shape, once"),
    "dashboard": ("chatcore.dashboard.launcher", "run the operator dashboard (Streamlit) and a local Space"),
    "replay": ("chatcore.cli.replay", "re-run a conversation's user turns against the current Space"),
    "retention": ("chatcore.cli.retention", "delete daily shards older than N days (and their annotations)"),
    "simulate": ("chatcore.cli.simulate", "drive the Space with simulated visitors (demo traffic)"),
    "staff-account": ("chatcore.cli.staff_account", "add or remove a staff account for the dashboard login"),
    "suite": ("chatcore.cli.suite", "regression suites: conversations from the log to replay before a change"),
    "takeover": ("chatcore.cli.takeover", "take a conversation over from the bot (staff)"),
    "say": ("chatcore.cli.takeover", "write to the visitor of a conversation you have taken over"),
    "handback": ("chatcore.cli.takeover", "give a conversation you have taken over back to the bot"),
    "tail": ("chatcore.cli.terminal", "follow the log like tail -f, readable and coloured"),
    "stats": ("chatcore.cli.terminal", "the overview's figures in a terminal"),
}


def _add_commands(sub, argv: list[str] | None) -> None:
    """Register the command named in ``argv`` from its module, and a help-only entry for each other."""
    import importlib

    args = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in args if not a.startswith("-")), None)  # the top level has no options with values
    chosen_module = COMMANDS.get(chosen, (None,))[0]
    for name, (module, helptext) in COMMANDS.items():
        if name in sub.choices:  # a module registering several commands did so already
            continue
        if module == chosen_module:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=helptext)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from chatcore.remote.mirror import MirrorError

        if not isinstance(exc, MirrorError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
