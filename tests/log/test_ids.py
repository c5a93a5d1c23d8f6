"""One id resolver for every command and staff route: a full id or a unique prefix of 6+
characters in any case; an ambiguous prefix lists the candidates; an unknown id is an error."""
from __future__ import annotations

import subprocess

import httpx
import pytest
from gradio_client import Client

from chatcore.log.ids import (AmbiguousConversation, ConversationNotFound, prefix_filter,
                              resolve_conversation_id)
from chatcore.log.records import make_record
from chatcore.log.writer import LogWriter
from conftest import PYTHON, ROOT

IDS = ["160e0e59-aaaa-4bbb-8ccc-000000000001", "160e0e59-bbbb-4bbb-8ccc-000000000002",
       "7f3a9c21-cccc-4ddd-8eee-000000000003", "Short1"]


def test_resolver_rules():
    known = prefix_filter(IDS)
    assert resolve_conversation_id(IDS[2], known) == IDS[2]
    assert resolve_conversation_id("7f3a9c", known) == IDS[2]
    assert resolve_conversation_id("7F3A9C21", known) == IDS[2]  # any case
    assert resolve_conversation_id("short1", known) == "Short1"  # a whole id in another case
    with pytest.raises(AmbiguousConversation) as amb:
        resolve_conversation_id("160e0e59", known)
    assert amb.value.candidates == sorted(IDS[:2]) and IDS[0] in str(amb.value)
    with pytest.raises(ConversationNotFound):
        resolve_conversation_id("7f3a9", known)  # too short to be a prefix
    with pytest.raises(ConversationNotFound):
        resolve_conversation_id("deadbeef", known)
    with pytest.raises(ValueError):
        resolve_conversation_id("bad id\n", known)


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "logs" / "chat_logs.jsonl"
    w = LogWriter(path)
    for cid in IDS[:3]:
        for turn in range(2):
            w.append(make_record(conversation_id=cid, turn=turn, user_text=f"hello {turn}", response="hi",
                                   latency_ms=5, source="widget", backend="echo"))
    w.close()
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "chatcore", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["export", "--conversation"], ["replay", "--space", "http://127.0.0.1:9"],
                                     ["forget", "--dry-run"], ["suite", "add", "s1"]])
def test_every_local_command_resolves_the_same_way(log, command):
    name, extra = command[0], command[1:]
    if name == "suite":
        run = lambda cid: _cli("suite", "add", "s1", cid, "--log", str(log))  # noqa: E731
    elif name == "export":
        run = lambda cid: _cli("export", "--conversation", cid, "--log", str(log))  # noqa: E731
    else:
        run = lambda cid: _cli(name, cid, *extra, "--log", str(log))  # noqa: E731
    unknown = run("deadbeef-0000")
    assert unknown.returncode == 2 and "no conversation" in unknown.stderr
    ambiguous = run("160e0e59")
    assert ambiguous.returncode == 2 and IDS[0] in ambiguous.stderr and IDS[1] in ambiguous.stderr
    if name == "replay":
        ok = run("7F3A9C21")  # resolved, then stopped at the unreachable Space: not a usage error
        assert ok.returncode == 1 and "no conversation" not in ok.stderr
    else:
        ok = run("7F3A9C21")
        assert ok.returncode == 0, ok.stderr
        shown = _cli("suite", "show", "s1", "--log", str(log)).stdout if name == "suite" else ok.stdout
        assert IDS[2] in shown


def test_staff_actions_resolve_prefixes_and_refuse_unknown_ids(space_factory, tmp_path):
    sp = space_factory(log_path=tmp_path / "logs" / "chat_logs.jsonl")
    for cid in IDS[:3]:
        Client(sp.url, verbose=False).predict(message={"text": "hi", "files": []}, conversation_id=cid,
                                              api_name="/chat")
    env_args = ["--space", sp.url, "--log", str(sp.log_path)]
    made_up = _cli("takeover", "made-up-id-0001", *env_args)
    assert made_up.returncode == 2 and "no conversation" in made_up.stderr
    short = _cli("takeover", "160e0e59", *env_args)
    assert short.returncode == 2 and IDS[0] in short.stderr
    took = _cli("takeover", "7f3a9c21", "--as", "Kim", *env_args)
    assert took.returncode == 0 and IDS[2] in took.stdout
    said = _cli("say", "7F3A9C", "hello from Kim", "--as", "Kim", *env_args)
    assert said.returncode == 0, said.stderr
    assert _cli("say", "nobody-here-01", "hi", "--as", "Kim", *env_args).returncode == 2
    assert _cli("handback", "nobody-here-01", "--as", "Kim", *env_args).returncode == 2
    assert _cli("handback", "7f3a9c", "--as", "Kim", *env_args).returncode == 0
    headers = {"X-Chat-Operator-Token": sp.token()}
    for route in ("take", "say", "handback"):
        res = httpx.post(f"{sp.url}/handoff/{route}", headers=headers, timeout=10,
                         json={"conversation_id": "made-up-id-0001", "staff": "Kim", "text": "x"})
        assert res.status_code == 404
    state = httpx.get(f"{sp.url}/handoff/state", params={"conversation_id": "made-up-id-0001"},
                      headers=headers, timeout=10)
    assert state.status_code == 404
    # no phantom takeover was written
    assert "made-up-id-0001" not in sp.log_path.read_text()
