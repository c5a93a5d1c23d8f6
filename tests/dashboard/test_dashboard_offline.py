"""The dashboard in headless Chromium: it works offline, the Overview refreshes by itself, and the
Live table fits a 1366 px wide screen.

``python -m chatcore dashboard`` runs on free loopback ports (the ``stack`` fixture of
test_dashboard_e2e.py). Every request the browser makes is recorded; anything not for
127.0.0.1 is refused and fails the test. Set ``DASHBOARD_LAYOUT_SHOTS=DIR`` to keep the
1366 px screenshots of Live and Overview for a look.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from test_dashboard_e2e import ARGS, CHROMIUM, stack, stack_env, wait_page  # noqa: F401 (fixtures)

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")

PAGES = ["", "chat", "live", "conversations"]
SHOTS = os.environ.get("DASHBOARD_LAYOUT_SHOTS")


def write_turns(log: Path, n: int, prefix: str = "q", error: str | None = None, source: str = "widget") -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        for i in range(n):
            f.write(json.dumps({
                "v": 1, "ts": now, "conversation_id": f"6f1c0d7e-{prefix}{i:03d}-4bbb-9ccc-1234567890ab", "turn": 0,
                "user_text": f"Do you ship to Canada? What are the delivery times for order {i}?",
                "files": [], "response": "We ship to Canada in 5 to 8 working days; shipping is free over $40.",
                "latency_ms": 212.0 + i, "source": source, "backend": "echo", "model": None, "error": error,
                "session": None}) + "\n")


def pictographs(text: str) -> set[str]:
    """Characters that need an emoji or symbol font (a blank box without one)."""
    return {ch for ch in text if 0x2190 <= ord(ch) <= 0x2BFF or ord(ch) >= 0x1F000}


def recording_context(browser, requests: list[str], width: int = 1366, height: int = 900):
    """A browser context that records every request and lets only loopback ones through."""
    context = browser.new_context(viewport={"width": width, "height": height}, timezone_id="UTC")

    def route(r):
        url = r.request.url
        requests.append(url)
        host = urlparse(url).hostname
        if url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    context.on("request", lambda req: requests.append(req.url))  # also those routing does not see
    return context


def test_no_request_leaves_the_machine(stack):
    """Every page, the favicon and a chat turn: all requests go to 127.0.0.1."""
    write_turns(stack["log"], 3)
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = recording_context(browser, requests).new_page()
            for name in PAGES:
                page.goto(f"{stack['url']}/{name}")
                wait_page(page)
                page.locator('[data-testid="stMainBlockContainer"]').first.wait_for(timeout=30_000)
                page.wait_for_timeout(1500)  # let late fetches (icons, fonts, charts) start
            page.goto(f"{stack['url']}/chat")
            box = page.get_by_placeholder("Type a test prompt…")
            box.wait_for(timeout=30_000)
            box.fill("Which roast is best for a moka pot?")
            box.press("Enter")
            page.get_by_text("You said: Which roast", exact=False).first.wait_for(timeout=30_000)
            icons = page.eval_on_selector_all("link[rel*='icon']", "els => els.map(e => e.href)")
        finally:
            browser.close()
    assert icons and all(i.startswith(("data:", stack["url"])) for i in icons), icons
    assert any(urlparse(u).hostname == "127.0.0.1" for u in requests)
    outside = sorted({u for u in requests if not u.startswith(("data:", "blob:"))
                      and urlparse(u).hostname != "127.0.0.1"})
    assert outside == [], outside


@pytest.mark.parametrize("stack_env", [{"CHAT_OVERVIEW_REFRESH": "1"}], ids=["refresh-1s"])
def test_overview_refreshes_by_itself(stack):
    """New turns in the log show on an open Overview without a reload or a click."""
    write_turns(stack["log"], 2, prefix="a")
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = recording_context(browser, requests).new_page()
            page.goto(stack["url"] + "/")
            wait_page(page)
            turns = page.locator('[data-testid="stMetric"]', has_text="Turns today").locator(
                '[data-testid="stMetricValue"]')
            sync_api.expect(turns).to_have_text("2", timeout=30_000)
            caption = page.get_by_text("refreshes every 1 s", exact=False).first
            caption.wait_for(timeout=10_000)
            url = page.url
            write_turns(stack["log"], 3, prefix="b")
            sync_api.expect(turns).to_have_text("5", timeout=30_000)  # no reload, no click
            assert page.url == url
        finally:
            browser.close()


def test_live_fits_1366_px_and_shows_no_emoji(stack):
    """At 1366 px the Live table shows every column (reply time and error too) without scrolling
    sideways; the sidebar does not break the Space URL; Live and Overview need no emoji font."""
    write_turns(stack["log"], 4, prefix="c")
    write_turns(stack["log"], 1, prefix="e", error="backend timed out after 30 s")
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = recording_context(browser, requests, width=1366, height=900).new_page()
            page.goto(stack["url"] + "/live")
            wait_page(page)
            grid = page.locator('[data-testid="stDataFrame"]').first
            grid.wait_for(timeout=30_000)
            page.locator('[data-testid="stDataFrame"] [role="gridcell"]', has_text="backend timed out").first.wait_for(
                state="attached", timeout=30_000)
            page.wait_for_timeout(1000)
            widths = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
                .map(s => [s.scrollWidth, s.clientWidth])""")
            assert widths and all(w[0] <= w[1] + 1 for w in widths), widths  # no table scrolls sideways
            headers = page.eval_on_selector_all('[data-testid="stDataFrame"] [role="columnheader"]',
                                                "els => els.map(e => e.textContent)")
            assert any("Reply time" in h for h in headers) and any("Error" in h for h in headers), headers
            cells = page.eval_on_selector_all('[data-testid="stDataFrame"] [role="gridcell"]',
                                              "els => els.map(e => e.textContent).join(' ')")
            assert "backend timed out" in cells
            assert not pictographs(" ".join(headers) + cells + page.locator("body").inner_text())
            url_box = page.locator('[data-testid="stSidebar"] .st-key-sidebar_space_url')
            url_box.wait_for(timeout=10_000)
            lines = page.evaluate("""() => {
                const el = document.querySelector('[data-testid="stSidebar"] .st-key-sidebar_space_url p');
                const h = parseFloat(getComputedStyle(el).lineHeight);
                return Math.round(el.getBoundingClientRect().height / h); }""")
            assert lines == 1, lines  # the URL is on one line, not cut inside the port
            if SHOTS:
                Path(SHOTS).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(SHOTS) / "live-1366.png"))
            page.locator('[data-testid="stSidebarNav"] a', has_text="Overview").click()
            page.get_by_text("Turns per hour").first.wait_for(timeout=30_000)
            wait_page(page)
            assert "Reply time p50" in page.locator("body").inner_text()
            assert not pictographs(page.locator("body").inner_text())
            if SHOTS:
                page.wait_for_timeout(1500)
                page.screenshot(path=str(Path(SHOTS) / "overview-1366.png"), full_page=True)
        finally:
            browser.close()
