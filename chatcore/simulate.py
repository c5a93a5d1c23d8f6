"""Simulated visitors: drive a real Space through ``gradio_client`` to make demo traffic.

Each visitor runs in its own thread with its own :class:`SpaceClient` and its
own conversation UUID, asks a few plausible support questions (``source=widget``)
and waits ``delay`` seconds (jittered) between turns, as a person would.
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from .client import SpaceClient, SpaceError

OPENERS = [
    "Hi, I can't log in to my account since this morning.",
    "Hello! How do I reset my password?",
    "My order #{n} hasn't arrived yet, can you check where it is?",
    "I was charged twice for my subscription this month.",
    "How can I change the email address on my account?",
    "Is there a way to export my invoices as PDF?",
    "The mobile app crashes when I open the settings page.",
    "Can I upgrade from the Basic plan to Pro in the middle of a billing cycle?",
    "Do you ship to Canada? What are the delivery times?",
    "I'd like to cancel my subscription, please.",
    "The verification code never reaches my phone.",
    "How do I add a colleague to our team workspace?",
]

FOLLOW_UPS = [
    "Thanks. And how long does that usually take?",
    "I tried that already and it didn't work.",
    "Could you send me a link to the relevant help article?",
    "Is there any fee for that?",
    "OK, what information do you need from me?",
    "It says 'error 403' when I try again.",
    "Can I talk to a human agent instead?",
    "Great, that solved it. Thank you!",
    "Will I lose my data if I do that?",
    "Which browser do you recommend?",
]


@dataclass
class SimulationResult:
    visitors: int = 0
    turns_ok: int = 0
    turns_failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    conversation_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        values = sorted(self.latencies_ms)
        k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
        return values[k]

    def summary(self) -> str:
        p50, p95 = self.percentile(0.5), self.percentile(0.95)
        lat = (f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms" if p50 is not None else "no latency measured")
        text = (f"{self.visitors} visitor(s), {self.turns_ok} turn(s) answered, "
                f"{self.turns_failed} failed, {lat}, {self.elapsed_s:.1f} s")
        if self.errors:
            text += f"\nfirst error: {self.errors[0]}"
        return text


def visitor_script(rng: random.Random, turns: int) -> list[str]:
    """The questions one visitor asks: an opener, then follow-ups."""
    opener = rng.choice(OPENERS).format(n=rng.randint(10000, 99999))
    follow = rng.sample(FOLLOW_UPS, k=min(max(0, turns - 1), len(FOLLOW_UPS)))
    return [opener, *follow][:turns]


def simulate(url: str, visitors: int = 5, turns: int = 3, delay: float = 1.0,
             progress: Callable[[str], None] | None = None, seed: int | None = None,
             source: str = "widget", timeout: float = 60.0) -> SimulationResult:
    """Run ``visitors`` visitors in parallel threads against the Space at ``url``."""
    result = SimulationResult(visitors=visitors)
    lock = threading.Lock()
    master = random.Random(seed)
    seeds = [master.randrange(2**32) for _ in range(visitors)]
    say = progress or (lambda line: None)
    started = time.perf_counter()

    def visitor(index: int) -> None:
        rng = random.Random(seeds[index])
        cid = str(uuid.uuid4())
        with lock:
            result.conversation_ids.append(cid)
        client = SpaceClient(url, timeout=timeout)
        try:
            for n, question in enumerate(visitor_script(rng, turns), start=1):
                if n > 1 and delay > 0:
                    time.sleep(delay * rng.uniform(0.5, 1.5))
                try:
                    res = client.send(question, conversation_id=cid, source=source)
                except SpaceError as exc:
                    with lock:
                        result.turns_failed += 1
                        result.errors.append(str(exc))
                    say(f"visitor {index + 1:>3} turn {n}: failed ({exc.kind}): {exc}")
                    continue
                with lock:
                    result.turns_ok += 1
                    result.latencies_ms.append(res.latency_ms)
                say(f"visitor {index + 1:>3} turn {n}/{turns} [{cid[:8]}] {res.latency_ms:6.0f} ms  {question[:60]}")
        finally:
            client.close()

    if visitors > 0:
        with ThreadPoolExecutor(max_workers=min(visitors, 64), thread_name_prefix="visitor") as pool:
            for fut in [pool.submit(visitor, i) for i in range(visitors)]:
                fut.result()
    result.elapsed_s = time.perf_counter() - started
    return result
