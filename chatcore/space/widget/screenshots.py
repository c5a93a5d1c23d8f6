"""Screenshots of the widget on the demo page, for the docs.

    python -m chatcore.space.widget.screenshots [--space URL] [--out docs] [--chromium /usr/bin/chromium]

Without ``--space`` a temporary echo Space is started on a free loopback port
(and stopped again); the open panel shows a reply rated "Helpful" (one feedback line
is sent to that Space). Writes ``widget-closed.png``, ``widget-open.png`` and
``widget-mobile.png``; and ``widget-staff.png`` (a visitor asks for a person and a staff
member answers) when the Space has staff takeover and the staff token is known (the
temporary Space's token file, or ``$CHAT_OPERATOR_TOKEN`` for ``--space``).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_space(log_dir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatcore", "space", "--host", "127.0.0.1", "--port", str(port),
         "--log", str(log_dir / "chat_logs.jsonl")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("the Space did not start")


def staff_token(log_path: Path | None) -> str | None:
    """The staff token for the Space (None when unknown or the Space has no staff takeover)."""
    import importlib.util

    if importlib.util.find_spec("chatcore.space.handoff") is None:
        return None
    from chatcore.config import Settings, operator_token, reveal

    return operator_token(log_path) if log_path is not None else reveal(Settings.from_env().operator_token)


def _staff_shot(context, space: str, token: str, path: Path) -> None:
    """A visitor asks for a person; a staff member takes the conversation over and answers."""
    from chatcore.config import OPERATOR_TOKEN_HEADER

    page = context.new_page()
    page.goto(space + "/widget/demo")
    page.locator("#chat-operator-widget .launcher").click()
    box = page.locator("#chat-operator-widget textarea")
    box.fill("I was charged twice for order #53120. Can I talk to a person?")
    box.press("Enter")
    page.locator("#chat-operator-widget .msg.assistant:not(.greeting):not(.pending)").last.wait_for()
    cid = page.evaluate("() => Object.keys(localStorage).filter(k => k.endsWith(':conversation_id'))"
                        ".map(k => localStorage.getItem(k))[0]")
    headers = {OPERATOR_TOKEN_HEADER: token}
    for route, extra in (("take", {}), ("say", {"text": "Hi, I'm Maya from the roastery. I can see both payments "
                                                        "for #53120: I'm refunding the second one now, and you'll "
                                                        "get a confirmation e-mail."})):
        res = httpx.post(f"{space}/handoff/{route}", json={"conversation_id": cid, "staff": "Maya", **extra},
                         headers=headers, timeout=15)
        res.raise_for_status()
    page.locator("#chat-operator-widget .msg.staff").last.wait_for()
    page.mouse.move(0, 0)
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))


def take(space: str, out: Path, chromium: str, token: str | None = None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(space + "/widget/demo")
            page.locator("#chat-operator-widget .launcher").wait_for()
            shots.append(out / "widget-closed.png")
            page.screenshot(path=str(shots[-1]))

            page.locator("#chat-operator-widget .launcher").click()
            box = page.locator("#chat-operator-widget textarea")
            box.fill("Do you ship to Canada?")
            box.press("Enter")
            page.locator("#chat-operator-widget .msg.assistant:not(.greeting):not(.pending)").last.wait_for()
            page.wait_for_function(
                "() => !document.querySelector('#chat-operator-widget').shadowRoot"
                ".querySelector('.send').disabled")
            # Rate the reply, so the thumbs show their pressed state.
            page.locator("#chat-operator-widget .msg.assistant:not(.greeting) .thumb[data-rating=up]").last.click()
            page.wait_for_function(
                "() => document.querySelector('#chat-operator-widget').shadowRoot"
                ".querySelector('.thumb[aria-pressed=true]')")
            box.fill("Which roast is best for a moka pot?")
            page.mouse.move(0, 0)
            shots.append(out / "widget-open.png")
            page.screenshot(path=str(shots[-1]))

            # Same context (same localStorage): the transcript is restored after the reload.
            mobile = context.new_page()
            mobile.set_viewport_size({"width": 390, "height": 760})
            mobile.goto(space + "/widget/demo")
            mobile.locator("#chat-operator-widget .launcher").click()
            mobile.locator("#chat-operator-widget .msg.user").last.wait_for()  # transcript restored
            shots.append(out / "widget-mobile.png")
            mobile.screenshot(path=str(shots[-1]))

            if token:
                shots.append(out / "widget-staff.png")
                _staff_shot(browser.new_context(viewport={"width": 1280, "height": 800}), space, token, shots[-1])
        finally:
            browser.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", help="a running Space (default: start a temporary echo Space)")
    ap.add_argument("--out", default="docs", help="folder for the PNG files (default docs)")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args(argv)
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        space = args.space
        if not space:
            proc, space = _start_space(Path(tmp))
        try:
            token = staff_token(None if args.space else Path(tmp) / "chat_logs.jsonl")
            for shot in take(space.rstrip("/"), Path(args.out), args.chromium, token):
                print(shot)
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
