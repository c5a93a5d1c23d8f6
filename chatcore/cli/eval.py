"""``python -m chatcore eval NAME [--space URL]``: the regression gate (see chatcore/staff/evaluate.py
and docs/regression-gate.md).

The Space is ``--space``, else ``$CHAT_SPACE_URL``, else the local Space (as for ``replay`` and
``simulate``). Exit codes: 0 the share of turns that pass reached ``--min-pass``; 1 it did not
(or the Space could not be reached, or a compared run is missing); 2 bad arguments.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def compare(args, log_path) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.staff.evaluate import compare_runs, load_run

    if len(args.compare) != 2:
        raise UsageError("--compare takes two runs: RUN_A RUN_B")
    reports = []
    for run in args.compare:
        try:
            reports.append(load_run(log_path, run))
        except KeyError:
            print(f"no run {run!r} (ids are listed by: python -m chatcore eval --history SUITE)", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    diff = compare_runs(*reports)
    if args.format == "json":
        print(json.dumps(diff, ensure_ascii=False, indent=1))
        return 0
    from chatcore.staff.replay import diff_terminal, strip_controls

    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(f"{diff['a']} -> {diff['b']}: pass rate {_pct(diff['pass_rate_a'])} -> {_pct(diff['pass_rate_b'])}, "
          f"{diff['worse']} worse, {diff['better']} better, {diff['reply_changed']} repl(ies) changed")
    for r in diff["turns"]:
        if r["movement"] or r["reply_changed"]:
            a, b = (str(r[f"outcome_{x}"] or r[x]).replace("_", " ") for x in ("a", "b"))
            print(f"  {r['conversation_id']} turn {r['turn']}: {a} -> {b}"
                  + (f" ({r['movement']})" if r["movement"] else ""))
            if r["reply_changed"]:
                print(f"    {diff_terminal(r['reply_a'] or '', r['reply_b'] or '', colour)}")
            if r["reason_b"]:
                print(f"    reason: {strip_controls(r['reason_b'])}")
    return 0


def history(args, log_path) -> int:
    from chatcore.staff.evaluate import list_runs, summary_words

    runs = list_runs(log_path, args.history)
    if args.format == "json":
        print(json.dumps([{"run_id": r["run_id"], "started": r.get("started"), "space": r.get("space"),
                           **r["summary"]} for r in runs], indent=1))
        return 0
    for r in runs:
        s = r["summary"]
        words = f"  {summary_words(s)}" if "held" in s else ""  # reports saved before the words have none
        print(f"{r['run_id']:<40} {r.get('started', '')}  {_pct(s['pass_rate']):>6}  "
              f"{s['failed']} failed of {s['turns']}{words}  {r.get('space', '')}")
    if not runs:
        print(f"no runs of {args.history!r} yet")
    return 0


def run(args) -> int:
    from chatcore.cli.main import UsageError
    from chatcore.remote.client import space_health
    from chatcore.staff.evaluate import apply_gate, judge_from_env, latest_run, save_report, summary_words
    from chatcore.staff.replay import strip_controls
    from chatcore.config import display_url, operator_token
    from chatcore.remote.log_settings import load_settings
    from chatcore.staff.suites import get_suite

    settings = load_settings(log_path=args.log, space_url=args.space)
    log_path = settings.log_path
    if args.compare:
        return compare(args, log_path)
    if args.history:
        return history(args, log_path)
    if not args.name:
        raise UsageError("name the suite: python -m chatcore eval NAME [--space URL]")
    if not 0.0 <= args.min_pass <= 1.0:
        raise UsageError("--min-pass is a fraction from 0 to 1 (e.g. 0.9)")
    if not 0.0 < args.similarity <= 1.0:
        raise UsageError("--similarity is a fraction above 0, up to 1")
    if not 1 <= args.parallel <= 32:
        raise UsageError("--parallel is from 1 to 32")
    try:
        suite = get_suite(log_path, args.name)
    except (KeyError, ValueError):
        print(f"no suite {args.name!r} with conversations in {log_path} "
              "(python -m chatcore suite list)", file=sys.stderr)
        return 2
    judge = None
    if args.judge and args.judge.lower() != "none":
        prompt = None
        if args.judge_prompt:
            try:
                prompt = Path(args.judge_prompt).read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read --judge-prompt: {exc.strerror}") from None
        try:
            judge = judge_from_env(args.judge, stream=args.judge_stream, timeout=args.timeout, prompt=prompt,
                                   **({"model": args.judge_model} if args.judge_model else {}))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    draft = None
    if args.prompt:
        from chatcore.llm.prompts import encode_draft

        try:
            draft = Path(args.prompt).read_text(encoding="utf-8")
            encode_draft(draft)
        except OSError as exc:
            raise UsageError(f"cannot read --prompt: {exc.strerror}") from None
        except (ValueError, UnicodeError) as exc:
            raise UsageError(f"--prompt: {exc}") from None
    token = operator_token(log_path)
    if draft is not None and not token:
        raise UsageError("a draft prompt is sent with the staff token: set CHAT_OPERATOR_TOKEN")
    where = display_url(settings.space_url)
    health = space_health(settings.space_url, timeout=5.0)
    if health.get("status") not in ("ok", "degraded"):
        how = ("Check the --space URL" if args.space else
               "Start it, or name the Space with --space URL (or $CHAT_SPACE_URL)")
        print(f"error: cannot reach the Space at {where}; nothing was replayed. {how}.", file=sys.stderr)
        return 1
    previous = latest_run(log_path, suite.name)
    quiet = args.format == "json"

    def progress(done, total, conv) -> None:
        if quiet:
            return
        bad = [t for t in conv["turns"] if not t["passed"]]
        mark = "ok" if not bad else f"{len(bad)} turn(s) failing"
        print(f"[{done}/{total}] {conv['conversation_id']}: {mark}", file=sys.stderr, flush=True)

    print(f"replaying suite {suite.name} ({len(suite.conversations)} conversation(s), {suite.turn_count} turn(s)) "
          f"against {where}" + (f", judged by {display_url(judge.endpoint)}" if judge else ""),
          file=sys.stderr, flush=True)
    try:
        report = run_suite_cli(suite, settings.space_url, judge, args, token, log_path, previous, progress, draft)
    finally:
        if judge:
            judge.close()
    if draft is not None:
        from chatcore.llm.prompts import draft_version

        report["prompt_version"] = draft_version(draft)
    apply_gate(report, args.min_pass)
    try:
        saved = save_report(log_path, report)
    except OSError as exc:
        saved = None
        print(f"note: the report could not be saved beside the log ({exc.strerror})", file=sys.stderr)
    if args.report:
        Path(args.report).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    s = report["summary"]
    if args.format == "json":
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        for conv in report["conversations"]:
            for t in conv["turns"]:
                if not t["passed"]:
                    print("\n".join(failing_lines(conv["conversation_id"], t)))
            if conv.get("context_error"):
                print(f"note {conv['conversation_id']}: {strip_controls(conv['context_error'])}")
        print(f"suite {suite.name}: {summary_words(s)}; "
              f"{_pct(s['pass_rate'])} of {s['turns']} turns pass, "
              f"{s['conversations_passed']}/{s['conversations']} conversations"
              + (f", judge errors {s['judge_errors']}" if s["judge_errors"] else ""))
        if report.get("baseline_run"):
            print(f"since run {report['baseline_run']}: {s['worse']} worse, {s['better']} better")
        print(f"run {report['run_id']}" + (f", report {saved}" if saved else "")
              + f"; gate {report['gate']} (min pass {_pct(args.min_pass)})")
    if s["errors"]:
        print(f"{s['errors']} turn(s) were not answered by the Space at {where} (down, timed out or "
              "refused): counted as failed", file=sys.stderr)
    return 0 if report["gate"] == "pass" else 1


#: What a failing turn's reference was, by the turn's expectation.
REFERENCE_LABEL = {"bad": "rated down", "answer": "hand-off", "good": "logged", "handoff": "hand-off"}
SHORT = 160


def _short(text: str) -> str:
    from chatcore.staff.replay import strip_controls

    one = " ".join(strip_controls(text or "").split())
    return one if len(one) <= SHORT else one[:SHORT - 1] + "…"


def failing_lines(conversation_id: str, turn: dict) -> list[str]:
    """A failing turn for a terminal: why, then the new reply and the reference (shortened)."""
    from chatcore.staff.replay import strip_controls

    word = str(turn.get("outcome") or turn["status"]).replace("_", " ")
    lines = [f"FAIL {conversation_id} turn {turn['turn']} [{word}]: {strip_controls(turn['reason'])}"]
    if turn["status"] != "error":
        lines.append(f"    reply: {_short(turn['reply'])}")
    lines.append(f"    reference ({REFERENCE_LABEL.get(turn.get('expect'), 'logged')}): {_short(turn['reference'])}")
    if turn.get("ideal"):
        lines.append(f"    ideal: {_short(turn['ideal'])}")
    return lines


def run_suite_cli(suite, url, judge, args, token, log_path, previous, progress, draft=None):
    from chatcore.remote.client import SpaceClient
    from chatcore.staff.evaluate import run_suite

    def with_draft():  # every replay carries the draft system prompt (and the staff token)
        return SpaceClient(url, timeout=args.timeout, operator_token=token, log_path=log_path, system_prompt=draft)

    return run_suite(suite, url, judge=judge, parallel=args.parallel, threshold=args.similarity,
                     timeout=args.timeout, operator_token=token, token_log_path=log_path,
                     previous=previous, on_conversation=progress,
                     client_factory=with_draft if draft is not None else None)


#: chatcore.staff.evaluate's defaults, repeated here: building the command line must not import that
#: module (it imports pandas, which every other command would then pay for at start-up).
DEFAULT_SIMILARITY = 0.85
DEFAULT_PARALLEL = 8


def register(sub) -> None:
    from chatcore.cli.main import _add_log

    p = sub.add_parser("eval", help="replay a suite against a Space and score it (exit 1 below --min-pass)")
    p.add_argument("name", nargs="?", metavar="NAME", help="the suite")
    p.add_argument("--space", metavar="URL",
                   help="the Space to test (default $CHAT_SPACE_URL or http://127.0.0.1:7860)")
    p.add_argument("--judge", metavar="URL|none",
                   help="OpenAI-compatible API base (http://host:port/v1) to judge each turn; "
                        "none (default): score by similarity")
    p.add_argument("--judge-model", metavar="NAME", help="model name for the judge (default $CHAT_JUDGE_MODEL)")
    p.add_argument("--judge-stream", action="store_true", help="ask the judge for a streamed answer")
    p.add_argument("--judge-prompt", metavar="FILE", help="prompt file (default chatcore/staff/eval_judge_prompt.md)")
    p.add_argument("--min-pass", type=float, default=1.0, metavar="FRACTION",
                   help="lowest share of turns that pass (fixed or held) for the gate to pass; "
                        "exit 1 below it (default 1.0)")
    p.add_argument("--similarity", type=float, default=DEFAULT_SIMILARITY, metavar="FRACTION",
                   help=f"without a judge: how alike a reply must be to pass (default {DEFAULT_SIMILARITY})")
    p.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                   help=f"conversations replayed at once (default {DEFAULT_PARALLEL})")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each reply")
    p.add_argument("--prompt", metavar="FILE",
                   help="replay with this draft system prompt instead of the Space's own (staff token "
                        "needed; the Space's settings stay as they are)")
    p.add_argument("--report", metavar="PATH", help="also write the JSON report here")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two runs (ids or report files)")
    p.add_argument("--history", metavar="SUITE", help="list the runs of a suite")
    _add_log(p)
    p.set_defaults(func=run)
