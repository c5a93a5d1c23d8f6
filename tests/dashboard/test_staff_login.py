"""Who is speaking comes from the login: staff accounts made with ``python -m chatcore
staff-account add``, a login as one in headless Chromium, a takeover on the Live page, and the
log line that records the account's name (visitors see CHAT_STAFF_DISPLAY_NAME when it is set)."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import PYTHON, ROOT
from test_console_e2e import ARGS, CHROMIUM, NOTICE, W, dashboard_stack, lines_of, open_conversation, visitor_page, visitor_says

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")

NAME, PASSWORD = "Ann Lee", "ann-password-123"


def add_account(accounts, name: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "chatcore", "staff-account", "add", name, "--stdin", "--file", str(accounts)],
                          cwd=ROOT, input=password + "\n", capture_output=True, text=True, timeout=60)


def test_staff_account_cli_writes_hashes_only(tmp_path):
    accounts = tmp_path / "staff" / "accounts"
    assert add_account(accounts, NAME, PASSWORD).returncode == 0
    assert add_account(accounts, "Bob", "bob-password-1").returncode == 0
    changed = add_account(accounts, NAME, "ann-new-password")
    assert changed.returncode == 0 and "changed the password" in changed.stdout
    text = accounts.read_text()
    assert PASSWORD not in text and "ann-new-password" not in text and "bob-password-1" not in text
    assert [line.split(":")[0] for line in text.splitlines()] == ["Bob", NAME]
    assert oct(accounts.stat().st_mode & 0o777) == "0o600"
    from chatcore.dashboard.auth import login_config

    config = login_config(env={"CHAT_STAFF_ACCOUNTS": str(accounts)}, secrets={})
    assert config.check(NAME, "ann-new-password") == NAME and config.check(NAME, PASSWORD) is None
    short = add_account(accounts, "Cy", "short")
    bad = add_account(accounts, "x:y", "long-enough-1")
    assert short.returncode == bad.returncode == 2 and "8 characters" in short.stderr and "x:y" in bad.stderr
    # the password is never an argument
    no_file = subprocess.run([PYTHON, "-m", "chatcore", "staff-account", "add", "Cy", "--stdin"], cwd=ROOT,
                             input="long-enough-1\n", capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "CHAT_STAFF_ACCOUNTS"})
    assert no_file.returncode == 2 and "CHAT_STAFF_ACCOUNTS" in no_file.stderr


@pytest.fixture
def stack(tmp_path):
    """``python -m chatcore dashboard`` with staff accounts, and the widget's host page."""
    accounts = tmp_path / "accounts"
    assert add_account(accounts, NAME, PASSWORD).returncode == 0
    with dashboard_stack(tmp_path, {"CHAT_STAFF_ACCOUNTS": str(accounts),
                                    "CHAT_STAFF_DISPLAY_NAME": "Support team"}) as running:
        yield running


def test_the_logged_in_account_is_who_takes_over(stack):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            visitor = visitor_page(browser, stack)
            visitor_says(visitor, "hello")
            cid = visitor.evaluate("window.ChatOperatorWidget.conversationId")
            visitor.locator(f"{W} .handoff").click()
            visitor.locator(f"{W} .msg.note", has_text=NOTICE).wait_for()

            ctx = browser.new_context(viewport={"width": 1440, "height": 1100}, timezone_id="UTC")
            ctx.set_default_timeout(20_000)
            agent = ctx.new_page()
            agent.goto(stack["url"] + "/live")
            agent.get_by_label("Name", exact=True).fill(NAME)
            agent.get_by_label("Password", exact=True).fill("wrong-password")
            agent.get_by_role("button", name="Log in").click()
            agent.get_by_text("Wrong name or password.").wait_for()
            assert agent.get_by_label("Name", exact=True).input_value() == NAME  # kept; the password is not
            agent.get_by_label("Password", exact=True).fill(PASSWORD)
            agent.get_by_role("button", name="Log in").click()
            agent.get_by_text("Conversations now", exact=False).first.wait_for(timeout=60_000)
            # The name comes from the login: no free field to speak as someone else.
            agent.get_by_text(f"You speak as {NAME}").wait_for()
            assert agent.get_by_label("Your staff name").count() == 0

            open_conversation(agent, cid)
            agent.get_by_role("button", name="Take over").click()
            agent.get_by_role("button", name="Hand back").wait_for()
            visitor.locator(f"{W} .msg.note", has_text="joined the chat").wait_for()
            note = visitor.locator(f"{W} .msg.note", has_text="joined the chat").first.inner_text()
            assert "Support team" in note and NAME not in note  # visitors see the display name
        finally:
            browser.close()
    taken = [r for r in lines_of(stack["log"], cid) if r.get("kind") == "handoff_taken"]
    assert [r.get("staff") for r in taken] == [NAME], taken
