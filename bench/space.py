"""Benchmark the Space and the writer. Prints figures and ratios measured in this run.

    python bench/space.py [--clients 50] [--turns 10] [--writer-lines 200000]

1. Turns per second through a real Space (echo) on 127.0.0.1 with N concurrent
   gradio_client clients, each its own conversation; checks every turn was logged once.
2. The writer's lines per second (one thread, and 4 threads sharing one writer).
3. p50/p95 turn latency with logging on vs off, in-process (the Space's own chat
   function, no HTTP noise): the cost the log write adds to a turn.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from chatcore.log.records import make_record  # noqa: E402
from chatcore.log.writer import LogWriter  # noqa: E402


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def _http_turn(client, url: str, cid: str, text: str) -> str:
    """One turn over Gradio's HTTP API (what the widget does): POST the call, read the SSE stream."""
    resp = await client.post(f"{url}/gradio_api/call/chat",
                             json={"data": [{"text": text, "files": []}, cid, "api"]})
    resp.raise_for_status()
    event_id = resp.json()["event_id"]
    last, event = None, None
    async with client.stream("GET", f"{url}/gradio_api/call/chat/{event_id}") as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("generating", "complete"):
                last = json.loads(line[5:])
            if event == "error":
                raise RuntimeError(f"the Space refused a turn: {line}")
            if event == "complete" and last is not None:
                break
    return last[0] if isinstance(last, list) else last


class _BaselineProcess:
    """bench/baseline_space.py in a subprocess, with the same start/stop/records as SpaceProcess."""

    def __init__(self, log: Path, env: dict | None = None):
        import subprocess

        from conftest import free_port, wait_http

        self.log_path, self.port = log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench/baseline_space.py"), str(self.port), str(log)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})})
        wait_http(self.url + "/gradio_api/info", proc=self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def health(self) -> dict:
        return {"write_errors": 0}


def bench_space(clients: int, turns: int, tmp: Path, baseline: bool = False, word_delay: float = 0.0) -> dict:
    """N concurrent visitors, each its own conversation, through the Space's HTTP API.

    The driver is asyncio + httpx in this process: gradio_client costs ~50 ms of CPU per
    call on the client side, which on a 2-core machine would measure the client, not the Space.
    """
    import asyncio

    import httpx

    from conftest import SpaceProcess

    log = tmp / f"{'baseline' if baseline else 'space'}-{word_delay}" / "log.jsonl"
    # Every visitor comes from 127.0.0.1: let one address hold all of them at once.
    env = {"CHAT_ECHO_DELAY": str(word_delay), "CHAT_CLIENT_CONCURRENCY": str(max(32, clients * 2))}
    with (_BaselineProcess(log, env) if baseline else SpaceProcess(log, env=env)) as sp:
        latencies: list[float] = []

        async def visitor(client, i: int) -> None:
            cid = f"bench-{i}-{uuid.uuid4().hex[:6]}"
            for t in range(turns):
                t0 = time.perf_counter()
                reply = await _http_turn(client, sp.url, cid, f"{cid} {t} where is my order")
                assert reply.startswith(f"You said: {cid} {t}"), reply
                latencies.append((time.perf_counter() - t0) * 1000)

        async def run() -> float:
            limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                await _http_turn(client, sp.url, "warm-up", "warm up")
                t0 = time.perf_counter()
                await asyncio.gather(*(visitor(client, i) for i in range(clients)))
                return time.perf_counter() - t0

        elapsed = asyncio.run(run())
        records = [r for r in sp.records() if r["conversation_id"] != "warm-up"]
        health = sp.health()
    per_conv: dict[str, list[int]] = {}
    for r in records:
        per_conv.setdefault(r["conversation_id"], []).append(r.get("turn", len(per_conv.get(r["conversation_id"], []))))
    ok = len(records) == clients * turns and all(sorted(v) == list(range(turns)) for v in per_conv.values())
    return {
        "turns": clients * turns, "seconds": elapsed, "turns_per_s": clients * turns / elapsed,
        "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95),
        "logged_once": ok, "write_errors": health["write_errors"],
    }


def bench_writer(lines: int, tmp: Path) -> dict:
    rec = make_record(conversation_id=str(uuid.uuid4()), turn=3, user_text="Where is my order? " * 5,
                      response="Your order left the warehouse this morning. " * 8, latency_ms=12.3,
                      source="widget", backend="echo", session="abc")
    out = {}
    path = tmp / "writer1.jsonl"
    w = LogWriter(path)
    t0 = time.perf_counter()
    for _ in range(lines):
        w.append(rec)
    out["one_thread_lines_per_s"] = lines / (time.perf_counter() - t0)
    path = tmp / "writer4.jsonl"
    w = LogWriter(path)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: [w.append(rec) for _ in range(lines // 4)], range(4)))
    out["four_threads_lines_per_s"] = lines / (time.perf_counter() - t0)
    out["bytes_per_line"] = len(json.dumps(rec)) + 1
    # Baseline measured in the same run: a plain open-append-close per line, as the first Space did.
    path = tmp / "naive.jsonl"
    n = min(lines, 50_000)
    t0 = time.perf_counter()
    for _ in range(n):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    out["naive_open_per_line_lines_per_s"] = n / (time.perf_counter() - t0)
    return out


class _NullWriter:
    def append(self, record):
        return True

    def health(self):
        return {}


def bench_logging_cost(turns: int, tmp: Path) -> dict:
    from chatcore.llm.responders import make_echo
    from chatcore.config import Settings
    from chatcore.space.chat import ChatService

    settings = Settings.from_env(log_path=tmp / "inproc.jsonl")
    results = {}
    for label, writer in (("off", _NullWriter()), ("on", LogWriter(settings.log_path))):
        service = ChatService(settings, make_echo(), writer)
        lat = []
        for i in range(turns):
            t0 = time.perf_counter()
            for _ in service.chat({"text": "where is my order please", "files": []}, [],
                                  f"lat-{i % 100}", "api"):
                pass
            lat.append((time.perf_counter() - t0) * 1000)
        results[label] = {"p50_ms": statistics.median(lat), "p95_ms": pct(lat, 95)}
    results["added_p50_ms"] = results["on"]["p50_ms"] - results["off"]["p50_ms"]
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--turns", type=int, default=10, help="turns per client")
    ap.add_argument("--writer-lines", type=int, default=200_000)
    ap.add_argument("--latency-turns", type=int, default=5_000)
    ap.add_argument("--word-delay", type=float, default=0.03,
                    help="seconds per streamed word in the second run (a model's pace)")
    ap.add_argument("--baseline-turns", type=int, default=2,
                    help="turns per client for the serial baseline in the delayed run (it is slow)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results = {}
        for delay, label in ((0.0, "instant echo"), (args.word_delay, f"echo at {args.word_delay * 1000:.0f} ms/word, like a model streaming")):
            print(f"== Space: {args.clients} concurrent clients x {args.turns} turns, {label}, loopback")
            s = bench_space(args.clients, args.turns, tmp, word_delay=delay)
            print(f"   ours:     {s['turns']} turns in {s['seconds']:.2f} s = {s['turns_per_s']:.1f} turns/s; "
                  f"p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms; "
                  f"every turn logged once: {s['logged_once']}; write errors: {s['write_errors']}")
            b = bench_space(args.clients, args.baseline_turns if delay else args.turns, tmp, baseline=True,
                            word_delay=delay)
            print(f"   baseline: default ChatInterface, same echo: {b['turns']} turns at {b['turns_per_s']:.1f} turns/s; "
                  f"p50 {b['p50_ms']:.0f} ms, p95 {b['p95_ms']:.0f} ms")
            print(f"   -> {s['turns_per_s'] / b['turns_per_s']:.1f}x the turns/s, "
                  f"p50 latency {b['p50_ms'] / s['p50_ms']:.1f}x lower")
            results[delay] = s
        print(f"== Writer: {args.writer_lines} lines")
        w = bench_writer(args.writer_lines, tmp)
        print(f"   one thread {w['one_thread_lines_per_s']:,.0f} lines/s; four threads "
              f"{w['four_threads_lines_per_s']:,.0f} lines/s ({w['bytes_per_line']} B/line)")
        print(f"   baseline open-append-close per line: {w['naive_open_per_line_lines_per_s']:,.0f} lines/s "
              f"-> writer is {w['one_thread_lines_per_s'] / w['naive_open_per_line_lines_per_s']:.1f}x")
        print(f"== Turn latency in-process, logging off vs on ({args.latency_turns} turns each)")
        c = bench_logging_cost(args.latency_turns, tmp)
        print(f"   off: p50 {c['off']['p50_ms']:.3f} ms, p95 {c['off']['p95_ms']:.3f} ms")
        print(f"   on:  p50 {c['on']['p50_ms']:.3f} ms, p95 {c['on']['p95_ms']:.3f} ms")
        verdict = "PASS" if c["added_p50_ms"] <= 1.0 else "MISS"
        print(f"   logging adds {c['added_p50_ms'] * 1000:.0f} us at p50 (target <= 1 ms): {verdict}")
    return 0 if all(r["logged_once"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
