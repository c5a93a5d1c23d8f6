"""Simulated visitors: drive a real Space through ``gradio_client`` to make demo traffic.

Each visitor runs in its own thread with its own :class:`SpaceClient` and its
own conversation UUID, asks a few plausible support questions and waits ``delay``
seconds (jittered) between turns, as a person would. Turns are logged with
``source=simulated`` (``SIMULATED_SOURCE``) unless another source is asked for, so
demo traffic is never mistaken for real visitors.
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from chatcore.remote.client import SpaceClient, SpaceError

#: The source simulated turns are logged with, unless the caller names another.
SIMULATED_SOURCE = "simulated"

# Questions a coffee roaster's web shop hears (the shop of the widget's demo page).
OPENERS = [
    "Hi! My order #{n} hasn't arrived yet. Can you check where it is?",
    "Do you ship to Canada? How long does delivery take?",
    "Which roast would you recommend for a moka pot?",
    "Can I pause my subscription for a month while I'm travelling?",
    "I received whole beans but I ordered ground coffee. What should I do?",
    "Is the Harbour Blend available decaf?",
    "How do I change the delivery address for my next subscription box?",
    "Do you sell gift cards?",
    "What's the difference between the Ethiopian and the Colombian single origin?",
    "Are you open on Mondays? I'd like to visit the roastery.",
    "I was charged twice for order #{n}.",
    "Can I book a place at Saturday's cupping session?",
]

FOLLOW_UPS = [
    "Thanks! How long does that usually take?",
    "Is there a fee for that?",
    "Could you send me a link to the page about it?",
    "What information do you need from me?",
    "I tried that already and it didn't work.",
    "Can I speak to someone from the team?",
    "Does that also apply to subscription orders?",
    "Will my next delivery still go out on time?",
    "And what grind would you suggest for a French press?",
]

#: A visitor with three or more questions ends with one of these.
CLOSERS = [
    "Great, that solved it. Thank you!",
    "Perfect, thanks for your help!",
    "OK, thanks. I'll wait for the email then.",
    "Brilliant, thanks a lot.",
    "That's all I needed, thank you.",
]


@dataclass
class SimulationResult:
    visitors: int = 0
    turns_ok: int = 0
    turns_failed: int = 0
    #: Round trips measured by the client (question sent to last word received), in ms; the Space
    #: logs its own reply time per turn (``latency_ms`` in the log), which leaves out the network.
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
        lat = (f"round trip p50 {p50:.0f} ms, p95 {p95:.0f} ms (client side: question sent to last word received)"
               if p50 is not None else "no round trip measured")
        text = (f"{self.visitors} visitor(s), {self.turns_ok} turn(s) answered, "
                f"{self.turns_failed} failed, {lat}, {self.elapsed_s:.1f} s")
        if self.errors:
            text += f"\nfirst error: {self.errors[0]}"
        return text


def visitor_script(rng: random.Random, turns: int) -> list[str]:
    """The questions one visitor asks: an opener, then follow-ups."""
    opener = rng.choice(OPENERS).format(n=rng.randint(10000, 99999))
    middle = turns - 2 if turns >= 3 else turns - 1
    follow = rng.sample(FOLLOW_UPS, k=min(max(0, middle), len(FOLLOW_UPS)))
    closer = [rng.choice(CLOSERS)] if turns >= 3 else []
    return [opener, *follow, *closer][:turns]


def simulate(url: str, visitors: int = 5, turns: int = 3, delay: float = 1.0,
             progress: Callable[[str], None] | None = None, seed: int | None = None,
             source: str = SIMULATED_SOURCE, timeout: float = 60.0) -> SimulationResult:
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
                say(f"visitor {index + 1:>3} turn {n}/{turns} [{cid[:8]}] {res.latency_ms:6.0f} ms round trip  {question[:60]}")
        finally:
            client.close()

    if visitors > 0:
        with ThreadPoolExecutor(max_workers=min(visitors, 64), thread_name_prefix="visitor") as pool:
            for fut in [pool.submit(visitor, i) for i in range(visitors)]:
                fut.result()
    result.elapsed_s = time.perf_counter() - started
    return result
