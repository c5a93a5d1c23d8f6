"""``python -m chatcore suite …``: build regression suites from the log (see chatcore/staff/suites.py)."""
from __future__ import annotations

import json
import sys


def _log(args):
    from chatcore.cli.main import UsageError
    from chatcore.remote.log_settings import load_settings

    settings = load_settings(log_path=args.log)
    if not settings.log_path.exists():
        raise UsageError(f"no log at {settings.log_path} (set --log or CHAT_LOG_PATH)")
    return settings.log_path


def cmd_add(args) -> int:
    from chatcore.cli.main import UsageError, parse_date_arg
    from chatcore.store import load_log
    from chatcore.staff.suites import (add_conversations, check_suite_name, describe_filter, select_conversations,
                                       set_options)

    log_path = _log(args)
    try:
        check_suite_name(args.name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    since, until = parse_date_arg(args.since), parse_date_arg(args.until, end=True)
    ids = list(args.ids or []) + list(args.id or [])
    if not (args.rated or args.tag or args.handed_off or since or until or ids):
        raise UsageError("choose conversations: --rated down, --tag NAME, --handed-off, --since/--until or IDs")
    if ids:
        from chatcore.cli.main import resolve_conversation
        from chatcore.store import LogStore
        from chatcore.store.questions import Questions

        questions = Questions(LogStore(log_path, columns=("ts", "conversation_id")))
        ids = [resolve_conversation(log_path, i, questions) for i in ids]
    frame, _ = load_log(log_path)
    try:
        chosen = select_conversations(frame, log_path, rated=args.rated, tags=args.tag or [],
                                      handed_off=args.handed_off, since=since, until=until, ids=ids)
        how = describe_filter(rated=args.rated, tags=args.tag or [], handed_off=args.handed_off,
                              since=since, until=until, ids=ids)
        added = add_conversations(log_path, args.name, frame, chosen, filter=how, author="cli")
        if added and (args.golden or args.handoff_expect):
            set_options(log_path, args.name, golden=True if args.golden else None,
                        handoff=args.handoff_expect, author="cli")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    missing = [c for c in ids if c not in added]
    for cid in missing:
        print(f"note: no conversation {cid!r} in the log; not added", file=sys.stderr)
    print(f"{len(added)} conversation(s) added to suite {args.name}" + (f" ({how})" if how else ""))
    return 0 if added or not missing else 1


def cmd_set(args) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.staff.suites import get_suite, set_options

    log_path = _log(args)
    if args.golden is None and not args.handoff_expect:
        raise UsageError("say what to set: --golden, --not-golden or --handoff-expect handoff|answer")
    try:
        get_suite(log_path, args.name)
    except (KeyError, ValueError):
        print(f"no suite {args.name!r} (python -m chatcore suite list)", file=sys.stderr)
        return 1
    rec = set_options(log_path, args.name, golden=args.golden, handoff=args.handoff_expect, author="cli")
    print(f"suite {args.name}: " + ("golden (every turn is a known-good answer)" if rec["golden"] else
                                    "not golden (ratings and hand-offs say which turns are known-bad)")
          + f"; a request for a person should get: {rec['handoff']}")
    return 0


def cmd_list(args) -> int:
    from chatcore.staff.suites import load_suites

    suites = load_suites(_log(args))
    rows = [{"suite": s.name, "conversations": len(s.conversations), "turns": s.turn_count, "updated": s.updated,
             "golden": s.golden, "handoff": s.handoff,
             "known_bad": sum(s.expectation(t) in ("bad", "answer") for c in s.conversations.values()
                              for t in c.turns)}
            for s in suites.values() if s.conversations]
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    elif not rows:
        print("no suites yet (python -m chatcore suite add NAME --rated down)")
    else:
        for r in rows:
            print(f"{r['suite']:<24} {r['conversations']:>5} conversation(s) {r['turns']:>6} turn(s) "
                  f"{r['known_bad']:>5} known-bad{'  golden' if r['golden'] else ''}  {r['updated']}")
    return 0


def cmd_show(args) -> int:
    from chatcore.staff.replay import strip_controls
    from chatcore.staff.suites import get_suite

    try:
        suite = get_suite(_log(args), args.name)
    except (KeyError, ValueError):
        print(f"no suite {args.name!r} (python -m chatcore suite list)", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps({"suite": suite.name, "golden": suite.golden, "handoff": suite.handoff, "conversations": [
            {"conversation_id": c.conversation_id, "added": c.added, "filter": c.filter, "note": c.note,
             "context": c.context, "turns": [{**vars(t), "expect": suite.expectation(t)} for t in c.turns]}
            for c in suite.conversations.values()]}, ensure_ascii=False, indent=1))
        return 0
    print(f"suite {suite.name}: {len(suite.conversations)} conversation(s), {suite.turn_count} turn(s)"
          + (", golden" if suite.golden else "") + f"; a request for a person should get: {suite.handoff}")
    for c in suite.conversations.values():
        print(f"\n{c.conversation_id}  (added {c.added}{', ' + c.filter if c.filter else ''})")
        context = list(c.context)
        for t in c.turns:
            while context and context[0]["before"] <= t.turn:
                print(f"  ({_context_line(context.pop(0))})")
            print(f"  [{t.turn}] {EXPECT_LABEL[suite.expectation(t)]}  user: {strip_controls(t.user_text)[:200]}")
            print(f"      reference: {strip_controls(t.reference)[:200]}")
            if t.ideal:
                print(f"      ideal: {strip_controls(t.ideal)[:200]}")
    return 0


#: How ``suite show`` names what each turn's reference is.
EXPECT_LABEL = {"bad": "known-bad", "good": "known-good", "handoff": "asks for a person (hand off)",
                "answer": "asks for a person (answer)"}


def _context_line(item: dict) -> str:
    from chatcore.staff.replay import strip_controls

    text = strip_controls(item.get("text") or "")[:200]
    return {"handoff_taken": "a person took over", "handoff_returned": "handed back to the bot",
            "staff_message": f"staff: {text}", "visitor_message": f"visitor to staff: {text}"}.get(item["kind"], "")


def cmd_remove(args) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.staff.suites import get_suite, remove_conversation

    log_path = _log(args)
    try:
        suite = get_suite(log_path, args.name)
    except (KeyError, ValueError):
        print(f"no suite {args.name!r}", file=sys.stderr)
        return 1
    if args.conversation_id not in suite.conversations:
        print(f"conversation {args.conversation_id!r} is not in suite {args.name}", file=sys.stderr)
        return 1
    try:
        remove_conversation(log_path, args.name, args.conversation_id, author="cli")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"removed {args.conversation_id} from suite {args.name}")
    return 0


def cmd_ideal(args) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.staff.suites import set_ideal

    log_path = _log(args)
    text = "" if args.clear else (sys.stdin.read() if args.text == "-" else args.text)
    if not args.clear and not (text or "").strip():
        raise UsageError("give the ideal answer (or - to read it from stdin, or --clear)")
    try:
        set_ideal(log_path, args.conversation_id, args.turn, text, author="cli")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"ideal answer {'cleared' if args.clear else 'saved'} for turn {args.turn} of {args.conversation_id}")
    return 0


def register(sub) -> None:
    from chatcore.cli.main import _add_dates, _add_log

    p = sub.add_parser("suite", help="regression suites: conversations from the log to replay before a change")
    ss = p.add_subparsers(dest="suite_command", required=True, metavar="ACTION")

    a = ss.add_parser("add", help="add conversations chosen by a filter (or by id) to a suite")
    a.add_argument("name", metavar="NAME")
    a.add_argument("ids", nargs="*", metavar="ID", help="conversation ids picked by hand")
    a.add_argument("--id", action="append", metavar="ID", help="a conversation id (repeat)")
    a.add_argument("--rated", choices=["down", "up"], help="a turn rated so (visitor or staff)")
    a.add_argument("--tag", action="append", metavar="TAG", help="tagged so (repeat: every tag)")
    a.add_argument("--handed-off", action="store_true", help="a person answered in the conversation")
    a.add_argument("--golden", action="store_true", help="mark the suite golden: every turn is a known-good answer")
    a.add_argument("--handoff-expect", choices=["handoff", "answer"],
                   help="what a replayed request for a person should get: a person again (default) or an answer")
    _add_dates(a)
    _add_log(a)
    a.set_defaults(func=cmd_add)

    a = ss.add_parser("pick", help="add conversations by id")
    a.add_argument("name", metavar="NAME")
    a.add_argument("ids", nargs="+", metavar="ID")
    _add_log(a)
    a.set_defaults(func=cmd_add, id=None, rated=None, tag=None, handed_off=False, since=None, until=None,
                   golden=False, handoff_expect=None)

    a = ss.add_parser("set", help="mark a suite golden (or not), or what a request for a person should get")
    a.add_argument("name", metavar="NAME")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--golden", dest="golden", action="store_true", default=None,
                   help="every turn's reference is a known-good answer")
    g.add_argument("--not-golden", dest="golden", action="store_false",
                   help="ratings and hand-offs say which turns are known-bad (the default)")
    a.add_argument("--handoff-expect", choices=["handoff", "answer"],
                   help="a replayed request for a person should be handed to a person again, or answered by the bot")
    _add_log(a)
    a.set_defaults(func=cmd_set)

    a = ss.add_parser("list", help="the suites and their sizes")
    a.add_argument("--format", choices=["text", "json"], default="text")
    _add_log(a)
    a.set_defaults(func=cmd_list)

    a = ss.add_parser("show", help="a suite's conversations, turns, references and ideal answers")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--format", choices=["text", "json"], default="text")
    _add_log(a)
    a.set_defaults(func=cmd_show)

    a = ss.add_parser("remove", help="take a conversation out of a suite")
    a.add_argument("name", metavar="NAME")
    a.add_argument("conversation_id", metavar="ID")
    _add_log(a)
    a.set_defaults(func=cmd_remove)

    a = ss.add_parser("ideal", help="set the ideal answer of one turn (used by every suite)")
    a.add_argument("conversation_id", metavar="ID")
    a.add_argument("turn", type=int, metavar="TURN", help="turn number, from 0")
    a.add_argument("text", nargs="?", default="", metavar="TEXT", help="the answer, or - for stdin")
    a.add_argument("--clear", action="store_true", help="remove the ideal answer")
    _add_log(a)
    a.set_defaults(func=cmd_ideal)
