"""``python -m chatcore replay ID``: re-run a conversation against the current Space."""
from __future__ import annotations

import json
import os
import sys


def run(args) -> int:
    from chatcore.log import annotations
    from chatcore.cli.main import UsageError
    from chatcore.remote.client import SpaceClient, SpaceError, space_health
    from chatcore.log.records import check_conversation_id
    from chatcore.staff.replay import diff_terminal, replay_conversation, strip_controls
    from chatcore.config import display_url
    from chatcore.remote.log_settings import load_settings
    from chatcore.store import load_log

    from chatcore.cli.main import resolve_conversation

    settings = load_settings(log_path=args.log, space_url=args.space)
    try:
        check_conversation_id(args.conversation_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not settings.log_path.exists():
        raise UsageError(f"no log at {settings.log_path} (set --log or CHAT_LOG_PATH)")
    args.conversation_id = resolve_conversation(settings.log_path, args.conversation_id)
    frame, _ = load_log(settings.log_path)
    turns = frame[frame["conversation_id"] == args.conversation_id]
    if turns.empty:
        print(f"no conversation {args.conversation_id!r} in {settings.log_path}", file=sys.stderr)
        return 1
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    where = ("Start it, or name the Space with --space URL (or $CHAT_SPACE_URL)" if not args.space
             else "Start it, or check the --space URL")
    health = space_health(settings.space_url, timeout=5.0, log_path=settings.log_path)
    if health.get("status") not in ("ok", "degraded"):
        detail = str(health.get("error") or "no answer")
        detail = detail[detail.index("(") + 1:-1] if detail.startswith("cannot reach") and "(" in detail else detail
        print(f"error: Cannot reach the Space at {display_url(settings.space_url)} ({detail}). {where}. "
              "Nothing was replayed.", file=sys.stderr)
        return 1
    client = SpaceClient(settings.space_url, timeout=args.timeout, log_path=settings.log_path)

    def show(t) -> None:
        if args.format != "text":
            return
        status = "same" if t.same else ("FAILED" if t.error else f"changed ({t.similarity:.0%} alike)")
        print(f"--- turn {t.turn}: {status}")
        print(f"user: {strip_controls(t.user_text)}")
        if t.error:
            print(f"error: {strip_controls(t.error)}")
        else:
            print(f"diff: {diff_terminal(t.old, t.new, colour)}")
        print(flush=True)

    try:
        result = replay_conversation(turns, client, on_turn=show)
    except SpaceError as exc:
        print(f"error: {exc} {where}.", file=sys.stderr)
        return 1
    finally:
        client.close()
    linked = False
    if result.answered:  # a replay the Space answered none of has no turns in the log: nothing to open
        try:
            annotations.link_replay(settings.log_path, result.original_id, result.replay_id, author="cli")
            linked = True
        except OSError as exc:
            print(f"note: the replay ran but could not be linked to the original ({exc})", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({
            "original_id": result.original_id, "replay_id": result.replay_id if result.answered else None,
            "changed": result.changed, "failed": result.failed, "answered": result.answered, "linked": linked,
            "turns": [{"turn": t.turn, "user_text": t.user_text, "old": t.old, "new": t.new,
                       "same": t.same, "error": t.error} for t in result.turns],
        }, ensure_ascii=False, indent=1))
    elif result.answered:
        print(f"replayed as {result.replay_id}: {result.summary()}")
    else:
        print(f"nothing was replayed: the Space answered none of the {len(result.turns)} turn(s); "
              "no replay was linked")
    if result.failed and any(t.error and "reach the Space" in t.error for t in result.turns):
        print(f"the Space stopped answering. {where}.", file=sys.stderr)
    return 0 if not result.failed else 1


def register(sub) -> None:
    p = sub.add_parser("replay", help="re-run a conversation's user turns against the current Space")
    p.add_argument("conversation_id", metavar="ID")
    p.add_argument("--space", metavar="URL", help="the Space (default $CHAT_SPACE_URL or http://127.0.0.1:7860)")
    p.add_argument("--log", metavar="PATH", help="log file or folder (default $CHAT_LOG_PATH)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each reply")
    p.set_defaults(func=run)
