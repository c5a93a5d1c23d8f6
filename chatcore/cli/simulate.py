"""``python -m chatcore simulate``: simulated visitors against a running Space."""
from __future__ import annotations



def register(sub) -> None:
    p = sub.add_parser("simulate", help="drive the Space with simulated visitors (demo traffic)")
    p.add_argument("--space", metavar="URL", default=None,
                   help="Space URL (default: $CHAT_SPACE_URL or http://127.0.0.1:7860)")
    p.add_argument("--visitors", type=int, default=5, help="visitors in parallel (default 5)")
    p.add_argument("--turns", type=int, default=3, help="questions per visitor (default 3)")
    p.add_argument("--delay", type=float, default=1.0,
                   help="seconds between a visitor's questions, jittered ±50%% (default 1)")
    p.add_argument("--source", default=None, metavar="S",
                   help="source the turns are logged with (default simulated, so demo traffic is told apart)")
    p.add_argument("--seed", type=int, default=None, help="random seed for repeatable runs")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=run)


def run(args) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.remote.client import space_health
    from chatcore.config import display_url
    from chatcore.remote.log_settings import load_settings
    from chatcore.log.records import ID_PATTERN
    from chatcore.staff.simulate import SIMULATED_SOURCE, simulate

    if args.visitors < 1 or args.turns < 1:
        raise UsageError("--visitors and --turns must be at least 1")
    if args.delay < 0:
        raise UsageError("--delay cannot be negative")
    source = SIMULATED_SOURCE if args.source is None else args.source
    if not source or len(source) > 32 or not ID_PATTERN.match(source):
        raise UsageError("--source must be a short word such as simulated, widget or api")
    url = args.space or load_settings().space_url
    health = space_health(url)
    if health.get("status") not in ("ok", "degraded"):
        raise UsageError(f"the Space at {display_url(url)} is not reachable: {health.get('error')}")
    print(f"simulating {args.visitors} visitor(s) x {args.turns} turn(s) against {display_url(url)} (source={source})",
          flush=True)
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    result = simulate(url, visitors=args.visitors, turns=args.turns, delay=args.delay,
                      progress=progress, seed=args.seed, source=source)
    print(result.summary(), flush=True)
    return 0 if result.turns_ok and not result.turns_failed else (1 if not result.turns_ok else 0)
