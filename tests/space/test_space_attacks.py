"""Attacks on a real Space over HTTP on 127.0.0.1: files, floods, forged staff, bad input.

Each test attacks the way a hostile caller would (raw HTTP, gradio_client) and checks what
must hold. Timings are printed (pytest -s), never asserted.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from chatcore.remote.client import SpaceClient, SpaceError

TOKEN = "staff-token-for-tests-0123456789"
FILE = {"meta": {"_type": "gradio.FileData"}}


def file_obj(path: str, **extra) -> dict:
    return {"path": path, **FILE, **extra}


def chat_raw(url: str, message: dict, cid: str = "", source: str = "api", headers: dict | None = None,
             session_hash: str | None = None, timeout: float = 60) -> tuple[int, str]:
    """``/gradio_api/call/chat`` as the widget calls it; returns (status, body or SSE text)."""
    body: dict = {"data": [message, cid, source]}
    if session_hash is not None:
        body["session_hash"] = session_hash
    r = httpx.post(url + "/gradio_api/call/chat", json=body, headers=headers or {}, timeout=timeout)
    if r.status_code != 200:
        return r.status_code, r.text
    event = r.json()["event_id"]
    s = httpx.get(f"{url}/gradio_api/call/chat/{event}", headers=headers or {}, timeout=timeout)
    return s.status_code, s.text


def completed(sse: str) -> str | None:
    """The final reply of an SSE stream, or None if it ended in an error."""
    if "event: complete" not in sse:
        return None
    data = sse.split("event: complete", 1)[1].split("data:", 1)[1].strip().splitlines()[0]
    return json.loads(data)[0]


def upload(url: str, name: str, content: bytes, headers: dict | None = None) -> str:
    r = httpx.post(url + "/gradio_api/upload", files={"files": (name, content)}, headers=headers or {},
                   timeout=30)
    assert r.status_code == 200, r.text
    return r.json()[0]


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def guarded(space_factory, tmp_path):
    """A Space with its own Gradio upload folder (to see what gets copied) and a known token."""

    def make(**env) -> "object":
        gradio_dir = tmp_path / "gradio-cache"
        base = {"GRADIO_TEMP_DIR": str(gradio_dir), "CHAT_OPERATOR_TOKEN": TOKEN}
        sp = space_factory(tmp_path / "logs" / "chat_logs.jsonl", env={**base, **env})
        sp.gradio_dir = gradio_dir
        return sp

    return make


# ----------------------------------------------------------------------- 1. server files


def test_no_route_hands_out_a_server_file(guarded, tmp_path):
    sp = guarded()
    assert completed(chat_raw(sp.url, {"text": "hello", "files": []}, "files-1")[1])
    secret_paths = ["/proc/self/environ", "/etc/passwd", str(sp.log_path), str(sp.output),
                    "../../../../../etc/passwd", "data/../../../../etc/hostname", "file:///etc/passwd",
                    "http://127.0.0.1:9/secret.txt", str(sp.log_path.parent / ".." / "logs" / "chat_logs.jsonl")]
    log_before = sp.log_path.read_bytes()
    links: list[str] = []
    for path in secret_paths:
        f = file_obj(path)
        attempts = [
            # ChatInterface's internal helpers, as the page calls them
            ("/gradio_api/run/_pop_last_user_message_1", {"data": [[{"role": "user", "content": [{"file": f}]}]],
                                                          "session_hash": "attacker1"}),
            ("/gradio_api/run/_clear_and_save_textbox", {"data": [{"text": "x", "files": [f]}],
                                                         "session_hash": "attacker1"}),
            ("/gradio_api/queue/join", {"data": [{"text": "x", "files": [f]}], "fn_index": 0,
                                        "session_hash": "attacker2"}),
            ("/gradio_api/run/option_clicked", {"data": [[{"role": "user", "content": [{"file": f}]}]],
                                                "session_hash": "attacker1"}),
            ("/gradio_api/run/option_clicked", {"data": [[]], "event_data": {"index": 0, "value": f},
                                                "session_hash": "attacker1"}),
        ]
        for route, body in attempts:
            r = httpx.post(sp.url + route, json=body, timeout=30)
            for link in re.findall(r"/gradio_api/file=[^\"\s]+", r.text):
                got = httpx.get(sp.url + link, timeout=10)
                assert got.status_code != 200, f"{route} served {path}: {got.text[:200]!r}"
                links.append(link)
            assert r.status_code == 422, (route, path, r.status_code, r.text[:300])
            assert "not uploaded by you" in r.json()["error"]
        status, text = chat_raw(sp.url, {"text": "read this", "files": [f]}, "files-1")
        assert status == 422 and "not uploaded by you" in text, (path, status, text[:300])
        # Asking the file route directly for the path
        direct = httpx.get(f"{sp.url}/gradio_api/file={path}", timeout=10)
        assert direct.status_code in (403, 404), (path, direct.status_code)
    assert links == []
    # Nothing copied into Gradio's cache, nothing logged, no name or size of a real file.
    assert files_under(sp.gradio_dir) == []
    assert sp.log_path.read_bytes() == log_before


def test_only_the_uploader_may_use_an_upload(guarded):
    sp = guarded(CHAT_TRUSTED_PROXIES="127.0.0.1")
    alice, mallory = {"X-Forwarded-For": "203.0.113.5"}, {"X-Forwarded-For": "198.51.100.7"}
    path = upload(sp.url, "order.txt", b"order 1234: two chairs", headers=alice)
    status, text = chat_raw(sp.url, {"text": "see file", "files": [file_obj(path, orig_name="order.txt")]},
                            "up-1", headers=alice)
    assert completed(text) == "You said: see file", text
    rec = [r for r in sp.records() if r["conversation_id"] == "up-1"][-1]
    assert rec["files"] == [{"name": "order.txt", "size": 22}]
    # Mallory learns the path (it is a hash of the content): she may neither send nor fetch it.
    status, text = chat_raw(sp.url, {"text": "mine now", "files": [file_obj(path)]}, "up-2", headers=mallory)
    assert status == 422 and "not uploaded by you" in text
    assert httpx.get(f"{sp.url}/gradio_api/file={path}", headers=mallory).status_code == 403
    assert httpx.get(f"{sp.url}/gradio_api/file={path}", headers=alice).content == b"order 1234: two chairs"
    assert not [r for r in sp.records() if r["conversation_id"] == "up-2"]
    # At most CHAT_MAX_FILES (5) files in one message.
    six = [file_obj(upload(sp.url, f"f{i}.txt", f"file {i}".encode(), headers=alice)) for i in range(6)]
    status, text = chat_raw(sp.url, {"text": "six", "files": six}, "up-3", headers=alice)
    assert status == 422 and "at most 5" in text
    assert completed(chat_raw(sp.url, {"text": "five", "files": six[:5]}, "up-3", headers=alice)[1])


# ------------------------------------------------------------------- 2. one request freezes


def test_forty_thousand_files_are_refused_while_others_are_served(guarded):
    sp = guarded()
    entries = [file_obj(f"/tmp/x{i:05d}") for i in range(40_000)]
    big = json.dumps({"data": [{"text": "hi", "files": entries}, "flood", "api"]}).encode()
    assert len(big) > 2_000_000
    worst = [0.0]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            t0 = time.perf_counter()
            httpx.get(sp.url + "/healthz", timeout=60)
            worst[0] = max(worst[0], time.perf_counter() - t0)
            time.sleep(0.02)

    cid = f"calm-{uuid.uuid4().hex[:6]}"
    replies: list[str] = []

    def visitor():
        client = Client(sp.url, verbose=False)
        for i in range(3):
            replies.append(client.predict(message={"text": f"calm {i}", "files": []}, conversation_id=cid,
                                          api_name="/chat"))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            calm = pool.submit(visitor)
            bigs = [pool.submit(httpx.post, sp.url + "/gradio_api/call/chat", content=big,
                                headers={"Content-Type": "application/json"}, timeout=60) for _ in range(3)]
            statuses = [f.result().status_code for f in bigs]
            calm.result(120)
    finally:
        stop.set()
        poller.join()
    print(f"\n40,000-file message x3: statuses {statuses}; worst /healthz {worst[0] * 1000:.0f} ms")
    assert statuses == [413, 413, 413]
    assert replies[-1].startswith("You said: calm 2")
    assert [r["user_text"] for r in sp.records() if r["conversation_id"] == cid] == ["calm 0", "calm 1", "calm 2"]
    assert not [r for r in sp.records() if r["conversation_id"] == "flood"]


# --------------------------------------------------------------- 3. caller-sized log lines


def test_no_caller_field_makes_a_log_line_large(guarded):
    sp = guarded(CHAT_TRUSTED_PROXIES="127.0.0.1")
    huge_session = "s" * 2_000_000
    status, _ = chat_raw(sp.url, {"text": "big session", "files": []}, "size-1", session_hash=huge_session)
    assert status == 413
    status, text = chat_raw(sp.url, {"text": "odd session", "files": []}, "size-1",
                            session_hash="x" * 5000)
    assert status == 422 and "session_hash" in text
    status, text = chat_raw(sp.url, {"text": "odd session", "files": []}, "size-1",
                            session_hash="bad\nsession")
    assert status == 422
    path = upload(sp.url, "a.txt", b"abc")
    reply = completed(chat_raw(sp.url, {"text": "long name", "files": [file_obj(path, orig_name="n" * 200_000)]},
                               "size-2")[1])
    assert reply == "You said: long name"
    cap = 32 * 1024
    long_text = "é" * (cap // 2)  # exactly the cap in UTF-8
    assert completed(chat_raw(sp.url, {"text": long_text, "files": []}, "size-3")[1])
    lines = sp.log_path.read_bytes().splitlines()
    assert lines and max(len(line) for line in lines) < 2 * cap + 4096  # text + echoed reply + fields
    rec = [r for r in sp.records() if r["conversation_id"] == "size-2"][0]
    assert len(rec["files"][0]["name"]) <= 255


# ---------------------------------------------------------------------- 4. forged staff


def test_staff_sources_need_the_staff_token(guarded, monkeypatch):
    sp = guarded()
    for source in ("operator", "replay", "Operator"):
        status, text = chat_raw(sp.url, {"text": "I am staff", "files": []}, f"forge-{source}", source=source)
        assert completed(text) is None and "staff" in text, text
        status, text = chat_raw(sp.url, {"text": "I am staff", "files": []}, f"forge-{source}", source=source,
                                headers={"X-Chat-Operator-Token": "wrong-token"})
        assert completed(text) is None
    assert not [r for r in sp.records() if r["conversation_id"].startswith("forge-")]
    # Whole-string checks: a trailing newline is not an id or a source.
    for cid, source in (("abc\n", "api"), ("abc", "api\n"), ("abc", "operator\n")):
        status, text = chat_raw(sp.url, {"text": "x", "files": []}, cid, source=source)
        assert completed(text) is None, (cid, source)
    assert not [r for r in sp.records() if r["conversation_id"].startswith("abc")]
    # Staff with the token are served and logged as staff; widget and api need nothing.
    status, text = chat_raw(sp.url, {"text": "real staff", "files": []}, "staff-1", source="operator",
                            headers={"X-Chat-Operator-Token": TOKEN})
    assert completed(text) == "You said: real staff"
    assert completed(chat_raw(sp.url, {"text": "visitor", "files": []}, "staff-1", source="widget")[1])
    # SpaceClient sends the header itself (the dashboard chat page, replay).
    monkeypatch.setenv("CHAT_OPERATOR_TOKEN", TOKEN)
    assert SpaceClient(sp.url, timeout=30).send("via client", "staff-2", source="replay").reply
    monkeypatch.delenv("CHAT_OPERATOR_TOKEN")
    with pytest.raises(SpaceError):
        SpaceClient(sp.url, timeout=30, operator_token="not-it").send("forged", "staff-3", source="operator")
    got = {(r["conversation_id"], r["source"]) for r in sp.records()}
    assert {("staff-1", "operator"), ("staff-1", "widget"), ("staff-2", "replay")} <= got
    assert not [r for r in sp.records() if r["conversation_id"] == "staff-3"]


def test_token_file_is_created_beside_the_log_and_read_by_clients(space_factory, tmp_path, monkeypatch):
    monkeypatch.delenv("CHAT_OPERATOR_TOKEN", raising=False)
    sp = space_factory(tmp_path / "tok" / "chat_logs.jsonl")
    token_file = tmp_path / "tok" / ".chatcore-operator-token"
    assert token_file.exists() and oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert len(token_file.read_text().strip()) >= 32
    result = SpaceClient(sp.url, timeout=30, log_path=sp.log_path).send("from the dashboard", "tok-1",
                                                                         source="operator")
    assert result.reply == "You said: from the dashboard"
    with pytest.raises(SpaceError):  # a client that cannot read the token is not staff
        SpaceClient(sp.url, timeout=30, log_path=tmp_path / "elsewhere" / "log.jsonl").send(
            "x", "tok-2", source="operator")
    assert [r["source"] for r in sp.records()] == ["operator"]


# -------------------------------------------------------------------- 5. lone surrogates


def test_a_lone_surrogate_turn_is_answered_and_logged(guarded):
    sp = guarded()
    raw = '{"data": [{"text": "\\ud800abc", "files": []}, "sur-1", "api"]}'
    r = httpx.post(sp.url + "/gradio_api/call/chat", content=raw.encode(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    sse = httpx.get(f"{sp.url}/gradio_api/call/chat/{r.json()['event_id']}", timeout=30).text
    assert completed(sse) is not None
    recs = [rec for rec in sp.records() if rec["conversation_id"] == "sur-1"]
    assert [rec["user_text"] for rec in recs] == ["\ufffdabc"]
    assert recs[0]["response"] == "You said: \ufffdabc"
    assert sp.health()["write_errors"] == 0


# ------------------------------------------------------------- 6. context across restarts


def test_context_is_the_ids_own_turns_after_a_restart(space_factory, tmp_path):
    log = tmp_path / "ctx" / "chat_logs.jsonl"
    sp = space_factory(log)
    c = Client(sp.url, verbose=False)
    for t in ("x1", "x2"):
        c.predict(message={"text": t, "files": []}, conversation_id="ctx-x", api_name="/chat")
    sp.stop()
    sp2 = space_factory(log)
    c2 = Client(sp2.url, verbose=False)
    for t in ("y1", "y2", "y3"):  # this session's history now holds 3 exchanges of another id
        c2.predict(message={"text": t, "files": []}, conversation_id="ctx-y", api_name="/chat")
    reply = c2.predict(message={"text": "x3", "files": []}, conversation_id="ctx-x", api_name="/chat")
    assert reply == "You said: x3 (message 3 in this conversation)"
    assert [r["turn"] for r in sp2.records() if r["conversation_id"] == "ctx-x"] == [0, 1, 2]


def test_replicas_sharing_a_log_folder_share_context(tmp_path):
    from conftest import SpaceProcess

    folder = tmp_path / "shared"
    a = SpaceProcess(folder / "chat_logs.jsonl", args=["--replica", "a"]).start()
    b = SpaceProcess(folder / "chat_logs.jsonl", args=["--replica", "b"]).start()
    try:
        ask = lambda sp, text: Client(sp.url, verbose=False).predict(  # noqa: E731
            message={"text": text, "files": []}, conversation_id="rep-1", api_name="/chat")
        assert ask(a, "one") == "You said: one"
        assert ask(b, "two") == "You said: two (message 2 in this conversation)"
        assert ask(a, "three") == "You said: three (message 3 in this conversation)"
        assert ask(b, "four") == "You said: four (message 4 in this conversation)"
    finally:
        a.stop()
        b.stop()
    turns = []
    for shard in folder.glob("*.jsonl"):
        turns += [(json.loads(line)["turn"], json.loads(line)["user_text"])
                  for line in shard.read_text().splitlines()]
    assert sorted(turns) == [(0, "one"), (1, "two"), (2, "three"), (3, "four")]


# -------------------------------------------------------------------- 7. context memory


def test_context_memory_is_bounded_in_bytes(guarded):
    sp = guarded(CHAT_CONTEXT_MB="1")
    text = "w" * 30_000
    client = Client(sp.url, verbose=False)
    for i in range(40):  # ~2.4 MB of text and echoed replies
        client.predict(message={"text": text, "files": []}, conversation_id=f"mem-{i}", api_name="/chat")
    h = sp.health()
    assert 0 < h["context_bytes"] <= 1024 * 1024
    # The first conversation went cold; its context comes back from the log.
    reply = client.predict(message={"text": "again", "files": []}, conversation_id="mem-0", api_name="/chat")
    assert reply == "You said: again (message 2 in this conversation)"


# ------------------------------------------------------------------- 8. one client floods


def test_one_client_cannot_take_every_slot(guarded):
    sp = guarded(CHAT_CONCURRENCY="4", CHAT_CLIENT_CONCURRENCY="2", CHAT_ECHO_DELAY="0.25",
                 CHAT_TRUSTED_PROXIES="127.0.0.1")
    flooder = {"X-Forwarded-For": "198.51.100.66"}
    words = " ".join(f"w{i}" for i in range(16))  # ~4 s per reply

    def flood(i):
        r = httpx.post(sp.url + "/gradio_api/call/chat", headers=flooder, timeout=30,
                       json={"data": [{"text": words, "files": []}, f"flood-{i}", "api"]})
        return r.status_code, (r.json().get("event_id") if r.status_code == 200 else None)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(flood, range(20)))
    accepted = [e for s, e in results if s == 200]
    refused = [s for s, _ in results if s == 429]
    # The visitor (another address) is served while the flooder's streams are held open.
    t0 = time.perf_counter()
    visitor = Client(sp.url, verbose=False, headers={"X-Forwarded-For": "203.0.113.20"})
    job = visitor.submit(message={"text": "hello there", "files": []}, conversation_id="calm-v", api_name="/chat")
    first = None
    for chunk in job:
        if first is None:
            first = time.perf_counter() - t0
    final = job.result()
    print(f"\nflood: {len(accepted)} accepted, {len(refused)} refused (429); "
          f"visitor time to first token {first:.2f} s, whole reply {time.perf_counter() - t0:.2f} s")
    assert len(accepted) == 2 and len(refused) == 18
    assert final == "You said: hello there"
    for event in accepted:  # drain the flooder's streams so they finish
        httpx.get(f"{sp.url}/gradio_api/call/chat/{event}", headers=flooder, timeout=60)
    recs = sp.records()
    assert [r["user_text"] for r in recs if r["conversation_id"] == "calm-v"] == ["hello there"]
    assert len([r for r in recs if r["conversation_id"].startswith("flood-")]) == 2


# ---------------------------------------------------------------------------- 9. /feedback


def test_feedback_only_for_served_turns_rate_limited_and_400_for_garbage(guarded):
    sp = guarded(CHAT_FEEDBACK_PER_MINUTE="20")
    assert completed(chat_raw(sp.url, {"text": "rate me", "files": []}, "fb-real")[1])
    fb = sp.url + "/feedback"
    assert httpx.post(fb, json={"conversation_id": "fb-real", "turn": 0, "rating": "up"}).status_code == 200
    for cid, turn in (("fb-real", 1), ("fb-never", 0), ("fb-real", 99)):
        r = httpx.post(fb, json={"conversation_id": cid, "turn": turn, "rating": "down"})
        assert r.status_code == 404, (cid, turn, r.status_code)
    nested = httpx.post(fb, content=b"[" * 1000, headers={"Content-Type": "application/json"})
    assert nested.status_code == 400
    assert httpx.post(fb, content=b"{not json").status_code == 400
    statuses = [httpx.post(fb, json={"conversation_id": "fb-real", "turn": 0, "rating": "up"}).status_code
                for _ in range(30)]
    assert 429 in statuses and statuses.count(200) <= 20
    from chatcore.log import annotations

    ratings = annotations.load_feedback(sp.log_path)
    assert set(ratings["conversation_id"]) == {"fb-real"}


# ------------------------------------------------------------------------ 10. big uploads


def test_upload_over_the_cap_is_refused_while_receiving(guarded):
    cap = 2 * 1024 * 1024
    sp = guarded(CHAT_MAX_UPLOAD_BYTES=str(cap))
    sent = [0]
    boundary = "chatcoretestboundary"

    def body():
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        yield head
        chunk = b"z" * 65536
        for _ in range(300 * 16):  # 300 MB, never held in memory
            sent[0] += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    status = None
    try:
        r = httpx.post(sp.url + "/gradio_api/upload", content=body(), timeout=60,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        status = r.status_code
    except httpx.HTTPError:
        status = "closed"
    print(f"\n300 MB upload: {status} after {sent[0] / 1e6:.1f} MB sent")
    assert status in (413, "closed") and sent[0] < 300 * 1024 * 1024
    time.sleep(0.5)
    assert files_under(sp.gradio_dir) == []
    # With a declared length the refusal is immediate.
    r = httpx.post(sp.url + "/gradio_api/upload", files={"files": ("b.bin", b"z" * (cap + 100_000))})
    assert r.status_code == 413
    assert files_under(sp.gradio_dir) == []
    small = upload(sp.url, "ok.txt", b"fine")
    assert Path(small).read_bytes() == b"fine"
    content = os.urandom(cap - 50_000)  # under the cap, bigger than what is held in memory
    assert Path(upload(sp.url, "under.bin", content)).read_bytes() == content


# ---------------------------------------------------------------------------- 11. healthz


def test_healthz_is_public_only_in_counts_and_reports_failing_writes(space_factory, tmp_path):
    log = tmp_path / "blocked" / "chat_logs.jsonl"
    log.mkdir(parents=True)  # every write fails
    sp = space_factory(log, env={"CHAT_OPERATOR_TOKEN": TOKEN})
    public = httpx.get(sp.url + "/healthz").json()
    assert public["status"] == "ok"
    assert str(tmp_path) not in json.dumps(public) and "log_path" not in public and "responder" not in public
    Client(sp.url, verbose=False).predict(message={"text": "x", "files": []}, conversation_id="h-1",
                                          api_name="/chat")
    public = httpx.get(sp.url + "/healthz").json()
    assert public["status"] == "degraded" and public["write_errors"] == 1
    assert "last_write_error" not in public and str(tmp_path) not in json.dumps(public)
    wrong = httpx.get(sp.url + "/healthz", headers={"X-Chat-Operator-Token": "nope"}).json()
    assert "log_path" not in wrong
    staff = httpx.get(sp.url + "/healthz", headers={"X-Chat-Operator-Token": TOKEN}).json()
    assert staff["log_path"] == str(log) and staff["responder"] == "echo" and staff["last_write_error"]
    log.rmdir()
    Client(sp.url, verbose=False).predict(message={"text": "y", "files": []}, conversation_id="h-1",
                                          api_name="/chat")
    assert httpx.get(sp.url + "/healthz").json()["status"] == "ok"


# ------------------------------------------------------------------------------ 15. hf model


def test_hf_responder_sends_and_logs_the_configured_model(space_factory, tmp_path):
    from test_responders import _CompletionsServer

    with _CompletionsServer() as server:
        sp = space_factory(tmp_path / "hf" / "chat_logs.jsonl", args=["--responder", "hf"],
                           env={"HF_BASE_URL": server.url.removesuffix("/v1"), "HF_MODEL": "acme/support-7b"})
        reply = Client(sp.url, verbose=False).predict(message={"text": "hi", "files": []},
                                                      conversation_id="hf-1", api_name="/chat")
    assert reply.startswith("Model reply to: hi")
    assert server.requests[0]["body"]["model"] == "acme/support-7b"
    assert [r["model"] for r in sp.records()] == ["acme/support-7b"]


# -------------------------------------------------------------------------- closed routes


@pytest.mark.parametrize("method, route", [
    ("GET", "/gradio_api/proxy=http://127.0.0.1:9/x"),
    ("POST", "/gradio_api/component_server"),
    ("POST", "/gradio_api/process_recording"),
    ("GET", "/monitoring"),
    ("POST", "/gradio_api/stream/abc"),
])
def test_routes_the_space_does_not_use_are_closed(space, method, route):
    assert httpx.request(method, space.url + route, timeout=10).status_code == 404


def test_a_forged_x_forwarded_for_does_not_escape_the_per_client_cap(guarded):
    """Without CHAT_TRUSTED_PROXIES the header is ignored; with them, only the hop the proxy
    added counts, so names a client prepends to the header change nothing."""
    sp = guarded(CHAT_CLIENT_CONCURRENCY="2", CHAT_ECHO_DELAY="0.25")
    words = " ".join(f"w{i}" for i in range(12))

    def call(headers):
        r = httpx.post(sp.url + "/gradio_api/call/chat", headers=headers, timeout=30,
                       json={"data": [{"text": words, "files": []}, f"xff-{uuid.uuid4().hex[:6]}", "api"]})
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(call, [{"X-Forwarded-For": f"192.0.2.{i}"} for i in range(8)]))
    assert sorted(statuses) == [200, 200] + [429] * 6, statuses


def test_forged_hops_before_a_trusted_proxy_are_ignored(guarded):
    sp = guarded(CHAT_CLIENT_CONCURRENCY="2", CHAT_ECHO_DELAY="0.25", CHAT_TRUSTED_PROXIES="127.0.0.1")
    words = " ".join(f"w{i}" for i in range(12))

    def call(headers):
        r = httpx.post(sp.url + "/gradio_api/call/chat", headers=headers, timeout=30,
                       json={"data": [{"text": words, "files": []}, f"hop-{uuid.uuid4().hex[:6]}", "api"]})
        return r.status_code

    # The proxy (127.0.0.1) appends the real client, 198.51.100.9, after whatever the client sent.
    forged = [{"X-Forwarded-For": f"10.9.9.{i}, 198.51.100.9"} for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(call, forged))
    assert sorted(statuses) == [200, 200] + [429] * 6, statuses


def test_rate_limits_in_one_store_count_together_and_stay_apart_by_name(monkeypatch):
    """Two Spaces that name one store (CHAT_RATE_LIMIT_STORAGE=redis://…) share each client's
    allowance; limits of different names never mix."""
    from chatcore import rate_limits
    from chatcore.space.guard import RateLimit

    shared = rate_limits.storage("memory://")  # stands for the one store both Spaces name
    one, two = RateLimit(3, name="feedback", storage=shared), RateLimit(3, name="feedback", storage=shared)
    client = "198.51.100.7"
    assert [one.allow(client), two.allow(client), one.allow(client), two.allow(client)] == [True, True, True, False]
    assert RateLimit(3, name="handoff-request", storage=shared).allow(client)
    assert one.allow("198.51.100.8")
    # Each limit of a process counts on its own unless a store is named.
    assert RateLimit(3, name="feedback").allow(client)

    monkeypatch.setenv("CHAT_RATE_LIMIT_STORAGE", "nosuch://127.0.0.1")
    with pytest.raises(ValueError, match="CHAT_RATE_LIMIT_STORAGE"):
        rate_limits.storage()
