"""Forget reaches the running Spaces: context, turn numbers, hand-off events and ratings of a
forgotten conversation leave every replica's memory, and the id starts afresh."""
from __future__ import annotations

import json
import subprocess
import time

import httpx
from gradio_client import Client

from conftest import PYTHON, ROOT
from openai_fake import CompletionsServer as _CompletionsServer
from test_takeover import wait_for

CARD = "4111-1111-1111-1111"
EMAIL = "kim.support@example.com"


def _chat(url: str, cid: str, text: str) -> str:
    return Client(url, verbose=False).predict(message={"text": text, "files": []}, conversation_id=cid,
                                              source="widget", api_name="/chat")


def _staff(sp, route: str, **body) -> httpx.Response:
    return httpx.post(f"{sp.url}/handoff/{route}", json=body, headers={"X-Chat-Operator-Token": sp.token()},
                      timeout=10)


def _poll(sp, cid: str) -> dict:
    return httpx.get(f"{sp.url}/handoff/poll", params={"conversation_id": cid}, timeout=10).json()


def _rate(sp, cid: str, turn: int) -> httpx.Response:
    return httpx.post(f"{sp.url}/feedback", json={"conversation_id": cid, "turn": turn, "rating": "down"},
                      timeout=10)


def _until(check, what: str):
    return wait_for(check, timeout=30.0, what=what)


def test_forget_while_two_replicas_run(space_factory, tmp_path):
    log = tmp_path / "shared" / "chat_logs.jsonl"
    with _CompletionsServer() as model:
        env = {"CHAT_RESPONDER": "openai", "OPENAI_BASE_URL": model.url, "OPENAI_MODEL": "tiny"}
        a = space_factory(log_path=log, env=env, args=["--replica", "a"])
        b = space_factory(log_path=log, env=env, args=["--replica", "b"])
        cid = "conv-forget-live-0001"
        _chat(a.url, cid, f"my card is {CARD}")
        _chat(b.url, cid, "did you get it?")
        assert CARD in json.dumps(model.requests[-1]["body"])  # B's context holds A's turn
        assert _staff(a, "take", conversation_id=cid, staff="Kim").status_code == 200
        assert _staff(a, "say", conversation_id=cid, staff="Kim", text=f"write to me at {EMAIL}").status_code == 200
        assert _staff(a, "handback", conversation_id=cid, staff="Kim").status_code == 200
        for sp in (a, b):
            _until(lambda sp=sp: EMAIL in json.dumps(_poll(sp, cid)), "the staff message on every replica")
            assert _rate(sp, cid, 0).status_code == 200

        out = subprocess.run([PYTHON, "-m", "chatcore", "forget", cid, "--log", str(log.parent)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr

        for sp in (a, b):
            _until(lambda sp=sp: _poll(sp, cid)["events"] == [], "the replica to drop the hand-off events")
            assert EMAIL not in json.dumps(_poll(sp, cid))
            assert _rate(sp, cid, 0).status_code == 404  # no rating of a forgotten turn
            staff_view = httpx.get(f"{sp.url}/handoff/state", params={"conversation_id": cid},
                                   headers={"X-Chat-Operator-Token": sp.token()}, timeout=10)
            assert staff_view.status_code == 404 and EMAIL not in staff_view.text
        annotations = log.parent / "annotations" / "feedback.jsonl"
        assert not annotations.exists() or cid not in annotations.read_text()

        sent_before = len(model.requests)
        _chat(a.url, cid, "hello again")
        first = model.requests[sent_before]["body"]
        assert CARD not in json.dumps(first) and EMAIL not in json.dumps(first)
        assert len(first["messages"]) <= 2  # a system prompt at most, then the new message
        _chat(b.url, cid, "anyone there?")
        second = json.dumps(model.requests[-1]["body"])
        assert CARD not in second and EMAIL not in second and "hello again" in second
        turns = [json.loads(line) for p in log.parent.glob("*.jsonl") for line in p.read_text().splitlines()]
        mine = sorted(r["turn"] for r in turns if r.get("conversation_id") == cid and "turn" in r)
        assert mine == [0, 1]  # numbered afresh, not as a continuation
        assert CARD not in "".join(p.read_text() for p in log.parent.rglob("*") if p.is_file())


def test_handoff_request_and_ratings_from_an_anonymous_client(space_factory, tmp_path):
    sp = space_factory(log_path=tmp_path / "logs" / "chat_logs.jsonl")

    def size() -> int:
        return sum(p.stat().st_size for p in sp.log_path.parent.rglob("*.jsonl"))

    before = size()
    for i in range(5):  # ids that never chatted cannot ask for a person
        res = httpx.post(f"{sp.url}/handoff/request", json={"conversation_id": f"never-chatted-{i}"}, timeout=10)
        assert res.status_code == 404
    assert size() == before

    cid = "conv-anon-0001"
    _chat(sp.url, cid, "hello")
    assert httpx.post(f"{sp.url}/handoff/request", json={"conversation_id": cid}, timeout=10).status_code == 200
    grown = size()
    for _ in range(5):  # asking again while waiting appends nothing
        assert httpx.post(f"{sp.url}/handoff/request", json={"conversation_id": cid}, timeout=10).json()["status"] \
            == "waiting"
    assert size() == grown

    feedback = sp.log_path.parent / "annotations" / "feedback.jsonl"
    for _ in range(10):
        assert _rate(sp, cid, 0).status_code == 200
    assert len(feedback.read_text().splitlines()) == 1  # one rating per turn and rater
    up = httpx.post(f"{sp.url}/feedback", json={"conversation_id": cid, "turn": 0, "rating": "up"}, timeout=10)
    assert up.status_code == 200
    assert [json.loads(x)["rating"] for x in feedback.read_text().splitlines()] == ["down", "up"]


def test_forget_on_the_space_leaves_no_copy_in_a_remote_dashboards_mirror(space_factory, tmp_path):
    from chatcore.log.records import make_record
    from chatcore.log.retention import forget
    from chatcore.log.writer import LogWriter
    from chatcore.remote import mirror
    from chatcore.store import LogStore

    token = "staff-forget-mirror"
    sp = space_factory(tmp_path / "space-data" / "chat_logs.jsonl", env={"CHAT_OPERATOR_TOKEN": token})
    cid = "conv-forget-mirror-01"
    _chat(sp.url, cid, f"my card is {CARD}")
    writer = LogWriter(sp.log_path)  # enough other turns for the dashboard's store to keep a cache
    for i in range(600):
        assert writer.append(make_record(conversation_id=f"bulk-{i % 40}", turn=i // 40, user_text="q" * 150,
                                         response="a" * 150, latency_ms=3, source="api", backend="echo"))
    writer.close()
    m = mirror.Mirror([sp.url], token, tmp_path / "laptop" / "mirror")
    try:
        m.sync()
        store = LogStore(m.folder)
        store.sync()
        store.close() if hasattr(store, "close") else None

        def copies() -> list[str]:
            return [str(p.relative_to(m.folder)) for p in m.folder.rglob("*")
                    if p.is_file() and CARD.encode() in p.read_bytes()]

        _until(lambda: any(".chatcore-cache" in c for c in copies()), "the store's cache (written aside)")
        forget(sp.log_path, cid, by="test")
        m.sync()
        assert copies() == []
        again = LogStore(m.folder)
        again.sync()
        time.sleep(1.0)  # its cache is written aside: give it the time to appear
        assert copies() == []  # and the store rebuilt from the mirror has none of it
    finally:
        m.close()
