"""A hostile or broken Space watched by the mirror: it may lie about sizes, trickle bytes,
send a giant listing or an endless event line, or list names that are paths.

Each test starts a small HTTP server on 127.0.0.1 that plays that Space. The mirror must stay
under its byte cap, give up by its deadline, stay under a memory bound and write nothing
outside its folder; the CLI says what happened and exits non-zero.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chatcore.remote import mirror
from conftest import PYTHON, ROOT  # noqa: F401

TOKEN = "staff-hostile-token"
HEADER = "X-Chat-Operator-Token"
LINE = b'{"conversation_id":"c","turn":0,"user_text":"x","response":["y"],"ts":"2026-01-01T00:00:00Z"}\n'


def pattern(offset: int, n: int) -> bytes:
    """``n`` bytes of an endless log made of LINE, from ``offset``: the same bytes for the same offset."""
    start = offset % len(LINE)
    reps = (start + n) // len(LINE) + 1
    return (LINE * reps)[start:start + n]


class HostileSpace:
    """A Space that answers the staff routes as ``behave`` says; counts what it sent."""

    def __init__(self, listing, shard=None, events=None):
        self.listing, self.shard, self.events = listing, shard, events
        self.sent = 0  # body bytes of shards sent
        self.lock = threading.Lock()
        space = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.headers.get(HEADER) != TOKEN:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                try:
                    if path == "/staff/v1/log":
                        space.listing(self)
                    elif path.startswith("/staff/v1/shards/") and space.shard:
                        space.shard(self, int(params.get("offset", 0)), int(params.get("limit", 1 << 23)))
                    elif path == "/staff/v1/events" and space.events:
                        space.events(self)
                    else:
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the mirror hung up: what these tests want

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, n: int) -> None:
        with self.lock:
            self.sent += n

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_json(handler, obj, status=200) -> None:
    body = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def listing_of(*shards) -> callable:
    return lambda h: send_json(h, {"shards": [{"name": n, "size": s, "id": "a"} for n, s in shards],
                                   "annotations": []})


@pytest.fixture
def hostile():
    made = []

    def make(*args, **kwargs) -> HostileSpace:
        made.append(HostileSpace(*args, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


def cli(*args, env: dict, timeout: float = 120):
    import subprocess

    base = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    return subprocess.run([PYTHON, "-m", "chatcore", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def endless_shard(space_box: list, claimed: int, budget: int):
    """Serves any range asked of a log that never ends (the same bytes for the same offset), claiming
    ``claimed`` bytes; after ``budget`` bytes in all it answers 503 (a mirror without a cap would
    go on until the disk is full)."""
    def serve(h, offset, limit):
        space = space_box[0]
        if space.sent >= budget:
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        body = pattern(offset, limit)
        h.send_response(200)
        h.send_header("X-Chat-Size", str(claimed))
        h.send_header("X-Chat-Id", "a")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        space.count(len(body))
    return serve


# ------------------------------------------------------------------------ disk


@pytest.mark.parametrize("listed", [10**15, 1000], ids=["claims-a-petabyte", "lists-1000-bytes"])
def test_a_shard_larger_than_the_cap_stops_the_mirror_and_keeps_what_it_has(hostile, tmp_path, listed):
    cap = 3 << 20
    box: list = []
    sp = hostile(listing_of(("chat_logs.jsonl", listed)), shard=endless_shard(box, 10**15, budget=96 << 20))
    box.append(sp)
    cache = tmp_path / "cache"
    run = cli("conversations", "--log", sp.url, "--format", "json",
              env={"CHAT_OPERATOR_TOKEN": TOKEN, "CHAT_MIRROR_DIR": str(cache), "CHAT_MIRROR_MAX_BYTES": str(cap)})
    assert run.returncode != 0, run.stderr[-2000:]
    assert "CHAT_MIRROR_MAX_BYTES" in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
    shards = [p for p in cache.rglob("*.jsonl")]
    kept = sum(p.stat().st_size for p in shards)
    assert 0 < kept <= cap  # what fitted is kept: whole lines only
    assert all(p.read_bytes().endswith(b"\n") for p in shards if p.stat().st_size)
    assert sp.sent <= cap + (1 << 20)  # it did not ask for much more than fits


# ------------------------------------------------------------------------ time


def trickle(h, data: bytes, every: float) -> None:
    for i in range(len(data)):
        h.wfile.write(data[i:i + 1])
        h.wfile.flush()
        time.sleep(every)


BODY = LINE * 2


def trickling_shard(box: list):
    def serve(h, offset, limit):
        body = BODY[offset:offset + limit]
        h.send_response(200)
        h.send_header("X-Chat-Size", str(len(BODY)))
        h.send_header("X-Chat-Id", "a")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.flush()
        for i in range(len(body)):
            h.wfile.write(body[i:i + 1])
            h.wfile.flush()
            box[0].count(1)
            time.sleep(0.05)  # 190 bytes: about 10 s in all, each read well within any read timeout
    return serve


def trickling_listing(h) -> None:
    body = json.dumps({"shards": [{"name": "chat_logs.jsonl", "size": 0, "id": "a"}], "annotations": []}).encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + "X-Padding: " + "p" * 150 + "\r\n\r\n").encode()
    trickle(h, head, 0.05)  # the headers themselves, a byte at a time: about 10 s
    h.wfile.write(body)


@pytest.mark.parametrize("where", ["shard-body", "listing-headers"])
def test_a_trickling_space_is_given_up_at_the_deadline(hostile, tmp_path, where):
    box: list = []
    if where == "shard-body":
        sp = hostile(listing_of(("chat_logs.jsonl", len(BODY))), shard=trickling_shard(box))
    else:
        sp = hostile(trickling_listing)
    box.append(sp)
    cache = tmp_path / "cache"
    run = cli("conversations", "--log", sp.url, "--format", "json",
              env={"CHAT_OPERATOR_TOKEN": TOKEN, "CHAT_MIRROR_DIR": str(cache), "CHAT_MIRROR_TIMEOUT": "2"})
    assert run.returncode != 0, run.stderr[-2000:]
    assert "CHAT_MIRROR_TIMEOUT" in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stdout == ""
    if where == "shard-body":
        assert 0 < sp.sent < len(BODY)  # it hung up before the end
    assert not [p for p in cache.rglob("*.jsonl") if p.stat().st_size]


def test_the_folder_lock_is_released_when_a_request_runs_out_of_time(hostile, tmp_path):
    box: list = []
    sp = hostile(listing_of(("chat_logs.jsonl", len(BODY))), shard=trickling_shard(box))
    box.append(sp)
    m = mirror.Mirror([sp.url], TOKEN, tmp_path / "mirror", timeout=1.0)
    try:
        with pytest.raises(mirror.MirrorError) as err:
            m.sync()
        assert err.value.kind == "timeout" and "CHAT_MIRROR_TIMEOUT" in str(err.value)
        assert sp.sent < len(BODY)
        fd = os.open(m.folder / mirror.LOCK_FILE, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError while held
        finally:
            os.close(fd)
    finally:
        m.close()


# ------------------------------------------------------------------------ memory


MEMORY_BOUND = 40 << 20


def test_a_giant_listing_is_refused_within_a_memory_bound(hostile, tmp_path):
    giant = 200 << 20

    def listing(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Connection", "close")
        h.end_headers()
        entry = b'{"name":"a.jsonl","size":1,"id":"a"},'
        block = b'{"shards":[' + entry * ((1 << 20) // len(entry))
        sent = 0
        while sent < giant:
            h.wfile.write(block)
            sent += len(block)
            block = entry * ((1 << 20) // len(entry))
        h.wfile.write(b'{}],"annotations":[]}')

    sp = hostile(listing)
    m = mirror.Mirror([sp.url], TOKEN, tmp_path / "mirror")
    tracemalloc.start()
    try:
        with pytest.raises(mirror.MirrorError) as err:
            m.sync()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        m.close()
    assert "listing" in str(err.value) and err.value.kind == "protocol", err.value
    assert peak < MEMORY_BOUND, f"{peak / 1e6:.0f} MB traced while refusing a {giant >> 20} MB listing"


def test_an_endless_event_line_is_refused_within_a_memory_bound(hostile, tmp_path):
    line = 96 << 20
    done = threading.Event()

    def events(h):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"retry: 1000\n\ndata: ")
        block = b"x" * (1 << 20)
        try:
            for _ in range(line >> 20):
                h.wfile.write(block)
            h.wfile.write(b"\n\n")
        finally:
            done.set()

    sp = hostile(listing_of(), events=events)
    m = mirror.Mirror([sp.url], TOKEN, tmp_path / "mirror")
    tracemalloc.start()
    try:
        m.sync()
        m.start()
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
        while "event" not in (m.stats()["events_error"] or "") and time.monotonic() < deadline:
            time.sleep(0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        m.close()
    assert "event" in (m.stats()["events_error"] or ""), m.stats()
    assert peak < MEMORY_BOUND, f"{peak / 1e6:.0f} MB traced while refusing a {line >> 20} MB event line"


# ------------------------------------------------------------------------ names


HOSTILE_NAMES = ["nl.jsonl\n", "../escape.jsonl", "sub/dir.jsonl", ".hidden.jsonl", "nul\x00.jsonl",
                 "/abs.jsonl", "..", "a.jsonl/../../b.jsonl", "x" * 300 + ".jsonl"]


def test_hostile_names_in_a_listing_write_nothing_outside_the_folder(hostile, tmp_path):
    body = LINE * 3

    def serve(h, offset, limit):
        data = body[offset:offset + limit]
        h.send_response(200)
        h.send_header("X-Chat-Size", str(len(body)))
        h.send_header("X-Chat-Id", "a")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    names = [*HOSTILE_NAMES, "ok.jsonl"]
    sp = hostile(lambda h: send_json(h, {
        "shards": [{"name": n, "size": len(body), "id": f"i{i}"} for i, n in enumerate(names)],
        "annotations": [{"name": n, "size": len(body), "id": "f"} for n in ("feedback.jsonl\n", "../notes.jsonl")]}),
        shard=serve)
    (tmp_path / "work").mkdir()
    before = tree(tmp_path)
    m = mirror.Mirror([sp.url], TOKEN, tmp_path / "work" / "mirror")
    try:
        m.sync()
    finally:
        m.close()
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith("work/mirror/")}
    assert after == before
    folder = tmp_path / "work" / "mirror"
    inside = sorted(tree(folder))
    assert not [n for n in inside if "\n" in n or "\x00" in n]
    assert [n for n in inside if not n.startswith(".mirror")] == ["ok.jsonl"], inside
    assert (folder / "ok.jsonl").read_bytes() == body


def test_a_space_never_lists_or_serves_a_name_with_a_newline(space_factory, tmp_path):
    import httpx

    sp = space_factory(tmp_path / "space-data" / "chat_logs.jsonl", env={"CHAT_OPERATOR_TOKEN": TOKEN})
    evil = sp.log_path.parent / "evil.jsonl\n"
    evil.write_bytes(LINE)
    listing = httpx.get(sp.url + "/staff/v1/log", headers={HEADER: TOKEN}).json()
    assert "evil.jsonl\n" not in [s["name"] for s in listing["shards"]]
    resp = httpx.get(sp.url + "/staff/v1/shards/evil.jsonl%0A", headers={HEADER: TOKEN})
    assert resp.status_code == 404 and LINE not in resp.content
