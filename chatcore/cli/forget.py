"""``python -m chatcore forget ID [--dry-run]`` and ``forget --matching TEXT --dry-run``."""
from __future__ import annotations

import getpass
import json
import sys


def run(args) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.log.retention import find_matching
    from chatcore.staff.forget import forget_conversation
    from chatcore.remote.log_settings import load_settings

    settings = load_settings(log_path=args.log)
    if not settings.log_path.exists():
        raise UsageError(f"no log at {settings.log_path} (set --log or CHAT_LOG_PATH)")
    if args.matching is not None:
        if args.conversation_id:
            raise UsageError("give a conversation id or --matching, not both")
        if not args.dry_run:
            raise UsageError("--matching only lists (add --dry-run); forget each listed id on its own")
        try:
            hits = find_matching(settings.log_path, args.matching)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.format == "json":
            print(json.dumps([{"conversation_id": k, "turns": v} for k, v in sorted(hits.items())]))
        else:
            for cid, n in sorted(hits.items()):
                print(f"{cid}\t{n} turn(s)")
            print(f"{len(hits)} conversation(s) match", file=sys.stderr)
        return 0
    if not args.conversation_id:
        raise UsageError("give the conversation id to forget (or --matching TEXT --dry-run)")
    try:
        by = args.by or getpass.getuser()
    except Exception:
        by = "cli"
    from chatcore.cli.main import resolve_conversation

    cid = resolve_conversation(settings.log_path, args.conversation_id)
    try:
        result = forget_conversation(settings.log_path, cid, by=by, dry_run=args.dry_run)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.format == "json":
        print(json.dumps(result))
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {result['lines']} line(s) from {len(result['shards'])} shard(s) "
              f"and {result['annotations']} annotation(s) of {cid}")
        for sub in result["replays"]:
            print(f"{verb} its replay {sub['conversation_id']} ({sub['lines']} line(s))")
        if result["eval_reports"]:
            print(f"{verb} it from {result['eval_reports']} eval run report(s)")
    if not result["lines"] and not result["annotations"]:
        print(f"no conversation {cid!r} in {settings.log_path}", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    from chatcore.cli.main import _add_log

    p = sub.add_parser("forget", help="delete a conversation everywhere (log shards, annotations, caches)")
    p.add_argument("conversation_id", nargs="?", metavar="ID")
    _add_log(p)
    p.add_argument("--dry-run", action="store_true", help="only count what would go")
    p.add_argument("--matching", metavar="TEXT",
                   help="with --dry-run: list the conversations containing this e-mail or phone number")
    p.add_argument("--by", metavar="NAME", help="who asks (for the audit line; default: the login name)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)
