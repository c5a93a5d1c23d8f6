"""What usage, cost, prompt version and OTLP tracing add to logging one bot turn (µs per turn).

    python bench/usage_logging.py [--turns 20000]

Measured in-process on the chat thread, as the Space does it after a reply: build the record
and append it to the log (the reference, measured in the same run), then the same with the
usage/cost/prompt_version fields, then with the turn also handed to the OTLP tracer, which
exports on its own thread to a loopback OTLP/HTTP collector in another process (spans received
are counted to show they were sent). The p95 with tracing includes waits for the interpreter
lock while the export thread encodes spans.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from chatcore.llm import costs, prompts  # noqa: E402
from chatcore.llm.openai_chat import Usage  # noqa: E402
from chatcore.log.records import make_record  # noqa: E402
from chatcore.log.writer import LogWriter  # noqa: E402

PRICES = costs.parse_prices('{"bench-model": {"input": 0.15, "output": 0.6, "cached_input": 0.075}}')
VERSION = prompts.prompt_version("You are the support assistant of a parcel company. Be brief.")


def turn_record(i: int, with_usage: bool) -> dict:
    usage = Usage(1200 + i % 50, 80 + i % 7, cached_tokens=200) if with_usage else None
    return make_record(
        conversation_id=f"bench-{i % 500}", turn=i // 500, user_text="where is my parcel, order 12345?",
        response="Your parcel left our depot this morning and should arrive tomorrow.", latency_ms=812.5,
        source="widget", backend="openai", model="bench-model", session="s" * 32,
        usage=usage.as_log() if usage else None,
        cost_usd=costs.cost_usd(PRICES, "bench-model", usage) if usage else None,
        prompt_version=VERSION if with_usage else None,
    )


def run(writer: LogWriter, turns: int, with_usage: bool, tracer=None) -> list[float]:
    per_turn = []
    for i in range(turns):
        started = time.perf_counter()
        rec = turn_record(i, with_usage)
        writer.append(rec)
        if tracer is not None:
            tracer.turn(rec)
        per_turn.append((time.perf_counter() - started) * 1e6)
    return per_turn


#: A collector in its own process (so its decoding does not share this process's GIL): answers
#: every OTLP/HTTP POST with 200 and prints how many spans it received when stdin closes.
COLLECTOR = """
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
count = [0]
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        req = ts.ExportTraceServiceRequest()
        req.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        count[0] += sum(len(s.spans) for r in req.resource_spans for s in r.scope_spans)
        body = ts.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
print(srv.server_address[1], flush=True)
sys.stdin.read()
print(count[0], flush=True)
"""


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=20000)
    args = ap.parse_args()

    from chatcore.llm.traces import TurnTracer

    collector = subprocess.Popen([sys.executable, "-c", COLLECTOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
    port = int(collector.stdout.readline())
    tracer = TurnTracer(f"http://127.0.0.1:{port}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, with_usage, tr in (("plain record (reference)", False, None),
                                     ("+ usage, cost, prompt_version", True, None),
                                     ("+ OTLP span", True, tracer)):
            writer = LogWriter(Path(tmp) / f"{len(results)}.jsonl")
            run(writer, min(2000, args.turns), with_usage, tr)  # warm-up
            results[name] = run(writer, args.turns, with_usage, tr)
        tracer.provider.force_flush()
        time.sleep(0.5)
    tracer.shutdown()
    received, _ = collector.communicate("", timeout=60)
    ref = statistics.median(results["plain record (reference)"])
    print(f"logging one bot turn, {args.turns} turns each (µs per turn, on the chat thread)")
    print(f"{'':34} {'p50':>8} {'p95':>8} {'vs reference':>14}")
    for name, values in results.items():
        p50 = statistics.median(values)
        print(f"{name:34} {p50:8.1f} {pct(values, 95):8.1f} {p50 - ref:+13.1f}")
    print(f"spans received by the loopback collector: {received.strip()} of {args.turns + min(2000, args.turns)}")


if __name__ == "__main__":
    main()
