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
    from ..replay import strip_controls

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
    from ..cli import UsageError
    from ..settings import Settings
    from ..store import load_log
    from ..tail import LogTail

    settings = Settings.from_env(log_path=args.log)
    path = settings.log_path
    if not path.exists() and not path.parent.exists():
        raise UsageError(f"no log at {path} (set --log or CHAT_LOG_PATH)")
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR") if args.colour == "auto" else args.colour == "always"

    from ..dashboard import conversation_matches

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


def cmd_stats(args) -> int:
    from ..cli import UsageError, parse_date_arg
    from ..client import space_health
    from ..dashboard import format_ms, overview_figures
    from ..settings import Settings
    from ..store import load_log

    settings = Settings.from_env(log_path=args.log)
    if not settings.log_path.exists():
        raise UsageError(f"no log at {settings.log_path} (set --log or CHAT_LOG_PATH)")
    since = parse_date_arg(args.since)
    frame, stats = load_log(settings.log_path, since=since)
    fig = overview_figures(frame)
    rows = [
        ("conversations", fig.conversations_total), ("turns", fig.turns_total),
        ("conversations today (UTC)", fig.conversations_today), ("turns today (UTC)", fig.turns_today),
        ("active now (last 5 min)", fig.active_now),
        ("latency p50 today", format_ms(fig.latency_p50)), ("latency p95 today", format_ms(fig.latency_p95)),
        ("errors today", fig.errors_today), ("bad lines skipped", stats.get("bad_total", 0)),
    ]
    if since:
        rows.insert(0, ("since", since.isoformat()))
    if args.space_url or not args.no_health:
        h = space_health(args.space_url or settings.space_url, timeout=2)
        rows.append(("space", h.get("status", "down") if h.get("status") == "ok" else f"down ({h.get('error')})"))
        if h.get("status") == "ok":
            rows.append(("space write errors", h.get("write_errors", 0)))
    if args.format == "json":
        import json

        print(json.dumps({k: v for k, v in rows}, indent=1))
    else:
        for key, value in rows:
            print(f"{key:<28} {value}")
    return 0


def register(sub) -> None:
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
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_stats)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS
