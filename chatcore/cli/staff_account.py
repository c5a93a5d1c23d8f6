"""``python -m chatcore staff-account add NAME``: a staff account for the dashboard's login.

Accounts are ``name:hash`` lines in the file ``CHAT_STAFF_ACCOUNTS`` names (or ``--file``); the
password is read from a prompt (or one line of standard input with ``--stdin``), never from the
command line, and only its scrypt hash is written. The logged-in name is who speaks on the Live page.
"""
from __future__ import annotations

import getpass
import os
import sys
import tempfile
from pathlib import Path


def _accounts_file(args) -> Path:
    from chatcore.cli.main import UsageError
    from chatcore.dashboard.auth import gate_settings

    if args.file:
        return Path(args.file).expanduser()
    path = gate_settings().accounts_file
    if path is None:
        raise UsageError("say which file holds the accounts: set CHAT_STAFF_ACCOUNTS=PATH (the dashboard reads it "
                         "too) or pass --file PATH")
    return path


def _write(path: Path, lines: list[str]) -> None:
    """Replace the file at once (readers see the old or the new one), readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _lines_without(path: Path, name: str) -> tuple[list[str], bool]:
    """The file's lines except ``name``'s account, and whether it had one."""
    from chatcore.dashboard.auth import read_accounts_file

    if not path.exists():
        return [], False
    read_accounts_file(path)  # a broken file is reported, not rewritten
    kept, found = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.strip().startswith("#") and line.strip().rpartition(":")[0].strip() == name:
            found = True
            continue
        kept.append(line)
    return kept, found


def run(args) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.dashboard.auth import check_account_name, hash_password

    try:
        name = check_account_name(args.name)
        path = _accounts_file(args)
        lines, found = _lines_without(path, name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.action == "remove":
        if not found:
            raise UsageError(f"{path} has no account {name!r}")
        _write(path, lines)
        print(f"removed {name!r} from {path}")
        return 0
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the two passwords differ")
    if len(password) < 8:
        raise UsageError("use at least 8 characters")
    _write(path, lines + [f"{name}:{hash_password(password)}"])
    print(f"{'changed the password of' if found else 'added'} {name!r} in {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("staff-account", help="add or remove a staff account for the dashboard login")
    p.add_argument("action", choices=["add", "remove"], help="add (or change the password of) an account, or remove it")
    p.add_argument("name", metavar="NAME", help="the staff member's name: who they are on the Live page and in the log")
    p.add_argument("--file", metavar="PATH", help="the accounts file (default $CHAT_STAFF_ACCOUNTS)")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input (one line)")
    p.set_defaults(func=run)
