"""Access, PII masking and hostile input through /chat."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from hypothesis import given, settings, strategies as st

from chatcore.dashboard.auth import (check_bind_address, hash_password, is_loopback, login_config,
                           verify_password)
from chatcore.log.pii import mask_pii
from conftest import ROOT


# ------------------------------------------------------------------------------ PII

@pytest.mark.parametrize("text, hidden, kept", [
    ("write to jane.roe+orders@example.co.uk today", "jane.roe", "today"),
    ("call me on +44 20 7946 0958", "7946", "call me"),
    ("or (555) 123-4567 after six", "123-4567", "after six"),
    ("card 4111 1111 1111 1111 exp 12/27", "4111", "exp 12/27"),
    ("card 4111-1111-1111-1111", "1111-1111", "card"),
    ("number 0612345678", "0612345678", "number"),
])
def test_mask_pii_hides_contacts_and_cards(text, hidden, kept):
    masked = mask_pii(text)
    assert hidden not in masked and kept in masked and "[" in masked


@pytest.mark.parametrize("text", ["order 12345 shipped on 2026-11-21 at 10:30", "version 1.2.3", "room 42"])
def test_mask_pii_leaves_ordinary_numbers(text):
    assert mask_pii(text) == text


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_mask_pii_never_fails_and_is_idempotent(text):
    once = mask_pii(text)
    assert mask_pii(once) == once


# ------------------------------------------------------------------------------ login

def test_password_hash_roundtrip_and_constant_time_compare():
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert not verify_password("", stored)
    assert not verify_password("x", "garbage")
    assert hash_password("same") != hash_password("same")  # salted


def test_login_modes():
    assert login_config(env={}, secrets={}).mode == "none"
    assert login_config(env={"CHAT_DASHBOARD_PASSWORD": "pw"}, secrets={}).mode == "password"
    stored = hash_password("pw123456")
    cfg = login_config(env={"CHAT_DASHBOARD_PASSWORD_HASH": stored}, secrets={})
    assert cfg.mode == "password" and stored not in repr(cfg)
    oidc = {"auth": {"client_id": "x", "server_metadata_url": "https://idp/.well-known/openid-configuration"}}
    assert login_config(env={}, secrets=oidc).mode == "oidc"
    with pytest.raises(ValueError):
        login_config(env={"CHAT_DASHBOARD_PASSWORD_HASH": "plaintext"}, secrets={})


def test_no_login_means_loopback_only():
    none = login_config(env={}, secrets={})
    for host in ("127.0.0.1", "localhost", "::1"):
        assert is_loopback(host)
        check_bind_address(host, none)
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.com"):
        with pytest.raises(PermissionError, match="hash-password"):
            check_bind_address(host, none)
    check_bind_address("0.0.0.0", login_config(env={"CHAT_DASHBOARD_PASSWORD": "pw"}, secrets={}))


def test_hash_password_command():
    out = subprocess.run([sys.executable, "-m", "chatcore", "hash-password", "--stdin"], cwd=ROOT,
                         input="a long password\n", capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and verify_password("a long password", out.stdout.strip())
    out = subprocess.run([sys.executable, "-m", "chatcore", "hash-password", "--stdin"], cwd=ROOT,
                         input="short\n", capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "8 characters" in out.stderr


# ------------------------------------------------------------------------------ /chat

HOSTILE_TEXTS = [
    "<img src=x onerror=alert(1)>",
    "<script>document.location='http://127.0.0.1:9/'+document.cookie</script>",
    "![x](http://127.0.0.1:9/p.png) and [click](javascript:alert(1))",
    "bell \x07 escape \x1b[31mred\x1b[0m null \x00 end",
    "\u202eRTL override and emoji 🧨",
]


def test_hostile_text_is_stored_verbatim_as_data(space):
    client = Client(space.url, verbose=False)
    cid = f"hostile-{uuid.uuid4().hex[:8]}"
    for text in HOSTILE_TEXTS:
        client.predict(message={"text": text, "files": []}, conversation_id=cid, api_name="/chat")
    raw = space.log_path.read_bytes()
    lines = [json.loads(l) for l in raw.splitlines() if cid.encode() in l]
    assert [l["user_text"] for l in lines] == HOSTILE_TEXTS
    # Control characters are escaped inside the JSON string: one record, one line.
    assert all(b"\x1b" not in l and b"\x00" not in l for l in raw.splitlines())


def test_one_megabyte_message_is_refused(space):
    before = space.log_path.stat().st_size if space.log_path.exists() else 0
    with pytest.raises(AppError, match="too long"):
        Client(space.url, verbose=False).predict(message={"text": "A" * 1_000_000, "files": []},
                                                 conversation_id="mb-1", api_name="/chat")
    assert (space.log_path.stat().st_size if space.log_path.exists() else 0) == before


def test_invalid_source_is_refused(space):
    with pytest.raises(AppError, match="Invalid source"):
        Client(space.url, verbose=False).predict(message={"text": "hi", "files": []}, conversation_id="s-1",
                                                 source="<b>x</b>", api_name="/chat")


def test_write_time_redaction_is_off_by_default_and_works_when_on(space_factory, tmp_path):
    text = "my email is jane@example.com and card 4111 1111 1111 1111"
    plain = space_factory(tmp_path / "plain" / "log.jsonl")
    Client(plain.url, verbose=False).predict(message={"text": text, "files": []}, conversation_id="p1",
                                             api_name="/chat")
    assert plain.records()[0]["user_text"] == text
    red = space_factory(tmp_path / "red" / "log.jsonl", env={"CHAT_REDACT_PII": "1"})
    reply = Client(red.url, verbose=False).predict(message={"text": text, "files": []},
                                                   conversation_id="r1", api_name="/chat")
    assert "jane@example.com" in reply  # the visitor still sees their own text
    rec = red.records()[0]
    assert "jane@example.com" not in red.log_path.read_text() and "4111" not in red.log_path.read_text()
    assert rec["user_text"] == "my email is [email] and card [card]"
    assert red.health()["redact_pii"] is True


@pytest.mark.parametrize("cid, expected", [
    ("6f1c0d7e-aaaa-bbbb", "conversation-6f1c0d7e-aaaa-bbbb.md"),
    ("../../etc/passwd", "conversation-etc_passwd.md"),
    ("/abs/path\\win", "conversation-abs_path_win.md"),
    ("..", "conversation-conversation.md"),
])
def test_export_file_names_stay_in_the_download_folder(cid, expected):
    from chatcore.store.conversation_frames import export_file_name

    name = export_file_name(cid, "md")
    assert name == expected and "/" not in name and "\\" not in name and not name.startswith(".")


def test_space_url_credentials_never_shown():
    from chatcore.remote.client import SpaceClient, SpaceError, space_health
    from chatcore.config import display_url

    url = "http://operator:hunter2@127.0.0.1:9/?token=abc"
    assert display_url(url) == "http://127.0.0.1:9/"
    with pytest.raises(SpaceError) as info:
        SpaceClient(url, timeout=5).send("hi")
    assert "hunter2" not in str(info.value) and "abc" not in str(info.value)
    assert "hunter2" not in space_health(url)["error"]


# ------------------------------------------------------------------------ patterns


def test_no_pattern_lets_a_trailing_newline_through():
    """``$`` also matches before a final newline ("nl.jsonl\\n" passed a shard-name check and became
    a file name); a pattern that checks a name, id or tag from outside is matched whole
    (``fullmatch`` or ``\\Z``)."""
    import re

    sources = [*(ROOT / "chatcore").rglob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "dashboard.py", ROOT / "app.py"]
    dollar = re.compile(r"""re\.(?:compile|match|search|fullmatch)\(\s*r?b?(["'])(?:(?!\1).)*\$\1""")
    absorbed = re.compile(r"""\\s\*\$["']""")  # a final \s* takes the newline in anyway
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in sources
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if dollar.search(line) and not absorbed.search(line)]
    assert not offenders, offenders
