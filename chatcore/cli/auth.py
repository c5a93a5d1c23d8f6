"""``python -m chatcore hash-password``: make the value for CHAT_DASHBOARD_PASSWORD_HASH."""
from __future__ import annotations

import getpass
import sys


def run(args) -> int:
    from chatcore.dashboard.auth import hash_password
    from chatcore.cli.main import UsageError

    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Dashboard password: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the two passwords differ")
    if len(password) < 8:
        raise UsageError("use at least 8 characters")
    print(hash_password(password))
    return 0


def register(sub) -> None:
    p = sub.add_parser("hash-password",
                       help="hash a dashboard password for CHAT_DASHBOARD_PASSWORD_HASH")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=run)
