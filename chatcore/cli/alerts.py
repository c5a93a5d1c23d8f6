"""``python -m chatcore alerts``: follow the log and post alerts to webhooks."""
from __future__ import annotations

import logging
import signal
import sys
import threading


def run(args) -> int:
    from chatcore.staff.alerts import Config, Watcher, hook_name
    from chatcore.cli.main import UsageError
    from chatcore.remote.log_settings import load_settings

    settings = load_settings(log_path=args.log)
    try:
        config = Config.from_env(settings.log_path, space_url=args.space, health_s=args.health_every)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not config.hooks:
        raise UsageError("no webhook: set CHAT_ALERT_WEBHOOKS (comma-separated; slack:URL for Slack)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s alerts %(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore"):  # they would print each webhook's full URL (a secret)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"alerts: following {settings.log_path}, posting to "
          + ", ".join(hook_name(h.url) for h in config.hooks), file=sys.stderr, flush=True)
    Watcher(config).run(stop)
    return 0


def register(sub) -> None:
    from chatcore.cli.main import _add_log

    p = sub.add_parser("alerts", help="follow the log and post alerts to webhooks (CHAT_ALERT_WEBHOOKS)")
    _add_log(p)
    p.add_argument("--space", metavar="URL", default=None,
                   help="the Space whose /healthz reports failing log writes (default $CHAT_SPACE_URL)")
    p.add_argument("--health-every", type=float, default=None, metavar="SECONDS",
                   help="how often to ask the Space's /healthz about failing log writes (default 10)")
    p.set_defaults(func=run)
