"""Forgetting a conversation in a large shard while a writer process appends.

    python bench/forget.py [--lines 300000] [--every 20]

Prints the time the forget took, its rewrite rate, and the longest time one append
of the writer process waited meanwhile (the writers' flock is held only for the
tail end and the rename), as a share of the forget's time.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatcore.log.records import make_record  # noqa: E402
from chatcore.log.retention import forget  # noqa: E402
from chatcore.log.writer import LogWriter, encode_line  # noqa: E402


def _writer(path: str, stop, waits) -> None:
    w = LogWriter(path)
    worst, n = 0.0, 0
    while not stop.is_set():
        t = time.perf_counter()
        w.append(make_record(conversation_id="live", turn=n, user_text="still typing", response="ok",
                             latency_ms=1, source="api", backend="bench"))
        worst = max(worst, time.perf_counter() - t)
        n += 1
        time.sleep(0.001)
    waits.put((worst, n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--every", type=int, default=20, help="one line in this many is the forgotten conversation's")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        shard = Path(d) / "chat_logs.jsonl"
        with open(shard, "wb") as f:
            for i in range(args.lines):
                cid = "forget-me" if i % args.every == 0 else f"c{i % 997}"
                f.write(encode_line(make_record(conversation_id=cid, turn=i, user_text="x" * 200,
                                                response="y" * 150, latency_ms=1, source="api", backend="bench")))
        size = shard.stat().st_size
        ctx = mp.get_context("spawn")
        stop, waits = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=_writer, args=(str(shard), stop, waits))
        proc.start()
        time.sleep(1.0)
        t = time.perf_counter()
        res = forget(shard, "forget-me", by="bench")
        took = time.perf_counter() - t
        time.sleep(0.2)
        stop.set()
        worst, appended = waits.get(timeout=30)
        proc.join(30)
        print(f"shard: {size / 1e6:.1f} MB, {args.lines} lines; forgot {res['lines']} lines")
        print(f"forget: {took:.2f} s ({size / 1e6 / took:.0f} MB/s rewritten)")
        print(f"writer process: {appended} appends; longest append wait {worst * 1000:.1f} ms "
              f"= {worst / took:.1%} of the forget's time")


if __name__ == "__main__":
    main()
