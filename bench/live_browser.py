"""How fast a written line shows on the dashboard's Live page, in a real browser.

    python bench/live_browser.py [--lines 30] [--gap 0.7] [--remote]

Starts ``python -m chatcore dashboard --no-space`` on a free loopback port, opens the
Live page in headless Chromium, then appends one turn at a time to the log and times
how long until its text is in the page. Prints p50/p95/max against the goal (p95 <= 1 s).
The baseline measured in the same run is the page's own refresh period: a line can
not show sooner than the next tick.

With ``--remote`` it then measures the remote path as well: a Space with
``CHAT_OPERATOR_TOKEN`` in one folder, the dashboard started with ``--log <Space URL>``
(its mirror in another folder; with ``--beside DIR`` the Space serves DIR's shards too and the
mirror, kept in ``DIR.mirror``, holds the copy of that large log), each turn sent through the Space's ``/chat`` and timed
from before the call until its text is on the Live page (goal p95 <= 1.5 s). It also
times the Space's event stream: a line appended to the Space's log until the event
announcing it arrives (goal <= 100 ms).
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

from chatcore.log.records import make_record  # noqa: E402
from chatcore.log.shards import shard_paths  # noqa: E402
from chatcore.log.writer import LogWriter  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def live_delays(url: str, warm: str, write, lines: int, gap: float, ready_timeout: float = 90) -> list[float]:
    """Open the Live page at ``url``, wait for ``warm``, then time ``write(marker)`` -> marker visible."""
    from playwright.sync_api import sync_playwright

    delays: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        # The live table is a data grid; its cells are in the DOM (for screen readers) as text.
        page.wait_for_function("w => document.body.textContent.includes(w)", arg=warm, timeout=ready_timeout * 1000)
        for i in range(lines):
            marker = f"bench-{i}-{uuid.uuid4().hex[:10]}"
            t0 = time.perf_counter()
            write(i, marker)
            page.wait_for_function("m => document.body.textContent.includes(m)", arg=marker,
                                   timeout=15_000, polling=20)
            delays.append(time.perf_counter() - t0)
            time.sleep(max(0.0, gap - delays[-1]))
        browser.close()
    return delays


def start_dashboard(args: list[str], env: dict, timeout: float = 90) -> tuple[subprocess.Popen, int]:
    from conftest import free_port, wait_http

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "chatcore", "dashboard", "--port", str(port), *args],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", timeout=timeout, proc=proc)
    except Exception:
        stop(proc)
        raise
    return proc, port


def _free_or(port: int) -> int:
    """``port`` if nothing listens on it on loopback, else a free one."""
    import socket

    from conftest import free_port

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


def report(name: str, delays: list[float], goal: float) -> float:
    p50, p95 = pct(delays, 50), pct(delays, 95)
    print(f"== {name}: {len(delays)} lines written one at a time")
    print(f"   write -> visible: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms")
    print(f"   goal p95 <= {goal * 1000:.0f} ms: {'PASS' if p95 <= goal else 'MISS'}")
    return p95


def event_delays(url: str, token: str, log: Path, n: int = 40) -> list[float]:
    """Append a line to the Space's log, time until the event stream announces the new size."""
    import json
    import queue
    import threading

    import httpx

    sizes: queue.Queue = queue.Queue()

    def listen():
        try:
            with httpx.stream("GET", url + "/staff/v1/events", headers={"X-Chat-Operator-Token": token},
                              timeout=httpx.Timeout(5, read=60)) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        listing = json.loads(line[5:])
                        sizes.put((time.perf_counter(), {s["name"]: s["size"] for s in listing["shards"]}))
        except httpx.HTTPError:  # the Space stopped at the end of the run
            pass

    threading.Thread(target=listen, daemon=True).start()
    sizes.get(timeout=10)
    writer = LogWriter(log)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        writer.append(make_record(conversation_id=f"ev-{i}", turn=0, user_text="event", response="r",
                                  latency_ms=1, source="api", backend="echo"))
        want = log.stat().st_size
        while True:
            t, seen = sizes.get(timeout=5)
            if seen.get(log.name, 0) >= want:
                out.append(t - t0)
                break
        time.sleep(0.05)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=30)
    ap.add_argument("--gap", type=float, default=0.7, help="seconds between written lines")
    ap.add_argument("--remote", action="store_true",
                    help="also measure the remote path (Space with a token, dashboard on its URL)")
    ap.add_argument("--beside", metavar="DIR",
                    help="the dashboard reads every shard of DIR (e.g. the 5M-turn bench log's folder) and the "
                         "lines are written to a new shard there, removed at the end: write -> visible while "
                         "that log is open")
    args = ap.parse_args()

    refresh = float(os.environ.get("CHAT_LIVE_REFRESH", "0.5"))
    env = {k: v for k, v in os.environ.items() if k not in ("CHAT_LOG_PATH", "CHAT_LOG_URL", "CHAT_OPERATOR_TOKEN")}
    with tempfile.TemporaryDirectory() as d:
        log = Path(args.beside) / "chat_logs.live-bench.jsonl" if args.beside else Path(d) / "local" / "chat_logs.jsonl"
        log.unlink(missing_ok=True)
        writer = LogWriter(log)
        writer.append(make_record(conversation_id="warm-up", turn=0, user_text="warm up", response="ok",
                                  latency_ms=1, source="api", backend="echo"))
        shown = args.beside or str(log)
        proc, port = start_dashboard(["--no-space", "--log", shown, "--space-url", "http://127.0.0.1:9"], env)
        try:
            local = live_delays(
                f"http://127.0.0.1:{port}/live", "warm up",
                lambda i, m: writer.append(make_record(conversation_id=f"c-{i}", turn=0, user_text=m, response="r",
                                                       latency_ms=1, source="widget", backend="echo")),
                args.lines, args.gap)
        finally:
            stop(proc)
            if args.beside:
                log.unlink(missing_ok=True)
        where = f"beside {args.beside}" if args.beside else "a small log"
        local_p95 = report(f"Live page in headless Chromium, local log ({where}); load average "
                           f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}", local, 1.0)
        print(f"   page refresh period (floor for any line): {refresh * 1000:.0f} ms; "
              f"p95 is {local_p95 / refresh:.1f}x the period")
        if not args.remote:
            return 0

        import secrets

        from gradio_client import Client

        from conftest import SpaceProcess

        token = secrets.token_urlsafe(24)
        space_log = Path(d) / "space" / "chat_logs.jsonl"
        space_log.parent.mkdir()
        mirror, slow = Path(d) / "laptop", 90
        if args.beside:
            # the Space serves the large log's shards as its own (hard links in its folder: it
            # serves no symbolic link) and writes a new shard beside them; the dashboard's mirror
            # is kept beside the large log, so its copy is fetched and parsed by the first run only
            big = Path(args.beside)
            for shard in shard_paths(big):
                if shard != log:
                    os.link(shard, space_log.parent / f"big-{shard.name}")
            mirror, slow = big.parent / f"{big.name}.mirror", 3600
        # a mirror's copy belongs to its Space's URL: with --beside the Space keeps one port across runs
        port = _free_or(7391) if args.beside else None
        space = SpaceProcess(space_log, port=port, env={**env, "CHAT_OPERATOR_TOKEN": token}).start(timeout=slow)
        try:
            client = Client(space.url, verbose=False)

            def send(i, text):
                client.predict(message={"text": text, "files": []}, conversation_id=f"r-{i}", api_name="/chat")

            send(-1, "warm up remote")
            dash_env = {**env, "CHAT_OPERATOR_TOKEN": token, "CHAT_MIRROR_DIR": str(mirror)}
            proc, port = start_dashboard(["--log", space.url], dash_env, timeout=slow)
            try:
                remote = live_delays(f"http://127.0.0.1:{port}/live", "warm up remote", send, args.lines, args.gap,
                                     ready_timeout=slow)
            finally:
                stop(proc)
            events = event_delays(space.url, token, space_log)
        finally:
            space.stop()
        remote_p95 = report("Live page in headless Chromium, remote Space (sent through /chat, read via "
                            f"the mirror{', the Space serving ' + args.beside + ' too' if args.beside else ''})",
                            remote, 1.5)
        print(f"   remote p95 is {remote_p95 / local_p95:.1f}x the local p95 ({local_p95 * 1000:.0f} ms)")
        e50, e95 = pct(events, 50), pct(events, 95)
        print(f"== Space event stream: {len(events)} lines appended to the Space's log")
        print(f"   write -> event: p50 {e50 * 1000:.0f} ms, p95 {e95 * 1000:.0f} ms, max {max(events) * 1000:.0f} ms; "
              f"goal <= 100 ms: {'PASS' if max(events) <= 0.1 else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
