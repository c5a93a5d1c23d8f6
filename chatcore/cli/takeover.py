"""``python -m chatcore takeover|say|handback ID``: a staff member steps into a conversation.

They call the Space's ``/handoff/*`` routes with the staff token (``X-Chat-Operator-Token``):
``$CHAT_OPERATOR_TOKEN``, else the token file beside the log (``--log``). The staff name is
``--as NAME``, else ``$CHAT_STAFF_NAME``, else the login name.
"""
from __future__ import annotations

import getpass
import json
import sys

from chatcore.config import Settings


def _staff_name(args) -> str:
    name = args.as_name or Settings.from_env().staff_name
    if not name:
        try:
            name = getpass.getuser()
        except Exception:
            name = "staff"
    return name


def run(args) -> int:
    import httpx

    from chatcore.cli.main import UsageError
    from chatcore.space.handoff import check_staff_name
    from chatcore.log.records import check_conversation_id
    from chatcore.config import OPERATOR_TOKEN_HEADER, display_url, operator_token
    from chatcore.remote.log_settings import load_settings

    settings = load_settings(log_path=args.log, space_url=args.space)
    try:
        check_conversation_id(args.conversation_id)
        staff = check_staff_name(_staff_name(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    token = operator_token(settings.log_path)
    if not token:
        raise UsageError("no staff token: set CHAT_OPERATOR_TOKEN, or --log to the Space's log folder")
    body = {"conversation_id": args.conversation_id, "staff": staff}
    route = {"takeover": "take", "say": "say", "handback": "handback"}[args.command_name]
    if route == "say":
        if not args.text.strip():
            raise UsageError("say what? the text is empty")
        body["text"] = args.text
    url = settings.space_url.rstrip("/") + "/handoff/" + route
    try:
        res = httpx.post(url, json=body, headers={OPERATOR_TOKEN_HEADER: token}, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the Space at {display_url(settings.space_url)} ({type(exc).__name__})",
              file=sys.stderr)
        return 1
    try:
        data = res.json()
    except ValueError:
        data = {"error": f"HTTP {res.status_code}"}
    if args.format == "json":
        print(json.dumps({"status_code": res.status_code, **data}))
    if res.status_code != 200:
        if args.format != "json":
            print(f"error: {data.get('error') or 'HTTP ' + str(res.status_code)}", file=sys.stderr)
        # no such conversation, or a prefix naming several: the caller's input, like a usage error
        return 2 if res.status_code in (400, 404) else 1
    if args.format != "json":
        cid = data.get("conversation_id") or args.conversation_id
        done = {"take": f"{staff} has taken over {cid}: the bot is paused",
                "say": f"sent to {cid}",
                "handback": f"{cid} is back with the bot"}[route]
        print(done)
    return 0


def register(sub) -> None:
    for name, helptext in (("takeover", "take a conversation over from the bot (staff)"),
                           ("say", "write to the visitor of a conversation you have taken over"),
                           ("handback", "give a conversation you have taken over back to the bot")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("conversation_id", metavar="ID", help="the id, or a unique prefix of 6 or more characters")
        if name == "say":
            p.add_argument("text", metavar="TEXT")
        p.add_argument("--as", dest="as_name", metavar="NAME",
                       help="your staff name (default $CHAT_STAFF_NAME or your login name)")
        p.add_argument("--space", metavar="URL", help="the Space (default $CHAT_SPACE_URL or http://127.0.0.1:7860)")
        p.add_argument("--log", metavar="PATH", help="the Space's log file or folder, for the staff token file")
        p.add_argument("--format", choices=["text", "json"], default="text")
        p.add_argument("--timeout", type=float, default=15.0)
        p.set_defaults(func=run, command_name=name)
