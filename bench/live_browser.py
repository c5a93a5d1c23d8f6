"""How fast a written line shows on the dashboard's Live page, in a real browser.

    python bench/live_browser.py [--lines 30] [--gap 0.7]

Starts ``python -m chatcore dashboard --no-space`` on a free loopback port, opens the
Live page in headless Chromium, then appends one turn at a time to the log and times
how long until its text is in the page. Prints p50/p95/max against the goal (p95 <= 1 s).
The baseline measured in the same run is the page's own refresh period: a line can
not show sooner than the next tick.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from chatcore.records import make_record  # noqa: E402
from chatcore.writer import LogWriter  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=30)
    ap.add_argument("--gap", type=float, default=0.7, help="seconds between written lines")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from conftest import free_port, wait_http

    refresh = float(os.environ.get("CHAT_LIVE_REFRESH", "0.5"))
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "chat_logs.jsonl"
        writer = LogWriter(log)
        writer.append(make_record(conversation_id="warm-up", turn=0, user_text="warm up", response="ok",
                                  latency_ms=1, source="api", backend="echo"))
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "chatcore", "dashboard", "--no-space", "--port", str(port),
                                 "--log", str(log), "--space-url", "http://127.0.0.1:9"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        delays: list[float] = []
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", timeout=60, proc=proc)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/live")
                # The live table is a data grid; its cells are in the DOM (for screen readers) as text.
                page.wait_for_function("() => document.body.textContent.includes('warm up')", timeout=60_000)
                for i in range(args.lines):
                    marker = f"bench-{i}-{uuid.uuid4().hex[:10]}"
                    t0 = time.perf_counter()
                    writer.append(make_record(conversation_id=f"c-{i}", turn=0, user_text=marker, response="r",
                                              latency_ms=1, source="widget", backend="echo"))
                    page.wait_for_function("m => document.body.textContent.includes(m)", arg=marker,
                                           timeout=15_000, polling=20)
                    delays.append(time.perf_counter() - t0)
                    time.sleep(max(0.0, args.gap - delays[-1]))
                browser.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)

    p50, p95 = pct(delays, 50), pct(delays, 95)
    print(f"== Live page in headless Chromium: {len(delays)} lines written one at a time")
    print(f"   write -> visible: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms")
    print(f"   page refresh period (floor for any line): {refresh * 1000:.0f} ms; "
          f"p95 is {p95 / refresh:.1f}x the period")
    print(f"   goal p95 <= 1000 ms: {'PASS' if p95 <= 1.0 else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
