"""Benchmark eval runs: conversations replayed per second against an echo Space on 127.0.0.1.

    python bench/eval.py [--conversations 48] [--turns 3] [--parallel 8] [--echo-delay 0.02]

Starts a real Space (``python -m chatcore space``, echo responder, ``CHAT_ECHO_DELAY`` per
word to stand in for a model), builds a suite of N conversations in memory, and runs
``chatcore.staff.evaluate.run_suite`` with 1 and with ``--parallel`` conversations at once. Prints
conversations per second for both and their ratio; checks every turn passed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from chatcore.staff.evaluate import run_suite  # noqa: E402
from chatcore.staff.suites import Suite, SuiteConversation, SuiteTurn  # noqa: E402
from conftest import SpaceProcess  # noqa: E402


def make_suite(conversations: int, turns: int) -> Suite:
    suite = Suite("bench")
    for i in range(conversations):
        cid = f"bench-{i}"
        items = []
        for k in range(turns):
            text = f"question {k} of conversation {i}"
            items.append(SuiteTurn(k, text, f"You said: {text}" + (f" (message {k + 1} in this conversation)"
                                                                    if k else "")))
        suite.conversations[cid] = SuiteConversation(cid, items)
    return suite


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=48)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--echo-delay", type=float, default=0.02, help="seconds per word of the echo reply")
    args = ap.parse_args()
    token = "bench-eval-token"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "chat_logs.jsonl"
        space = SpaceProcess(log, env={"CHAT_OPERATOR_TOKEN": token, "CHAT_ECHO_DELAY": str(args.echo_delay)})
        space.start()
        try:
            suite = make_suite(args.conversations, args.turns)
            rates = {}
            for parallel in (1, args.parallel):
                started = time.perf_counter()
                report = run_suite(suite, space.url, parallel=parallel, operator_token=token, token_log_path=log)
                elapsed = time.perf_counter() - started
                s = report["summary"]
                if s["pass_rate"] != 1.0:
                    print(f"warning: pass rate {s['pass_rate']} (errors {s['errors']})", file=sys.stderr)
                rates[parallel] = args.conversations / elapsed
                print(f"parallel {parallel:>2}: {args.conversations} conversations x {args.turns} turns in "
                      f"{elapsed:6.2f} s = {rates[parallel]:6.2f} conversations/s "
                      f"({args.conversations * args.turns / elapsed:6.1f} turns/s), pass rate {s['pass_rate']:.0%}")
            print(f"parallel {args.parallel} vs 1: x{rates[args.parallel] / rates[1]:.2f} "
                  f"(echo delay {args.echo_delay}s/word, {os.cpu_count()} CPU(s))")
        finally:
            space.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
