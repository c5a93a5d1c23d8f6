"""Load: many conversations at once through the Space while the dashboard's store refreshes.

    python bench/load.py [--conversations 100] [--turns 20] [--refresh-every 0.25]

Loopback only, bounded: conversations x turns requests, then it stops. Prints turns/s,
p50/p95 turn latency, the store's refresh times under load, and checks that every turn
was logged exactly once with no cross-talk (each line carries its own conversation's text).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from space import _http_turn, pct  # noqa: E402  (bench/space.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=100)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--refresh-every", type=float, default=0.25, help="seconds between store refreshes")
    args = ap.parse_args()

    import httpx

    from chatcore.store import LogStore
    from conftest import SpaceProcess

    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "log.jsonl"
        # Every visitor comes from 127.0.0.1: let one address hold all of them at once.
        with SpaceProcess(log, env={"CHAT_CLIENT_CONCURRENCY": str(max(32, args.conversations * 2))}) as sp:
            store = LogStore(log, cache_dir=Path(d) / "cache")
            refresh_ms: list[float] = []
            seen_live = [0]
            stop = threading.Event()

            def refresher() -> None:  # what the dashboard does while people chat
                while not stop.is_set():
                    t0 = time.perf_counter()
                    seen_live[0] += len(store.refresh())
                    refresh_ms.append((time.perf_counter() - t0) * 1000)
                    stop.wait(args.refresh_every)

            latencies: list[float] = []
            failures: list[str] = []
            ids = [f"load-{i}-{uuid.uuid4().hex[:8]}" for i in range(args.conversations)]

            async def visitor(client, cid: str) -> None:
                for t in range(args.turns):
                    text = f"{cid} turn {t} where is my order"
                    t0 = time.perf_counter()
                    try:
                        reply = await _http_turn(client, sp.url, cid, text)
                    except Exception as exc:
                        failures.append(f"{cid}#{t}: {exc}")
                        continue
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if not reply.startswith(f"You said: {text}"):
                        failures.append(f"{cid}#{t}: cross-talk in reply {reply[:80]!r}")

            async def run() -> float:
                limits = httpx.Limits(max_connections=args.conversations * 2)
                async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                    t0 = time.perf_counter()
                    await asyncio.gather(*(visitor(client, cid) for cid in ids))
                    return time.perf_counter() - t0

            th = threading.Thread(target=refresher, daemon=True)
            th.start()
            elapsed = asyncio.run(run())
            stop.set()
            th.join()
            store.refresh()
            health = sp.health()

        frame = store.frame
        expected = args.conversations * args.turns
        lost = expected - len(frame)
        crosstalk = 0
        for cid, group in frame.groupby("conversation_id"):
            turns = sorted(group["turn"].tolist())
            if turns != list(range(args.turns)):
                crosstalk += 1
            if not all(u.startswith(f"{cid} turn ") and r.startswith(f"You said: {u}")
                       for u, r in zip(group["user_text"], group["response"])):
                crosstalk += 1
        print(f"== {args.conversations} conversations x {args.turns} turns through the Space (echo, loopback), "
              f"store refreshing every {args.refresh_every}s")
        print(f"   {expected} turns in {elapsed:.1f} s = {expected / elapsed:.0f} turns/s; "
              f"latency p50 {pct(latencies, 50):.0f} ms, p95 {pct(latencies, 95):.0f} ms")
        print(f"   logged {len(frame)} / {expected}: lost {lost}; conversations with cross-talk or bad turn "
              f"numbers: {crosstalk}; client failures: {len(failures)}; write errors: {health['write_errors']}")
        print(f"   store refreshes under load: {len(refresh_ms)}, p50 {pct(refresh_ms, 50):.1f} ms, "
              f"p95 {pct(refresh_ms, 95):.1f} ms, max {max(refresh_ms):.1f} ms; rows seen live {seen_live[0]}")
        for f in failures[:5]:
            print("   failure:", f)
        ok = lost == 0 and crosstalk == 0 and not failures
        print("   RESULT:", "PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
