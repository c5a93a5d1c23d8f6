"""``python -m chatcore retention --keep-days N``: delete daily shards older than N days."""
from __future__ import annotations

import json


def run(args) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.log.retention import retention
    from chatcore.remote.log_settings import load_settings

    settings = load_settings(log_path=args.log)
    if not settings.log_path.exists():
        raise UsageError(f"no log at {settings.log_path} (set --log or CHAT_LOG_PATH)")
    try:
        result = retention(settings.log_path, args.keep_days, dry_run=args.dry_run)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.format == "json":
        print(json.dumps(result))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(result['deleted'])} shard(s) from before {result['cutoff']}"
          + ("" if args.dry_run else f" and {result['annotations']} annotation(s)"))
    for name in result["deleted"]:
        print(f"  {name}")
    if result["undated"]:
        print(f"kept {len(result['undated'])} shard(s) without a date in the name (CHAT_ROTATE=daily writes dated ones)")
    return 0


def register(sub) -> None:
    from chatcore.cli.main import _add_log

    p = sub.add_parser("retention", help="delete daily shards older than N days (and their annotations)")
    p.add_argument("--keep-days", type=int, required=True, metavar="N")
    _add_log(p)
    p.add_argument("--dry-run", action="store_true", help="only list what would go")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)
