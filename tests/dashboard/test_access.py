"""Who may open the dashboard: the login gate in dashboard.py and the launcher's bind check."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from chatcore.dashboard.auth import HOW_TO_CONFIGURE, hash_password, login_throttle
from chatcore.dashboard.launcher import check_access, read_secrets

from conftest import PYTHON, ROOT, apptest_knows_the_entry_navigates, free_port

ENTRY = str(ROOT / "dashboard.py")
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for name in ("CHAT_DASHBOARD_PASSWORD_HASH", "CHAT_DASHBOARD_PASSWORD", "CHAT_STAFF_ACCOUNTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHAT_TIMEZONE", "UTC")
    monkeypatch.setenv("CHAT_LOG_PATH", str(tmp_path / "chat.jsonl"))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    apptest_knows_the_entry_navigates(monkeypatch)
    login_throttle().reset()
    yield
    login_throttle().reset()
    st.cache_resource.clear()
    st.cache_data.clear()


def page_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [t.value for t in at.title] + [s.value for s in at.subheader] + [m.label for m in at.metric]
    parts += [c.value for c in at.caption] + [t.value for t in at.text] + [c.value for c in at.code]
    return "\n".join(str(p) for p in parts)


def test_password_mode_without_a_session_shows_only_the_way_to_log_in(monkeypatch):
    """The script checks the session cookie too: served without the gate in front (a bare
    ``streamlit run dashboard.py``, or AppTest, which sends no cookie), it shows nothing of the
    dashboard. Logging in itself is the /login page's (tests/dashboard/test_gate.py)."""
    monkeypatch.setenv("CHAT_DASHBOARD_PASSWORD_HASH", hash_password(PASSWORD))
    at = AppTest.from_file(ENTRY, default_timeout=30).run()
    assert not at.exception
    text = page_text(at)
    assert "Log in to the operator dashboard" in text
    # Nothing of the dashboard before login: no page, no settings in the sidebar.
    assert not at.metric and "Conversations today" not in text
    assert os.environ["CHAT_LOG_PATH"] not in text and os.environ["CHAT_SPACE_URL"] not in text
    assert not at.sidebar.code and not at.sidebar.get("html")
    assert not at.text_input  # the password is asked on /login, not here
    at.switch_page("pages/conversations.py").run()
    assert not at.exception and not at.metric and "Log in to the operator dashboard" in page_text(at)


def test_staff_accounts_alone_are_a_login(monkeypatch, tmp_path):
    accounts = tmp_path / "staff"
    accounts.write_text(f"# staff of the help desk\nAnn Lee:{hash_password(PASSWORD)}\n")
    monkeypatch.setenv("CHAT_STAFF_ACCOUNTS", str(accounts))
    at = AppTest.from_file(ENTRY, default_timeout=30).run()
    assert not at.exception and not at.metric
    assert "Log in to the operator dashboard" in page_text(at)
    check_access("0.0.0.0", env={"CHAT_STAFF_ACCOUNTS": str(accounts)}, secrets={})  # a login: any address


def test_no_login_configured_lets_in():
    at = AppTest.from_file(ENTRY, default_timeout=30).run()
    assert not at.exception
    assert any(m.label == "Conversations today" for m in at.metric)
    assert not any(b.label == "Log out" for b in at.sidebar.button)


def test_misconfigured_hash_shows_an_error_and_nothing_else(monkeypatch):
    monkeypatch.setenv("CHAT_DASHBOARD_PASSWORD_HASH", "not-a-hash")
    at = AppTest.from_file(ENTRY, default_timeout=30).run()
    assert not at.exception
    assert at.error and "misconfigured" in at.error[0].value
    assert not at.metric


def test_oidc_mode_asks_to_log_in(tmp_path):
    at = AppTest.from_file(ENTRY, default_timeout=30)
    at.secrets["auth"] = {"client_id": "x", "client_secret": "y", "redirect_uri": "http://localhost:8501/oauth2callback",
                          "cookie_secret": "z", "server_metadata_url": "https://id.example/.well-known/openid-configuration"}
    at.run()
    assert not at.exception
    assert any(b.label == "Log in" for b in at.button)
    assert not at.metric


# ------------------------------------------------------------------ the launcher


def test_check_access_rules(tmp_path):
    with pytest.raises(PermissionError) as err:
        check_access("0.0.0.0", env={}, secrets={})
    assert HOW_TO_CONFIGURE in str(err.value)
    check_access("127.0.0.1", env={}, secrets={})
    check_access("localhost", env={}, secrets={})
    check_access("0.0.0.0", env={"CHAT_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD)}, secrets={})
    check_access("0.0.0.0", env={}, secrets={"auth": {"client_id": "x", "server_metadata_url": "https://id/x"}})
    with pytest.raises(PermissionError):
        check_access("0.0.0.0", env={"CHAT_DASHBOARD_PASSWORD_HASH": "plain"}, secrets={})
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[dashboard]\npassword_hash = "%s"\n' % hash_password(PASSWORD))
    assert read_secrets([tmp_path / "missing.toml", secrets])["dashboard"]["password_hash"].startswith("scrypt$")
    check_access("0.0.0.0", env={}, secrets=read_secrets([secrets]))


def _env_without_login(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CHAT_DASHBOARD_PASSWORD_HASH", "CHAT_DASHBOARD_PASSWORD", "CHAT_STAFF_ACCOUNTS")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def test_cli_refuses_unprotected_public_bind(tmp_path):
    port = free_port()
    proc = subprocess.run(
        [PYTHON, "-m", "chatcore", "dashboard", "--host", "0.0.0.0", "--port", str(port), "--no-space",
         "--log", str(tmp_path / "chat.jsonl")],
        cwd=ROOT, env=_env_without_login(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing to serve the dashboard on 0.0.0.0" in proc.stderr and "hash-password" in proc.stderr
    assert "dashboard on http" not in proc.stdout  # nothing was started


def test_cli_with_a_password_gets_past_the_check(tmp_path):
    port = free_port()
    out = open(tmp_path / "out.txt", "wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "chatcore", "dashboard", "--host", "0.0.0.0", "--port", str(port), "--no-space",
         "--space-url", f"http://127.0.0.1:{free_port()}", "--log", str(tmp_path / "chat.jsonl")],
        cwd=ROOT, env=_env_without_login(CHAT_DASHBOARD_PASSWORD_HASH=hash_password(PASSWORD)),
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "dashboard on http" not in (tmp_path / "out.txt").read_text():
            assert proc.poll() is None, (tmp_path / "out.txt").read_text()
            time.sleep(0.1)
        assert f"dashboard on http://0.0.0.0:{port}" in (tmp_path / "out.txt").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
