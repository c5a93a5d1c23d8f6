"""A deployed Space watched from elsewhere: the Space serves its log to token holders, the
dashboard and the CLI read it through a local mirror, staff actions go back to the Space.

Real processes on 127.0.0.1; the Space's data folder is never the dashboard's.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from chatcore.log import annotations
from chatcore.remote import mirror
from chatcore.log.records import make_record
from chatcore.log.writer import LogWriter
from conftest import PYTHON, ROOT, SpaceProcess, free_port, wait_http

TOKEN = "staff-" + uuid.uuid4().hex
HEADER = "X-Chat-Operator-Token"


def staff_space(space_factory, tmp_path, **kwargs) -> SpaceProcess:
    return space_factory(tmp_path / "space-data" / "chat_logs.jsonl",
                         env={"CHAT_OPERATOR_TOKEN": TOKEN, **kwargs.pop("env", {})}, **kwargs)


def chat(url: str, text: str, cid: str | None = None) -> str:
    cid = cid or str(uuid.uuid4())
    Client(url, verbose=False).predict(message={"text": text, "files": []}, conversation_id=cid,
                                       api_name="/chat")
    return cid


def cli(*args, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("CHAT_OPERATOR_TOKEN", "CHAT_LOG_PATH", "CHAT_LOG_URL", "CHAT_SPACE_URL")}
    return subprocess.run([PYTHON, "-m", "chatcore", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jsonl"))}


def turn(i: int, text: str = "question") -> dict:
    return make_record(conversation_id=f"bulk-{i % 50}", turn=i, user_text=f"{text} {i}",
                       response=f"answer {i}", latency_ms=3, source="api", backend="echo")


# ----------------------------------------------------------------------------- the CLI


def test_cli_conversations_over_the_url(space_factory, tmp_path):
    sp = staff_space(space_factory, tmp_path)
    ids = [chat(sp.url, f"hello remote {i}") for i in range(3)]
    mirror_dir = tmp_path / "laptop-cache"

    ok = cli("conversations", "--log", sp.url + "/", "--format", "json",
             env={"CHAT_OPERATOR_TOKEN": TOKEN, "CHAT_MIRROR_DIR": str(mirror_dir)})
    assert ok.returncode == 0, ok.stderr
    listed = {row["conversation_id"] for row in json.loads(ok.stdout)}
    assert listed == set(ids)
    # The copy is in the dashboard's cache folder, not in the Space's data folder.
    copies = list(mirror_dir.glob("*/chat_logs.jsonl"))
    assert len(copies) == 1 and copies[0].read_bytes() == sp.log_path.read_bytes()

    missing = cli("conversations", "--log", sp.url + "/", env={"CHAT_MIRROR_DIR": str(mirror_dir)})
    assert missing.returncode != 0
    assert "CHAT_OPERATOR_TOKEN" in missing.stderr and "Traceback" not in missing.stderr
    assert missing.stdout == ""

    wrong = cli("conversations", "--log", sp.url + "/",
                env={"CHAT_OPERATOR_TOKEN": "not-the-token", "CHAT_MIRROR_DIR": str(mirror_dir)})
    assert wrong.returncode != 0
    assert "401" in wrong.stderr and "Traceback" not in wrong.stderr
    assert "not-the-token" not in wrong.stderr

    # Our header works beside an Authorization header (a private Space's HF token).
    both = httpx.get(sp.url + "/staff/v1/log", headers={HEADER: TOKEN, "Authorization": "Bearer hf_other"})
    assert both.status_code == 200 and both.json()["shards"][0]["name"] == "chat_logs.jsonl"
    only_auth = httpx.get(sp.url + "/staff/v1/log", headers={"Authorization": f"Bearer {TOKEN}"})
    assert only_auth.status_code == 401 and only_auth.content == b""


def test_export_and_tail_over_the_url(space_factory, tmp_path):
    sp = staff_space(space_factory, tmp_path)
    cid = chat(sp.url, "export me please")
    env = {"CHAT_OPERATOR_TOKEN": TOKEN, "CHAT_MIRROR_DIR": str(tmp_path / "cache"), "CHAT_LOG_URL": sp.url}
    out = cli("export", "--conversation", cid, "--format", "jsonl", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["user_text"] == "export me please"

    stats = cli("stats", "--no-health", "--format", "json", env=env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["turns"] == 1

    # replay re-runs it against the Space; the link to the original is written by the Space.
    replay = cli("replay", cid, "--format", "json", env={**env, "CHAT_SPACE_URL": sp.url})
    assert replay.returncode == 0, replay.stderr
    replay_id = json.loads(replay.stdout)["replay_id"]
    assert annotations.load_annotations(sp.log_path)[cid]["replays"] == [replay_id]

    # tail follows the Space: a turn sent after it started shows up.
    proc = subprocess.Popen([PYTHON, "-m", "chatcore", "tail", "-n", "0", "--max", "1", "--seconds", "60",
                             "--colour", "never"], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        marker = f"tail-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:  # until tail has attached and prints it
            chat(sp.url, marker)
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                pass
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert marker in out


def test_first_sync_of_a_large_log_shows_progress(space_factory, tmp_path):
    sp = staff_space(space_factory, tmp_path)
    writer = LogWriter(sp.log_path)
    for i in range(12_000):
        writer.append(turn(i, "y" * 400))
    assert sp.log_path.stat().st_size > mirror.PROGRESS_FROM_BYTES
    env = {"CHAT_OPERATOR_TOKEN": TOKEN, "CHAT_MIRROR_DIR": str(tmp_path / "cache")}
    first = cli("conversations", "--log", sp.url, "--format", "json", env=env)
    assert first.returncode == 0, first.stderr
    assert "mirroring http://127.0.0.1" in first.stderr and "(100%)" in first.stderr
    assert len(json.loads(first.stdout)) == 50
    again = cli("conversations", "--log", sp.url, "--format", "json", env=env)  # nothing new: no progress
    assert again.returncode == 0 and "mirroring" not in again.stderr


def test_which_log_the_settings_read(monkeypatch, tmp_path):
    from chatcore.config import remote_log_spec

    for name in ("CHAT_LOG_URL", "CHAT_LOG_PATH", "CHAT_SPACE_URL", "CHAT_OPERATOR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert remote_log_spec() is None
    assert remote_log_spec("https://a.hf.space") == "https://a.hf.space"
    assert remote_log_spec(str(tmp_path / "x.jsonl")) is None
    monkeypatch.setenv("CHAT_SPACE_URL", "https://a.hf.space")
    assert remote_log_spec() is None  # no token: the Space is only for chat and health
    monkeypatch.setenv("CHAT_OPERATOR_TOKEN", TOKEN)
    assert remote_log_spec() == "https://a.hf.space"  # CHAT_SPACE_URL alone implies the log
    assert remote_log_spec(str(tmp_path / "x.jsonl")) is None  # a named local log wins
    monkeypatch.setenv("CHAT_LOG_PATH", str(tmp_path / "x.jsonl"))
    assert remote_log_spec() is None
    monkeypatch.setenv("CHAT_LOG_URL", "https://b.hf.space,https://c.hf.space")
    assert remote_log_spec() == "https://b.hf.space,https://c.hf.space"
    monkeypatch.delenv("CHAT_LOG_URL")
    monkeypatch.delenv("CHAT_LOG_PATH")
    monkeypatch.setenv("CHAT_SPACE_URL", "http://127.0.0.1:7860")
    assert remote_log_spec() is None  # a Space on this machine: its log file is read


def test_space_command_never_takes_a_url(tmp_path):
    out = cli("space", "--log", "https://a.hf.space", "--port", str(free_port()), env={}, timeout=60)
    assert out.returncode == 2 and "path" in out.stderr


# ------------------------------------------------------------------------ incremental


def test_mirror_is_incremental_and_survives_truncation_rotation_and_restart(space_factory, tmp_path):
    port = free_port()
    sp = staff_space(space_factory, tmp_path, port=port)
    chat(sp.url, "first turn through the Space")
    folder = sp.log_path.parent
    m = mirror.Mirror([sp.url], TOKEN, tmp_path / "laptop" / "mirror")
    try:
        m.sync()
        assert shard_bytes(m.folder) == shard_bytes(folder)

        # 1,000 more turns: only the new bytes travel (plus the few compared at the seam).
        writer = LogWriter(sp.log_path)  # the same writer the Space uses, in another process
        before_size = sp.log_path.stat().st_size
        for i in range(1000):
            assert writer.append(turn(i))
        received, requests = m.bytes_received, m.requests
        m.sync()
        grown = sp.log_path.stat().st_size - before_size
        assert m.bytes_received - received == grown + mirror.OVERLAP
        assert m.requests - requests == 2  # the listing and one range
        assert shard_bytes(m.folder) == shard_bytes(folder)

        # Nothing new: a listing only, no bytes.
        received = m.bytes_received
        m.sync()
        assert m.bytes_received == received

        # Truncated to fewer lines on the Space.
        lines = sp.log_path.read_bytes().splitlines(keepends=True)
        os.truncate(sp.log_path, sum(len(x) for x in lines[:10]))
        m.sync()
        assert shard_bytes(m.folder) == shard_bytes(folder)

        # Truncated and grown past the old size in place (same file): the seam check notices.
        os.truncate(sp.log_path, 0)
        for i in range(40):
            writer.append(turn(i, "rewritten"))
        assert sp.log_path.stat().st_size > sum(len(x) for x in lines[:10])
        m.sync()
        assert shard_bytes(m.folder) == shard_bytes(folder)
        assert b"rewritten 0" in (m.folder / "chat_logs.jsonl").read_bytes()

        # Replaced by another file.
        tmp = folder / "replacement.tmp"
        tmp.write_bytes(b"".join(json.dumps(turn(i, "replaced")).encode() + b"\n" for i in range(60)))
        os.replace(tmp, sp.log_path)
        m.sync()
        assert shard_bytes(m.folder) == shard_bytes(folder)

        # Rotated: renamed aside (still a shard), a new file takes its place. The rotated
        # shard is renamed in the copy, not fetched again.
        copied = (m.folder / "chat_logs.jsonl").stat().st_size
        chat(sp.url, "before the rotation")
        rotated = folder / "chat_logs.2026-01-01.jsonl"
        os.rename(sp.log_path, rotated)
        chat(sp.url, "after the rotation")
        received, renames = m.bytes_received, m.renames
        m.sync()
        assert shard_bytes(m.folder) == shard_bytes(folder)
        assert m.renames == renames + 1
        expected = (rotated.stat().st_size - copied + mirror.OVERLAP) + sp.log_path.stat().st_size
        assert m.bytes_received - received == expected

        # The Space stops (the network drops for the mirror), more is written, it comes back.
        sp.stop()
        with pytest.raises(mirror.MirrorError) as down:
            m.sync()
        assert down.value.kind == "unreachable"
        for i in range(100):
            writer.append(turn(i, "while down"))
        sp.start()
        chat(sp.url, "after the restart")
        received = m.bytes_received
        size_before = (m.folder / "chat_logs.jsonl").stat().st_size
        m.sync()
        assert shard_bytes(m.folder) == shard_bytes(folder)
        new_bytes = sp.log_path.stat().st_size - size_before
        assert m.bytes_received - received == new_bytes + mirror.OVERLAP
    finally:
        m.close()


def test_interrupted_first_sync_resumes(space_factory, tmp_path, monkeypatch):
    sp = staff_space(space_factory, tmp_path)
    writer = LogWriter(sp.log_path)
    for i in range(2000):
        writer.append(turn(i, "x" * 200))
    monkeypatch.setattr(mirror, "CHUNK", 64 * 1024)  # several requests for this shard
    m = mirror.Mirror([sp.url], TOKEN, tmp_path / "laptop" / "mirror")
    seen = []

    def drop_after_two_chunks(done, total):
        seen.append(done)
        if len(seen) == 2:
            raise ConnectionError("network dropped")

    try:
        with pytest.raises(ConnectionError):
            m.sync(progress=drop_after_two_chunks)
        have = (m.folder / "chat_logs.jsonl").stat().st_size
        total = sp.log_path.stat().st_size
        assert 0 < have < total
        received, requests = m.bytes_received, m.requests
        m.sync()
        assert shard_bytes(m.folder) == shard_bytes(sp.log_path.parent)
        # Only the rest travelled: per request at most the seam and one unfinished line again.
        again = m.bytes_received - received - (total - have)
        assert 0 <= again <= (m.requests - requests) * (mirror.OVERLAP + 600)
        assert m.bytes_received - received < total - have // 2
    finally:
        m.close()


def test_several_replicas_read_as_one_log(space_factory, tmp_path):
    a = space_factory(tmp_path / "a" / "chat_logs.jsonl", env={"CHAT_OPERATOR_TOKEN": TOKEN},
                      args=["--replica", "a"])
    b = space_factory(tmp_path / "b" / "chat_logs.jsonl", env={"CHAT_OPERATOR_TOKEN": TOKEN},
                      args=["--replica", "b"])
    ca, cb = chat(a.url, "to replica a"), chat(b.url, "to replica b")
    out = cli("conversations", "--log", f"{a.url},{b.url}", "--format", "json",
              env={"CHAT_OPERATOR_TOKEN": TOKEN, "CHAT_MIRROR_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert {r["conversation_id"] for r in json.loads(out.stdout)} == {ca, cb}

    # Annotations of both are read as one; a staff action goes to the first Space.
    httpx.post(b.url + "/staff/v1/annotations", headers={HEADER: TOKEN},
               json={"action": "note", "conversation_id": cb, "value": "noted on b"}).raise_for_status()
    m = mirror.attach(f"{a.url},{b.url}", token=TOKEN, folder=tmp_path / "one-log", follow=False)
    try:
        assert sorted(p.name for p in m.folder.glob("*.jsonl")) == sorted(
            f"{mirror._tag(u)}.chat_logs.{r}.jsonl" for u, r in ((a.url, "a"), (b.url, "b")))
        annotations.add_tag(m.folder, ca, "escalated", author="ann")
        assert annotations.load_annotations(a.log_path)[ca]["tags"] == {"escalated"}
        assert not (b.log_path.parent / "annotations" / "notes.jsonl").read_bytes().count(b"escalated")
        merged = annotations.load_annotations(m.folder)
        assert merged[ca]["tags"] == {"escalated"} and merged[cb]["notes"][0][2] == "noted on b"
        # New lines are appended to the merged copy (readers keep their place), not a new file.
        notes = m.folder / "annotations" / "notes.jsonl"
        inode = notes.stat().st_ino
        annotations.add_tag(m.folder, cb, "bug", author="ann")
        assert notes.stat().st_ino == inode
        assert annotations.load_annotations(m.folder)[cb]["tags"] == {"bug"}
    finally:
        mirror.close_all()


# ---------------------------------------------------------------- staff actions, dashboards


def test_two_dashboards_on_one_space_share_a_note(space_factory, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import apptest_knows_the_entry_navigates

    sp = staff_space(space_factory, tmp_path)
    cid = chat(sp.url, "a question staff will annotate")
    apptest_knows_the_entry_navigates(monkeypatch)
    monkeypatch.setenv("CHAT_TIMEZONE", "UTC")
    monkeypatch.setenv("CHAT_OPERATOR_TOKEN", TOKEN)
    monkeypatch.setenv("CHAT_LOG_URL", sp.url)
    monkeypatch.delenv("CHAT_LOG_PATH", raising=False)
    monkeypatch.setenv("CHAT_SPACE_URL", sp.url)
    entry = str(ROOT / "dashboard.py")

    def dashboard(name: str) -> AppTest:
        monkeypatch.setenv("CHAT_MIRROR_DIR", str(tmp_path / name))  # each dashboard its own copy
        at = AppTest.from_file(entry, default_timeout=60)
        at.query_params["conversation"] = cid
        at.run()
        assert not at.exception, at.exception
        at.switch_page("pages/conversations.py").run()
        assert not at.exception, at.exception
        return at

    try:
        one = dashboard("one")
        note = f"called back {uuid.uuid4().hex[:6]}"
        one.text_area(key="conv_note_text").input(note)
        next(b for b in one.button if b.label == "Save note").click().run()
        assert not one.exception and not one.error, (one.exception, [e.value for e in one.error])
        # Written by the Space, in the Space's folder; the copy of dashboard one has it too.
        assert annotations.load_annotations(sp.log_path)[cid]["notes"][0][2] == note
        assert note in [t.value for t in one.text]

        two = dashboard("two")
        assert not (tmp_path / "two").samefile(tmp_path / "one")
        deadline = time.monotonic() + 10
        while note not in [t.value for t in two.text] and time.monotonic() < deadline:
            time.sleep(0.3)
            two.run()
        assert note in [t.value for t in two.text]
        # Nothing was written into either dashboard's copy by hand: they hold the Space's file.
        space_notes = (sp.log_path.parent / "annotations" / "notes.jsonl").read_bytes()
        for name in ("one", "two"):
            (copy,) = (tmp_path / name).glob("*/annotations/notes.jsonl")
            assert copy.read_bytes() == space_notes
    finally:
        mirror.close_all()
        import streamlit as st

        st.cache_resource.clear()
        st.cache_data.clear()


def test_chat_page_of_a_remote_dashboard_sends_operator_turns(space_factory, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import apptest_knows_the_entry_navigates

    sp = staff_space(space_factory, tmp_path)
    apptest_knows_the_entry_navigates(monkeypatch)
    monkeypatch.setenv("CHAT_TIMEZONE", "UTC")
    monkeypatch.setenv("CHAT_OPERATOR_TOKEN", TOKEN)
    monkeypatch.setenv("CHAT_LOG_URL", sp.url)  # and no CHAT_SPACE_URL: the log's Space is the chat's
    monkeypatch.delenv("CHAT_LOG_PATH", raising=False)
    monkeypatch.delenv("CHAT_SPACE_URL", raising=False)
    monkeypatch.setenv("CHAT_MIRROR_DIR", str(tmp_path / "laptop"))
    try:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
        assert not at.exception, at.exception
        at.switch_page("pages/chat.py").run()
        cid = at.session_state["chat_cid"]
        at.chat_input(key="chat_prompt").set_value("from a laptop").run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        mine = [r for r in sp.records() if r["conversation_id"] == cid]
        assert [(r["user_text"], r["source"]) for r in mine] == [("from a laptop", "operator")]
    finally:
        mirror.close_all()
        import streamlit as st

        st.cache_resource.clear()
        st.cache_data.clear()


def test_event_stream_announces_each_write(space_factory, tmp_path):
    import queue
    import threading

    sp = staff_space(space_factory, tmp_path)
    chat(sp.url, "before listening")
    events: queue.Queue = queue.Queue()

    def listen():
        try:
            with httpx.stream("GET", sp.url + "/staff/v1/events", headers={HEADER: TOKEN},
                              timeout=httpx.Timeout(5, read=60)) as resp:
                events.put(resp.status_code)
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        events.put(json.loads(line[5:]))
        except httpx.HTTPError:
            pass

    threading.Thread(target=listen, daemon=True).start()
    assert events.get(timeout=10) == 200
    first = events.get(timeout=10)  # the listing as it is when the stream opens
    assert first["shards"][0]["size"] == sp.log_path.stat().st_size
    for text in ("one", "two"):
        chat(sp.url, text)
        want = sp.log_path.stat().st_size
        while True:
            listing = events.get(timeout=10)
            if listing["shards"][0]["size"] >= want:
                break
    # A staff note is announced too.
    httpx.post(sp.url + "/staff/v1/annotations", headers={HEADER: TOKEN},
               json={"action": "note", "conversation_id": "c-1", "value": "v"}).raise_for_status()
    while not events.get(timeout=10)["annotations"]:
        pass
    assert httpx.get(sp.url + "/staff/v1/events").status_code == 401


def test_staff_action_needs_the_token_and_is_checked(space_factory, tmp_path):
    sp = staff_space(space_factory, tmp_path)
    cid = chat(sp.url, "hello")
    url = sp.url + "/staff/v1/annotations"
    assert httpx.post(url, json={"action": "tag", "conversation_id": cid, "value": "x"}).status_code == 401
    bad = httpx.post(url, headers={HEADER: TOKEN}, json={"action": "tag", "conversation_id": "../x", "value": "x"})
    assert bad.status_code == 400
    bad = httpx.post(url, headers={HEADER: TOKEN}, json={"action": "rm -rf", "conversation_id": cid})
    assert bad.status_code == 400
    ok = httpx.post(url, headers={HEADER: TOKEN}, json={"action": "tag", "conversation_id": cid,
                                                         "value": "Escalated", "author": "ann"})
    assert ok.status_code == 200
    assert annotations.load_annotations(sp.log_path)[cid]["tags"] == {"escalated"}


def test_canned_replies_need_the_token_and_are_shared_through_the_space(space_factory, tmp_path):
    """Written only by the Space, for holders of the operator token; a dashboard elsewhere
    saves, edits and deletes them there and reads them from its copy."""
    sp = staff_space(space_factory, tmp_path)
    chat(sp.url, "hello")
    url = sp.url + "/staff/v1/annotations"
    body = {"action": "snippet", "title": "Hours", "value": "We answer from 9 to 5."}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={HEADER: "staff-wrong"}).status_code == 401
    assert httpx.post(url, json={"action": "unsnippet", "snippet_id": "abc"}).status_code == 401
    assert not (sp.log_path.parent / "annotations" / "snippets.jsonl").exists()
    for bad in ({**body, "snippet_id": "../../etc/passwd"}, {**body, "title": ["x"]}, {**body, "value": ""},
                {"action": "unsnippet", "snippet_id": None}):
        assert httpx.post(url, json=bad, headers={HEADER: TOKEN}).status_code == 400, bad
    assert annotations.load_snippets(sp.log_path) == []

    m = mirror.attach(sp.url, token=TOKEN, folder=tmp_path / "dashboard-copy", follow=False)
    try:
        saved = annotations.save_snippet(m.folder, "Hours", "We answer from 9 to 5.", author="ann")
        assert [(s["snippet_id"], s["text"], s["author"]) for s in annotations.load_snippets(sp.log_path)] == \
            [(saved["snippet_id"], "We answer from 9 to 5.", "ann")]
        annotations.save_snippet(m.folder, "Hours", "We answer from 8 to 6.", snippet_id=saved["snippet_id"])
        for folder in (sp.log_path, m.folder):  # the Space's file and the dashboard's copy agree
            assert [s["text"] for s in annotations.load_snippets(folder)] == ["We answer from 8 to 6."]
        annotations.delete_snippet(m.folder, saved["snippet_id"])
        assert annotations.load_snippets(sp.log_path) == annotations.load_snippets(m.folder) == []
        assert (m.folder / "annotations" / "snippets.jsonl").read_bytes() == \
            (sp.log_path.parent / "annotations" / "snippets.jsonl").read_bytes()
    finally:
        mirror.close_all()


# ---------------------------------------------------------------------------- security


def _space_app(log_path: Path, monkeypatch):
    """The app the Space process builds, in this process, to list its routes."""
    from chatcore.llm.responders import make_responder
    from chatcore.config import Settings
    from chatcore.space.app import build_app

    monkeypatch.setenv("CHAT_OPERATOR_TOKEN", TOKEN)
    app, _service = build_app(Settings.from_env(log_path=log_path), make_responder("echo"))
    return app


def _all_routes(routes, prefix=""):
    from starlette.routing import Mount

    for r in routes:
        if isinstance(r, Mount):
            yield from _all_routes(r.routes, prefix + r.path)
        elif hasattr(r, "path"):
            yield prefix + r.path, sorted(getattr(r, "methods", None) or {"GET"})


def test_no_route_reveals_the_log_without_the_token(space_factory, tmp_path, monkeypatch):
    secret = f"secret-{uuid.uuid4().hex}"
    sp = staff_space(space_factory, tmp_path)
    chat(sp.url, secret)
    annotations.add_note(sp.log_path, "some-conversation", f"note {secret}")
    assert secret.encode() in sp.log_path.read_bytes()

    routes = list(_all_routes(_space_app(tmp_path / "elsewhere" / "chat_logs.jsonl", monkeypatch).routes))
    staff = [p for p, _m in routes if p.startswith("/staff/")]
    assert len(staff) >= 4
    fill = {"name": "chat_logs.jsonl", "path": str(sp.log_path), "file_path": str(sp.log_path),
            "filename": "chat_logs.jsonl"}
    checked = 0
    for path, methods in routes:
        concrete = path
        for key, value in fill.items():
            concrete = concrete.replace("{" + key + "}", value).replace("{" + key + ":path}", value)
        if "{" in concrete:
            concrete = concrete.split("{")[0] + "chat_logs.jsonl"
        for method in methods:
            if method in ("HEAD", "OPTIONS"):
                continue
            for headers in ({}, {HEADER: "wrong"}, {"Authorization": f"Bearer {TOKEN}"}):
                try:
                    resp = httpx.request(method, sp.url + concrete, headers=headers, timeout=5,
                                         params={"offset": "0"})
                    body = resp.content
                except httpx.ReadTimeout:
                    continue  # a stream that never sends anything reveals nothing either
                assert secret.encode() not in body, (method, concrete, headers)
                assert b"some-conversation" not in body, (method, concrete, headers)
                if concrete.startswith("/staff/"):
                    assert resp.status_code == 401 and body == b"", (method, concrete, resp.status_code)
                checked += 1
    assert checked > 20
    # The file route of the UI does not hand the log out either.
    for probe in (f"/gradio_api/file={sp.log_path}", f"/file={sp.log_path}"):
        assert secret.encode() not in httpx.get(sp.url + probe, timeout=5).content


def test_without_the_env_token_the_routes_do_not_exist(space_factory, tmp_path):
    log = tmp_path / "space-data" / "chat_logs.jsonl"
    log.parent.mkdir(parents=True)
    (log.parent / ".chatcore-operator-token").write_text("file-token\n")  # the file does not enable them
    env = {k: v for k, v in os.environ.items() if k != "CHAT_OPERATOR_TOKEN"}
    sp = SpaceProcess(log, env=env)
    sp.env.pop("CHAT_OPERATOR_TOKEN", None)
    sp.start()
    try:
        chat(sp.url, "hello")
        for token in ("file-token", TOKEN):
            resp = httpx.get(sp.url + "/staff/v1/log", headers={HEADER: token})
            assert resp.status_code != 200 or "shards" not in resp.text
            resp = httpx.get(sp.url + "/staff/v1/shards/chat_logs.jsonl", headers={HEADER: token})
            assert b"hello" not in resp.content
    finally:
        sp.stop()


def test_names_from_the_caller_never_reach_the_filesystem(space_factory, tmp_path):
    sp = staff_space(space_factory, tmp_path)
    chat(sp.url, "hello")
    outside = tmp_path / "space-data" / "outside.txt"
    outside.write_text("not a shard")
    (sp.log_path.parent / "link.jsonl").symlink_to(outside)
    (sp.log_path.parent / ".chatcore-operator-token").write_text("x\n")
    for bad in ("²", "-1", "1e9", "99999999999999999999999", ""):
        resp = httpx.get(sp.url + "/staff/v1/shards/chat_logs.jsonl", params={"offset": bad},
                         headers={HEADER: TOKEN})
        assert resp.status_code == 400, bad
    listing = httpx.get(sp.url + "/staff/v1/log", headers={HEADER: TOKEN}).json()
    assert [s["name"] for s in listing["shards"]] == ["chat_logs.jsonl"]
    for name in ("link.jsonl", "outside.txt", ".chatcore-operator-token", "..%2Fchat_logs.jsonl",
                 "%2E%2E%2Fspace-data%2Foutside.txt", "chat_logs.jsonl%00"):
        for kind in ("shards", "annotations"):
            resp = httpx.get(f"{sp.url}/staff/v1/{kind}/{name}", headers={HEADER: TOKEN})
            assert resp.status_code == 404, (kind, name)
            assert b"not a shard" not in resp.content


def test_plain_http_to_another_machine_is_refused():
    with pytest.raises(mirror.MirrorError) as err:
        mirror.parse_urls("http://space.example.org")
    assert "https" in str(err.value)
    assert mirror.parse_urls("https://a.hf.space/, http://127.0.0.1:7860") == [
        "https://a.hf.space", "http://127.0.0.1:7860"]


# ------------------------------------------------------------------------ live, browser


def test_live_page_in_chromium_over_the_remote_path(space_factory, tmp_path):
    from playwright.sync_api import sync_playwright

    sp = staff_space(space_factory, tmp_path)
    chat(sp.url, "warm up remote")
    port = free_port()
    env = {**os.environ, "CHAT_OPERATOR_TOKEN": TOKEN, "CHAT_MIRROR_DIR": str(tmp_path / "laptop"),
           "CHAT_TIMEZONE": "UTC", "CHAT_LIVE_REFRESH": "0.3"}
    env.pop("CHAT_LOG_PATH", None)
    out = open(tmp_path / "dashboard.out", "wb")
    proc = subprocess.Popen([PYTHON, "-m", "chatcore", "dashboard", "--port", str(port), "--log", sp.url],
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", timeout=90, proc=proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/live")
            page.wait_for_function("() => document.body.textContent.includes('warm up remote')", timeout=90_000)
            marker = f"remote-live-{uuid.uuid4().hex[:8]}"
            chat(sp.url, marker)
            page.wait_for_function("m => document.body.textContent.includes(m)", arg=marker, timeout=30_000)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        out.close()
    # The dashboard's copy is its own: nothing of it is in the Space's folder, and vice versa.
    assert not list(sp.log_path.parent.glob(".mirror*"))
    assert list((tmp_path / "laptop").glob("*/chat_logs.jsonl"))


def test_a_space_sending_more_than_asked_is_cut_off(tmp_path, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    line = b'{"conversation_id":"c","turn":0,"user_text":"x","response":["y"],"ts":"2026-01-01T00:00:00Z"}\n'

    class Flood(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.headers.get(HEADER) != TOKEN:
                self.send_response(401)
                self.end_headers()
                return
            if self.path.startswith("/staff/v1/log"):
                body = json.dumps({"shards": [{"name": "chat_logs.jsonl", "size": len(line) * 5000, "id": "a"}],
                                   "annotations": []}).encode()
            else:  # asked for at most CHUNK bytes, sends far more
                body = line * 5000
            self.send_response(200)
            self.send_header("X-Chat-Size", str(len(line) * 5000))
            self.send_header("X-Chat-Id", "a")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flood)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(mirror, "CHUNK", 4096)
    m = mirror.Mirror([f"http://127.0.0.1:{server.server_port}"], TOKEN, tmp_path / "mirror")
    try:
        m.sync()  # the flooded file is skipped (an error of that Space), nothing of it kept
        assert "more than was asked" in (m.last_error or "")
        assert m.bytes_received <= 4096 + 65536
        assert not (m.folder / "chat_logs.jsonl").exists() or (m.folder / "chat_logs.jsonl").stat().st_size == 0
    finally:
        m.close()
        server.shutdown()
        server.server_close()
