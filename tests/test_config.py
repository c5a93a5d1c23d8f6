"""The one settings definition: values from the environment, clear errors, secrets kept out of
sight, and the generated docs page."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chatcore.cli.config_docs import BEGIN, END, render
from chatcore.config import Settings, SettingsError, remote_log_spec, reveal

ROOT = Path(__file__).resolve().parent.parent

SECRETS = {
    "CHAT_OPERATOR_TOKEN": "op-token-5f1c",
    "OPENAI_API_KEY": "sk-openai-77aa",
    "HF_TOKEN": "hf_token_9b2e",
    "CHAT_SPACE_HF_TOKEN": "hf_space_4d0c",
    "CHAT_JUDGE_API_KEY": "sk-judge-31fe",
    "CHAT_DASHBOARD_PASSWORD": "hunter2-pw",
    "CHAT_DASHBOARD_PASSWORD_HASH": "scrypt$hash-of-pw",
    "CHAT_ALERT_WEBHOOKS": "https://hooks.example.org/T000/secret-path-1,slack:https://hooks.slack.com/s3cr3t",
    "CHAT_OTLP_HEADERS": "Authorization=Basic c2VjcmV0",
    "CHAT_RATE_LIMIT_STORAGE": "redis://:redis-pass@127.0.0.1:6379",
}


#: Parts of the values above that must never be shown.
SECRET_PARTS = ["op-token-5f1c", "sk-openai-77aa", "hf_token_9b2e", "hf_space_4d0c", "sk-judge-31fe", "hunter2-pw",
                "hash-of-pw", "secret-path-1", "s3cr3t", "c2VjcmV0", "redis-pass"]


def test_values_come_from_the_environment_typed():
    env = {"CHAT_MAX_FILES": " 7 ", "CHAT_REDACT_PII": "on",
           "CHAT_ALLOWED_ORIGINS": "https://a.example, https://b.example,",
           "CHAT_HANDOFF_TIMEOUT": "2.5", "CHAT_ALERT_ERRORS": "3 / 15", "CHAT_MIRROR_MAX_BYTES": "500M",
           "CHAT_ROTATE": "Daily", "CHAT_REPLICA_ID": "b", "CHAT_LOG_PATH": "/tmp/x/chat_logs.jsonl"}
    s = Settings.from_env(environ=env)
    assert s.max_files == 7 and s.redact_pii is True
    assert s.allowed_origins == ["https://a.example", "https://b.example"]
    assert s.handoff_timeout == 2.5 and s.alert_errors == (3, 15.0) and s.mirror_max_bytes == 500_000_000
    assert s.rotate == "daily" and s.shard_path == Path("/tmp/x/chat_logs.b.jsonl")
    # the program's own values win over the environment; None means "not given"
    assert Settings.from_env(environ=env, max_files=2, replica=None).max_files == 2
    assert Settings.from_env(environ=env, replica=None).replica == "b"


def test_blank_is_unset_except_where_empty_means_none():
    s = Settings.from_env(environ={"CHAT_MAX_FILES": "", "CHAT_SPACE_URL": "  ", "CHAT_HANDOFF_PHRASES": ""})
    assert s.max_files == 5 and s.space_url == "http://127.0.0.1:7860"
    assert s.handoff_phrases == ()  # set but empty: no phrase asks for a person
    assert "talk to a person" in Settings.from_env(environ={}).handoff_phrases


def test_the_environment_is_read_when_asked(monkeypatch):
    monkeypatch.setenv("CHAT_CONTEXT_MB", "64")
    assert Settings.from_env().context_mb == 64
    monkeypatch.setenv("CHAT_CONTEXT_MB", "65")
    assert Settings.from_env().context_mb == 65  # no cache keeps the old value
    monkeypatch.delenv("CHAT_CONTEXT_MB")
    assert Settings.from_env().context_mb == 256


def test_only_exact_variable_names_count():
    s = Settings.from_env(environ={"chat_max_files": "9", "max_files": "9", "log_url": "https://x.example",
                                   "CHAT_HOST": "10.0.0.1"})
    assert s.max_files == 5 and s.log_url is None
    assert s.host == "127.0.0.1" and s.app_host == "10.0.0.1"  # CHAT_HOST is app.py's, not the CLI's


@pytest.mark.parametrize("name, value, message", [
    ("CHAT_MAX_FILES", "abc", "CHAT_MAX_FILES must be a whole number, got 'abc'"),
    ("CHAT_HANDOFF_BOT_WHILE_WAITING", "sometimes",
     "CHAT_HANDOFF_BOT_WHILE_WAITING must be on or off (1/0, true/false), got 'sometimes'"),
    ("CHAT_HANDOFF_TIMEOUT", "0", "CHAT_HANDOFF_TIMEOUT must be a number of seconds above 0, got '0'"),
    ("CHAT_RESPONDER", "gpt", "CHAT_RESPONDER must be one of 'echo', 'openai' or 'hf', got 'gpt'"),
    ("CHAT_MIRROR_MAX_BYTES", "lots", "CHAT_MIRROR_MAX_BYTES must be a size such as 10G or 500M, got 'lots'"),
    ("CHAT_ALERT_ERRORS", "5", "CHAT_ALERT_ERRORS must be N/M (N errors in M minutes), e.g. 5/10, got '5'"),
    ("CHAT_OTLP_ENDPOINT", "collector:4318",
     "CHAT_OTLP_ENDPOINT must be an http:// or https:// URL (OTLP/HTTP, port 4318), got 'collector:4318'"),
])
def test_a_bad_value_names_the_variable_the_value_and_what_it_must_be(name, value, message):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ={name: value})
    assert str(caught.value) == message
    assert isinstance(caught.value, SystemExit)  # uncaught, it ends the program with the message


def test_secrets_never_show_in_repr_str_or_errors():
    s = Settings.from_env(environ=SECRETS)
    assert reveal(s.operator_token) == SECRETS["CHAT_OPERATOR_TOKEN"]  # the program can still use them
    assert [reveal(h) for h in s.alert_webhooks] == SECRETS["CHAT_ALERT_WEBHOOKS"].split(",")
    shown = [repr(s), str(s), s.model_dump_json(), str(s.model_dump())]
    bad = {**SECRETS, "CHAT_MAX_FILES": "many", "CHAT_ALERT_WEBHOOKS": "https://hooks.example.org/secret-path-1"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ=bad, operator_token=123)  # a secret of the wrong type, given by the program
    shown.append(str(caught.value))
    assert "CHAT_MAX_FILES must be a whole number, got 'many'" in str(caught.value)
    assert "operator_token must be" in str(caught.value) and "(not shown: it is a secret)" in str(caught.value)
    for text in shown:
        for part in SECRET_PARTS:
            assert part not in text, f"{part!r} shows in {text[:80]!r}…"


def test_reading_settings_has_no_side_effect(tmp_path):
    log = tmp_path / "new" / "chat_logs.jsonl"
    threads = threading.active_count()
    s = Settings.from_env(environ={"CHAT_LOG_PATH": str(log), "CHAT_LOG_URL": "https://space.example"})
    assert s.log_path == log and s.remote_log_url == "https://space.example"
    assert list(tmp_path.iterdir()) == [] and threading.active_count() == threads


def test_remote_log_spec_keeps_a_url_in_chat_log_path(monkeypatch):
    for name in ("CHAT_LOG_URL", "CHAT_SPACE_URL", "CHAT_OPERATOR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHAT_LOG_PATH", "https://a.example,https://b.example")
    assert remote_log_spec() == "https://a.example,https://b.example"  # a Path would fold the "//"
    monkeypatch.setenv("CHAT_LOG_PATH", "./data/chat_logs.jsonl")
    assert remote_log_spec() is None
    monkeypatch.delenv("CHAT_LOG_PATH")
    monkeypatch.setenv("CHAT_SPACE_URL", "https://space.example")
    assert remote_log_spec() is None  # another machine's Space is the log only with the staff token
    monkeypatch.setenv("CHAT_OPERATOR_TOKEN", "t")
    assert remote_log_spec() == "https://space.example"


def test_the_cli_stops_on_a_bad_setting_with_the_message_and_no_traceback(tmp_path):
    env = {**os.environ, "CHAT_MAX_FILES": "abc", "CHAT_OPERATOR_TOKEN": "op-token-5f1c",
           "CHAT_LOG_PATH": str(tmp_path / "chat_logs.jsonl")}
    out = subprocess.run([sys.executable, "-m", "chatcore", "conversations"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "CHAT_MAX_FILES must be a whole number, got 'abc'" in out.stderr
    assert "Traceback" not in out.stderr and "op-token-5f1c" not in out.stderr


def test_config_docs_writes_between_the_markers_and_check_fails_when_stale(tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text(f"# Prose before\n\n{BEGIN}\nold table\n{END}\n\nProse after.\n", encoding="utf-8")
    run = [sys.executable, "-m", "chatcore", "config-docs", "--file", str(page)]
    stale = subprocess.run([*run, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1 and "config-docs" in stale.stderr
    assert "old table" in page.read_text(encoding="utf-8")  # --check writes nothing
    assert subprocess.run(run, cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Prose before\n") and text.endswith("Prose after.\n") and "old table" not in text
    assert "| `CHAT_MAX_FILES` | whole number | `5` |" in text and "## The dashboard" in text
    assert render(text) == text
    assert subprocess.run([*run, "--check"], cwd=ROOT, capture_output=True, timeout=120).returncode == 0
