"""``python -m chatcore tail`` and ``stats``: the log from a terminal."""
from __future__ import annotations

import os
import sys
import time

SOURCE_COLOURS = {"widget": "36", "operator": "35", "api": "34", "replay": "33", "simulated": "90"}


def _colour(on: bool):
    def paint(code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if on else text
    return paint


def format_turn(rec: dict, colour: bool = False, width: int = 100) -> str:
    """One turn in two lines: time, id, source, latency; then question → reply excerpt."""
    from chatcore.staff.replay import strip_controls

    paint = _colour(colour)
    ts = rec.get("ts")
    when = ts.strftime("%Y-%m-%d %H:%M:%S") if hasattr(ts, "strftime") else str(ts)[:19]
    src = str(rec.get("source") or "unknown")
    latency = rec.get("latency_ms")
    lat = f"{latency:,.0f} ms" if isinstance(latency, (int, float)) and latency == latency else "—"
    turn = rec.get("turn")
    head = (f"{paint('2', when)}  {paint('1', strip_controls(str(rec.get('conversation_id')))[:36])}"
            f"  #{turn if turn is not None and turn == turn else '?'}  "
            f"{paint(SOURCE_COLOURS.get(src, '37'), strip_controls(src))}  {lat}")
    if rec.get("error"):
        head += "  " + paint("31;1", "ERROR " + strip_controls(str(rec["error"]))[:80])

    def cut(text: str) -> str:
        text = " ".join(strip_controls(text or "").split())
        return text if len(text) <= width else text[: width - 1] + "…"

    return (f"{head}\n  {paint('32', 'user')}  {cut(rec.get('user_text'))}\n"
            f"  {paint('34', 'bot ')}  {cut(rec.get('response'))}")


def cmd_tail(args) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.remote.log_settings import load_settings
    from chatcore.store import load_log
    from chatcore.log.follow import LogTail

    settings = load_settings(log_path=args.log)
    path = settings.log_path
    if not path.exists() and not path.parent.exists():
        raise UsageError(f"no log at {path} (set --log or CHAT_LOG_PATH)")
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR") if args.colour == "auto" else args.colour == "always"

    from chatcore.dashboard.views import conversation_matches

    def wanted(rec: dict) -> bool:  # --conversation takes a full id or its first characters
        return (conversation_matches(rec.get("conversation_id"), args.conversation)
                and (not args.source or rec.get("source") == args.source))

    def show(rec: dict) -> None:
        print(format_turn(rec, colour), flush=True)

    tail = LogTail(path).start()  # from the end: started before the backlog is read, nothing falls between
    try:
        if args.lines and path.exists():
            frame, _ = load_log(path)
            recent = [r for r in frame.sort_values("ts", kind="stable").to_dict("records") if wanted(r)]
            for rec in recent[-args.lines:]:
                show(rec)
        # On stderr, so a pipe of turns stays clean; a script can wait for it before writing.
        print(f"following {path} for new turns (Ctrl+C stops)", file=sys.stderr, flush=True)
        shown = 0
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            for rec in tail.drain():
                if wanted(rec):
                    show(rec)
                    shown += 1
                    if args.max and shown >= args.max:
                        return 0
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        tail.stop()
    return 0


#: ``stats`` figures: stable JSON key -> label in the text output. The keys are documented in
#: docs/operations.md ("In a terminal"); add new ones, never rename.
STATS_LABELS = {
    "since": "since",
    "conversations": "conversations",
    "turns": "turns",
    "conversations_today": "conversations today (UTC)",
    "turns_today": "turns today (UTC)",
    "active_now": "active now (last 5 min)",
    "reply_time_p50_ms_today": "reply time p50 today",
    "reply_time_p95_ms_today": "reply time p95 today",
    "errors_today": "errors today",
    "bad_lines_skipped": "bad lines skipped",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
    "cost_usd": "cost (USD)",
    "space_status": "space",
    "space_error": "space error",
    "space_write_errors": "space write errors",
}


def _total(frame, column: str, kind):
    """Sum of a column's known values, or None when it has none."""
    if column not in frame.columns or not frame[column].notna().any():
        return None
    return kind(frame[column].sum())


def stats_figures(frame, read_stats: dict, since=None, health: dict | None = None) -> dict:
    """The ``stats`` figures under stable snake_case keys, as numbers (ms as floats, counts as ints).

    ``health`` is the Space's ``/healthz`` answer, or None when it was not asked
    (then the ``space_*`` keys are None)."""
    from chatcore.dashboard.views import overview_figures

    fig = overview_figures(frame)
    ms = lambda v: None if v is None or v != v else round(float(v), 1)  # noqa: E731
    out = {
        "since": since.isoformat() if since else None,
        "conversations": int(fig.conversations_total),
        "turns": int(fig.turns_total),
        "conversations_today": int(fig.conversations_today),
        "turns_today": int(fig.turns_today),
        "active_now": int(fig.active_now),
        "reply_time_p50_ms_today": ms(fig.latency_p50),
        "reply_time_p95_ms_today": ms(fig.latency_p95),
        "errors_today": int(fig.errors_today),
        "bad_lines_skipped": int(read_stats.get("bad_total", 0) or 0),
        # for the whole range read (``since``), as the model servers reported them; the cost
        # of priced models only (CHAT_PRICES), None when no turn has one
        "input_tokens": _total(frame, "input_tokens", int) or 0,
        "output_tokens": _total(frame, "output_tokens", int) or 0,
        "cost_usd": _total(frame, "cost_usd", lambda v: round(float(v), 6)),
        "space_status": None,
        "space_error": None,
        "space_write_errors": None,
    }
    if health is not None:
        status = str(health.get("status") or "down")
        out["space_status"] = status
        if status == "down":
            out["space_error"] = str(health.get("error") or "no answer")
        elif isinstance(health.get("write_errors"), int):
            out["space_write_errors"] = int(health["write_errors"])
    return out


def cmd_stats(args) -> int:
    from chatcore.cli.main import UsageError, parse_date_arg
    from chatcore.remote.client import space_health
    from chatcore.dashboard.views import format_ms
    from chatcore.remote.log_settings import load_settings
    from chatcore.store import load_log

    settings = load_settings(log_path=args.log)
    if not settings.log_path.exists():
        raise UsageError(f"no log at {settings.log_path} (set --log or CHAT_LOG_PATH)")
    since = parse_date_arg(args.since)
    frame, stats = load_log(settings.log_path, since=since)
    if not args.include_test and not frame.empty:
        from chatcore.log.records import is_test_traffic

        test = [is_test_traffic(c, s) for c, s in zip(frame["conversation_id"], frame["source"])]
        frame = frame[[not t for t in test]]
    health = None
    if args.space_url or not args.no_health:
        health = space_health(args.space_url or settings.space_url, timeout=2)
    figures = stats_figures(frame, stats, since=since, health=health)
    if args.format == "json":
        import json

        print(json.dumps(figures, indent=1))
        return 0
    for key, value in figures.items():
        if key.endswith("_ms_today"):
            value = format_ms(value)  # "—" when there is none
        elif value is None:
            continue
        elif key == "space_status" and figures["space_error"]:
            value = f"{value} ({figures['space_error']})"
        elif key == "space_error":
            continue
        print(f"{STATS_LABELS[key]:<28} {value}")
    return 0


def register(sub) -> None:
    from chatcore.cli.main import add_include_test

    p = sub.add_parser("tail", help="follow the log like tail -f, readable and coloured")
    p.add_argument("--log", metavar="PATH", help="log file or folder (default $CHAT_LOG_PATH)")
    p.add_argument("--conversation", metavar="ID",
                   help="only this conversation: its id or the first characters of it (as tables show)")
    p.add_argument("--source", metavar="S", help="only this source (widget, operator, api, replay, …)")
    p.add_argument("-n", "--lines", type=int, default=10, help="show the last N turns first (default 10)")
    p.add_argument("--colour", "--color", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--seconds", type=float, default=None, help=argparse_hidden())
    p.add_argument("--max", type=int, default=None, help="stop after N new turns")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("stats", help="the overview's figures in a terminal")
    p.add_argument("--log", metavar="PATH", help="log file or folder (default $CHAT_LOG_PATH)")
    p.add_argument("--since", metavar="DATE", help="only turns from this date or ISO time")
    p.add_argument("--space-url", metavar="URL", help="the Space to ask for health (default $CHAT_SPACE_URL)")
    p.add_argument("--no-health", action="store_true", help="do not ask the Space for its health")
    add_include_test(p)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_stats)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS
