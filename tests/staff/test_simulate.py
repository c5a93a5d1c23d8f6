"""Simulated visitors against a real Space, and the ``simulate`` command."""
from __future__ import annotations

import random
import subprocess
import sys
import uuid
from collections import defaultdict

from chatcore.staff.simulate import simulate, visitor_script

from conftest import ROOT, free_port


def test_visitor_script_is_plausible_and_repeatable():
    a = visitor_script(random.Random(7), 4)
    assert a == visitor_script(random.Random(7), 4)
    assert len(a) == 4 and len(set(a)) == 4 and all(q.strip() for q in a)
    assert "thank" in a[-1].lower()  # a visitor with several questions signs off last


def test_simulated_visitors_each_have_their_own_conversation(space):
    before = len(space.records())
    lines: list[str] = []
    result = simulate(space.url, visitors=4, turns=3, delay=0.05, progress=lines.append, seed=1)
    assert (result.turns_ok, result.turns_failed) == (12, 0)
    assert len(set(result.conversation_ids)) == 4 and all(uuid.UUID(c) for c in result.conversation_ids)
    assert len(lines) == 12 and "12 turn(s) answered" in result.summary()
    assert "round trip p50" in result.summary() and "client side" in result.summary()
    assert all("ms round trip" in line for line in lines)
    new = space.records()[before:]
    turns = defaultdict(list)
    for r in new:
        assert r["source"] == "simulated" and r["error"] is None  # never mistaken for real visitors
        turns[r["conversation_id"]].append(r["turn"])
    assert set(turns) == set(result.conversation_ids)
    assert all(sorted(t) == [0, 1, 2] for t in turns.values())


def test_simulate_command(space):
    out = subprocess.run(
        [sys.executable, "-m", "chatcore", "simulate", "--space", space.url,
         "--visitors", "2", "--turns", "2", "--delay", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "simulating 2 visitor(s) x 2 turn(s)" in out.stdout and "(source=simulated)" in out.stdout
    assert "4 turn(s) answered, 0 failed" in out.stdout and "round trip p50" in out.stdout


def test_simulate_command_source_flag(space):
    before = len(space.records())
    out = subprocess.run(
        [sys.executable, "-m", "chatcore", "simulate", "--space", space.url, "--visitors", "1", "--turns", "2",
         "--delay", "0", "--source", "widget", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    # turn lines only: a simulated visitor may ask for a person, which adds a hand-off event line
    turns = [r for r in space.records()[before:] if r.get("kind", "turn") == "turn"]
    assert [r["source"] for r in turns] == ["widget", "widget"]
    before_bad = len(space.records())
    bad = subprocess.run(
        [sys.executable, "-m", "chatcore", "simulate", "--space", space.url, "--source", "no spaces/allowed"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "--source" in bad.stderr
    assert len(space.records()) == before_bad  # a refused source sends nothing


def test_simulate_command_without_a_space():
    out = subprocess.run(
        [sys.executable, "-m", "chatcore", "simulate", "--space", f"http://127.0.0.1:{free_port()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert "not reachable" in out.stderr and "Traceback" not in out.stderr
