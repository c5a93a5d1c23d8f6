"""Screenshots of every dashboard page for the README, taken from the demo.

    .venv/bin/python docs/screenshots.py [--out docs] [--width 1440] [--chromium /usr/bin/chromium]

Starts ``python -m chatcore dashboard --demo`` on free loopback ports with a fresh
temporary log and a password (so the login page can be shown too). The Space answers
through a small OpenAI-compatible server started here with the answers of a coffee
shop's help desk, so the pages show the questions and replies a shop sees rather than
test data. It waits for the demo's simulated visitors, adds the day's earlier traffic and
two earlier weeks of it with their ratings, tags and a note, builds a regression suite of
the rated-down conversations and runs it three times against the Space (the live prompt,
then two versions of a staging prompt), then takes headless-Chromium screenshots:

    dashboard-login.png  dashboard-overview.png  dashboard-chat.png  dashboard-live.png
    dashboard-conversations.png  dashboard-replay.png  dashboard-evaluate.png

and the widget's on the demo Space's page (chatcore/space/widget/screenshots.py): widget-closed.png
widget-open.png widget-mobile.png, and widget-staff.png when the Space has staff takeover.

Everything stays on 127.0.0.1 and everything started is stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# (keywords, answer): the first entry whose keywords all occur in the question answers it.
ANSWERS = [
    (("order", "arrived"), "Sorry it's late! Your order left the roastery on Tuesday and is with the courier; "
                           "tracking shows delivery tomorrow. I've e-mailed you the tracking link."),
    (("charged twice",), "Sorry about the double charge. I can see two payments for that order: the second one "
                         "has been refunded and will show on your statement in 3 to 5 days."),
    (("canada",), "Yes, we ship to Canada. Delivery takes 5 to 8 working days, and shipping is free on orders "
                  "over $40."),
    (("moka pot",), "For a moka pot, try the Harbour Blend: a medium-dark roast with notes of dark chocolate. "
                    "Choose the fine grind, a little coarser than espresso."),
    (("pause",), "Of course. Open Account, then Subscriptions, and choose Pause: you can pause for up to three "
                 "months and resume any time."),
    (("whole beans",), "Sorry about that! Keep the beans, and we'll send the ground coffee you ordered today, at "
                       "no charge."),
    (("decaf",), "Yes, the Harbour Blend also comes as a Swiss Water decaf: pick Decaf under Options on the "
                 "product page."),
    (("address",), "Go to Account, then Subscriptions, then Delivery address. Changes made before Sunday apply "
                   "to your next box."),
    (("gift card",), "We do! Gift cards from $20 to $200 are on the Gifts page and are sent by e-mail."),
    (("ethiopian",), "The Ethiopian Yirgacheffe is light and floral, with citrus notes; the Colombian Huila is "
                     "rounder, with caramel and red apple. Both shine as a pour-over."),
    (("mondays",), "The roastery at 12 Quay Street is open Tuesday to Sunday, 8 am to 4 pm, so we're closed on "
                   "Mondays. See you on Tuesday!"),
    (("cupping",), "Saturday cuppings start at 10 am, for up to 8 people. You can book a place on the Visit us "
                   "page."),
    (("how long",), "Usually 2 to 3 working days."),
    (("fee",), "No, there's no fee for that."),
    (("link",), "Here it is: the Help page at harborandpine.example/help has the steps with pictures."),
    (("information",), "Just your order number and the e-mail address you ordered with."),
    (("tried that",), "Sorry to hear that. I've passed it on to the team; someone will e-mail you within one "
                      "working day."),
    (("speak to someone",), "Of course. A colleague will take over and reply by e-mail within the hour."),
    (("subscription orders",), "Yes, it applies to subscription orders as well."),
    (("next delivery",), "Yes, your next delivery still goes out on schedule."),
    (("french press",), "For a French press, choose the coarse grind; the Colombian Huila works beautifully."),
    (("wait",), "You're welcome. The e-mail should reach you within the hour."),
    (("thank",), "You're welcome! Enjoy your coffee."),
]
FALLBACK = "Thanks for your message! Could you tell me your order number, so I can look into it?"


# A staging prompt under test on the Evaluate page: the answers that differ from today's.
STAGING = {
    "v2": [(("canada",), "Yes, we ship worldwide."),
           (("tried that",), "Please try again later."),
           (("fee",), "Shipping to Canada costs $12 per order.")],
    "v3": [(("fee",), "No, there's no fee: shipping to Canada is free on orders over $40."),
           (("charged twice",), "Sorry about that! Could you send us your order number? We'll look into it.")],
}


def shop_answer(question: str, prompt: str = "") -> str:
    q = question.lower()
    for words, answer in STAGING.get(prompt, []) + ANSWERS:
        if all(w in q for w in words):
            return answer
    return FALLBACK


class ShopModel:
    """An OpenAI-compatible ``/v1/chat/completions`` server (streaming) with the shop's answers."""

    def __init__(self, word_delay: float = 0.03):
        model = self
        self.prompt = ""  # a key of STAGING while a staging prompt is evaluated

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = shop_answer(body["messages"][-1]["content"], model.prompt).split(" ")
                for i, word in enumerate(words):
                    time.sleep(word_delay)
                    chunk = {"choices": [{"index": 0, "delta": {"content": word if i == 0 else " " + word}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the dashboard command exited ({proc.returncode}) before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer in {timeout} s")


def lines_in(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(x) for x in log.read_text().splitlines() if x.strip()]


def wait_for_demo(log: Path, timeout: float = 180) -> list[dict]:
    """Until the demo's simulated visitors are done (the log stops growing)."""
    deadline = time.monotonic() + timeout
    count, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(lines_in(log))
        if now != count:
            count, still_since = now, time.monotonic()
        elif count > 0 and time.monotonic() - still_since > 6:
            return lines_in(log)
        time.sleep(0.5)
    raise SystemExit("the demo did not write its turns in time")


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


#: Visitors per hour of the shop's day (UTC), relative: quiet at night, busy at lunch and after work.
HOUR_WEIGHT = [1, 1, 0, 0, 0, 1, 2, 4, 6, 7, 8, 8, 9, 8, 7, 6, 7, 8, 9, 8, 6, 4, 3, 2]


def shop_time(rng: random.Random, newest: datetime, span: timedelta) -> datetime:
    """A moment in ``(newest - span, newest]``, more likely in the shop's busy hours."""
    while True:
        ts = newest - span * rng.random()
        if rng.uniform(0, max(HOUR_WEIGHT)) < HOUR_WEIGHT[ts.hour]:
            return ts


def add_earlier_traffic(log: Path, seed: int = 11) -> dict:
    """The last days' conversations (widget visitors), ratings, tags, a note and canned replies."""
    from chatcore.log import annotations
    from chatcore.log.records import make_record
    from chatcore.staff.simulate import visitor_script
    from chatcore.log.writer import LogWriter

    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    writer = LogWriter(log)
    ratings: list[dict] = []  # feedback lines given in the past (written with their own time)

    def conversation(start: datetime, questions, replies=None, *, source: str = "widget") -> tuple[str, datetime]:
        cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ts = start
        for turn, question in enumerate(questions):
            ts += timedelta(seconds=rng.uniform(20, 90))
            reply = replies[turn] if replies else shop_answer(question)
            writer.append(make_record(conversation_id=cid, turn=turn, user_text=question, response=reply,
                                      latency_ms=rng.uniform(380, 1400), source=source, backend="openai",
                                      model="shop-assistant", ts=iso(ts)))
        return cid, ts

    def rate(cid: str, turn: int, rating: str, when: datetime) -> None:
        ratings.append({"v": 1, "ts": iso(when), "conversation_id": cid, "turn": turn, "rating": rating,
                        "by": "visitor", "source": "widget"})

    # The previous two weeks (before the last 24 hours): visitors every day, most of them rate a reply.
    for day in range(13, 0, -1):
        for _ in range(rng.randint(7, 11)):
            start = shop_time(rng, now - timedelta(days=day), timedelta(hours=16))
            cid, end = conversation(start, visitor_script(rng, rng.choice([1, 2, 2, 3, 3, 4])))
            if rng.random() < 0.65:
                rate(cid, 0, "down" if rng.random() < 0.18 else "up", end + timedelta(minutes=1))
    # Today's (the last 24 hours): busier during the shop's day; nothing in the last few minutes (the demo's).
    made: list[str] = []
    for k in range(34):
        start = shop_time(rng, now - timedelta(minutes=20), timedelta(hours=23))
        cid, end = conversation(start, visitor_script(rng, rng.choice([1, 2, 2, 3, 3, 4])))
        made.append(cid)
    # Yesterday: a double charge the reply did not settle (rated down; it joins the regression suite).
    charged, end = conversation(shop_time(rng, now - timedelta(hours=20), timedelta(hours=6)),
                                ["I was charged twice for order #52817.",
                                 "I tried that already and it didn't work."])
    rate(charged, 1, "down", end + timedelta(minutes=2))
    # The conversation whose transcript is shown: a late parcel, escalated with a note.
    late, _ = conversation(now - timedelta(minutes=47),
                           ["Hi! My order #48213 hasn't arrived yet. Can you check where it is?",
                            "Will my next delivery still go out on time?",
                            "OK, thanks. I'll wait for the email then."])
    # One turn the model server did not answer in time (the visitor got the apology).
    failed = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    writer.append(make_record(conversation_id=failed, turn=0, user_text="Is the Kenyan AA back in stock?",
                              response="Sorry, the assistant could not answer just now. Please try again in a "
                                       "moment.", latency_ms=60000.0, source="widget", backend="openai",
                              model="shop-assistant", error="the model server timed out",
                              ts=iso(now - timedelta(hours=2, minutes=14))))
    # A conversation whose logged replies came from last week's prompt: the replay shows what changed.
    replay_id, _ = conversation(now - timedelta(hours=5, minutes=41),
                                ["Do you ship to Canada? What are the delivery times?", "Is there a fee for that?"],
                                ["Yes, we ship to Canada. Delivery takes 7 to 10 working days; shipping costs $12.",
                                 "Shipping to Canada costs $12 per order."])
    writer.close()

    ratings.sort(key=lambda r: r["ts"])
    folder = annotations.annotations_dir(log)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "feedback.jsonl", "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in ratings)
    for i, cid in enumerate(made[:16]):
        annotations.record_feedback(log, cid, 0, "down" if i % 6 == 0 else "up", by="visitor", source="widget")
    annotations.record_feedback(log, replay_id, 1, "down", by="visitor", source="widget")
    annotations.add_tag(log, late, "escalated")
    annotations.add_note(log, late, "Parcel stuck at the courier's depot since Monday; asked them for a new "
                                    "delivery date and e-mailed the customer.", author="staff")
    annotations.add_tag(log, made[1], "resolved")
    annotations.add_tag(log, failed, "bug")
    for title, text in (("Refund on its way", "I've refunded the payment: you'll get a confirmation e-mail "
                                              "today, and the money is back in 3 to 5 working days."),
                        ("Opening hours", "We answer from 8 am to 6 pm, Monday to Saturday."),
                        ("Parcel tracking", "Your tracking link is in the shipping e-mail; parcels usually "
                                            "arrive 2 to 3 working days after they ship.")):
        annotations.save_snippet(log, title, text, author="Maya")
    return {"transcript": late, "replay": replay_id, "charged": charged}


# The ideal answers staff wrote on the transcripts of rated-down turns (the suite scores against them).
IDEALS = {
    ("charged", 1): "Sorry! I've asked our payments team to refund the second charge today; you'll get a "
                    "confirmation e-mail within the hour.",
    ("replay", 0): "Yes, we ship to Canada. Delivery takes 5 to 8 working days, and shipping is free on orders "
                   "over $40.",
    ("replay", 1): "No, there's no fee: shipping to Canada is free on orders over $40.",
}


def build_suite(log: Path, model: "ShopModel", space_url: str, ids: dict, env: dict) -> None:
    """The suite "rated-down" (the last two days' thumbs-down conversations, as staff build it with the
    CLI) and three runs of it today: the live prompt, then two versions of a staging prompt."""
    from chatcore.staff import evaluate as ev
    from chatcore.config import operator_token
    from chatcore.staff.suites import get_suite, set_ideal

    since = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%d")
    subprocess.run([sys.executable, "-m", "chatcore", "suite", "add", "rated-down", "--rated", "down",
                    "--since", since, "--log", str(log)], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    for (which, turn), text in IDEALS.items():
        set_ideal(log, ids[which], turn, text)
    suite = get_suite(log, "rated-down")
    now = datetime.now(timezone.utc)
    previous = None
    for prompt, ago in (("", timedelta(hours=3, minutes=12)), ("v2", timedelta(hours=1, minutes=48)),
                        ("v3", timedelta(minutes=6))):
        model.prompt = prompt
        report = ev.run_suite(suite, space_url, operator_token=operator_token(log), token_log_path=log,
                              previous=previous)
        # Shown as the day's work: each run at the time it would have been made.
        started = now - ago
        report["run_id"] = f"rated-down-{started:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
        report["started"] = iso(started)
        report["finished"] = iso(started + timedelta(seconds=report["seconds"]))
        report["min_pass"] = 0.9
        report["gate"] = "pass" if report["summary"]["pass_rate"] >= 0.9 else "fail"
        ev.save_report(log, report)
        previous = report
    model.prompt = ""


def staff_step_in(log: Path, space_url: str, env: dict) -> dict:
    """Two visitors ask for a person: one still waits, the other is taken over by Maya from the
    shop (with the staff CLI), who writes to them. Only when the Space has staff takeover."""
    from chatcore.remote.client import SpaceClient

    if not (ROOT / "chatcore" / "space" / "handoff.py").exists():
        return {}

    def visitor(cid: str, text: str) -> None:
        client = SpaceClient(space_url, timeout=60)
        try:
            for _ in client.stream(text, cid, source="widget"):
                pass
        finally:
            client.close()

    def staff(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "chatcore", *args, "--as", "Maya", "--space", space_url,
                        "--log", str(log)], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)

    taken, waiting = str(uuid.uuid4()), str(uuid.uuid4())
    visitor(taken, "I was charged twice for order #53120.")
    visitor(taken, "I tried that already and it didn't work. Can I speak to someone?")
    staff("takeover", taken)
    staff("say", taken, "Hi, I'm Maya from the roastery. I can see both payments for #53120; "
                        "I'm refunding the second one now.")
    visitor(taken, "Thank you! Will I get an e-mail about it?")
    staff("say", taken, "Yes: the refund confirmation is on its way, and the money is back in 3 to 5 days.")
    visitor(waiting, "My grinder arrived with a cracked hopper.")
    visitor(waiting, "Can I talk to a person about a replacement?")
    httpx.post(space_url.rstrip("/") + "/handoff/request", json={"conversation_id": waiting}, timeout=15)
    return {"taken": taken, "waiting": waiting}


def wait_page(page) -> None:
    page.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"] "
        "[data-testid=\"stStatusWidgetRunningIcon\"]')", timeout=60_000)


def open_logged_in(page, url: str, password: str) -> None:
    """Open ``url`` (a new Streamlit session); log in on the login page if the browser has no session."""
    page.goto(url)
    field = page.get_by_label("Password", exact=True)
    logout = page.get_by_role("link", name="Log out")
    field.or_(logout).first.wait_for(timeout=60_000)
    if field.count():
        field.fill(password)
        page.get_by_role("button", name="Log in").click()
    logout.wait_for(timeout=60_000)


def wait_charts(page, count: int) -> None:
    """Until ``count`` Vega charts have drawn (a canvas or svg of non-zero size inside each)."""
    page.wait_for_function(
        """n => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].filter(e => {
               const g = e.querySelector('canvas, svg');
               if (!g) return false;
               const r = g.getBoundingClientRect();
               return r.width > 0 && r.height > 0; }).length >= n""", arg=count, timeout=60_000)


def fit_height(page, width: int, least: int = 900) -> None:
    """Make the window as tall as the page (Streamlit scrolls inside the app, so a full-page shot cannot)."""
    tall = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    page.set_viewport_size({"width": width, "height": max(least, int(tall) + 40)})


def take(url: str, password: str, ids: dict, out: Path, width: int, chromium: str,
         before_evaluate=None) -> list[Path]:
    """The screenshots; ``before_evaluate()`` runs just before the Evaluate page is opened."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    outside: list[str] = []

    def shot(page, name: str, **kwargs) -> None:
        page.mouse.move(0, 0)
        page.wait_for_timeout(1200)  # charts and grids finish drawing
        shots.append(out / name)
        page.screenshot(path=str(shots[-1]), **kwargs)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": 900}, timezone_id="UTC")
            context.on("request", lambda r: outside.append(r.url)
                       if not r.url.startswith((url, "data:", "blob:", "http://127.0.0.1")) else None)
            page = context.new_page()

            page.set_viewport_size({"width": width, "height": 560})
            page.goto(url + "/")
            page.get_by_label("Password", exact=True).wait_for(timeout=60_000)  # the /login page
            shot(page, "dashboard-login.png")
            page.get_by_label("Password", exact=True).fill(password)
            page.get_by_role("button", name="Log in").click()

            page.get_by_text("Turns per hour").first.wait_for(timeout=60_000)
            wait_page(page)
            page.set_viewport_size({"width": width, "height": 1400})
            # The figures refresh every 5 s (a fragment): shoot right after a refresh has drawn both charts.
            updated = page.get_by_text("refreshes every", exact=False).first
            before = updated.inner_text()
            page.wait_for_function("t => !document.body.innerText.includes(t)", arg=before, timeout=30_000)
            wait_charts(page, 2)
            page.mouse.move(0, 0)
            page.wait_for_timeout(700)
            shots.append(out / "dashboard-overview.png")
            page.screenshot(path=str(shots[-1]))
            page.set_viewport_size({"width": width, "height": 1000})

            page.locator('[data-testid="stSidebarNav"] a', has_text="Chat").click()
            box = page.get_by_placeholder("Type a test prompt…")
            box.wait_for(timeout=60_000)
            for question, expect in (("Do you ship to Canada?", "5 to 8 working days"),
                                     ("Which roast would you recommend for a moka pot?", "Harbour Blend")):
                box.fill(question)
                box.press("Enter")
                page.get_by_text(expect, exact=False).first.wait_for(timeout=60_000)
                page.get_by_text("round trip", exact=False).last.wait_for(timeout=30_000)
                wait_page(page)
            shot(page, "dashboard-chat.png")
            page.set_viewport_size({"width": width, "height": 900})

            page.locator('[data-testid="stSidebarNav"] a', has_text="Live").click()
            page.locator('[data-testid="stDataFrame"] [role="gridcell"]', has_text="moka pot").first.wait_for(
                state="attached", timeout=60_000)
            if ids.get("taken"):  # staff takeover: Maya has one conversation open, another waits
                page.get_by_text("waiting for a person", exact=False).first.wait_for(timeout=60_000)
                page.get_by_label("Your staff name").fill("Maya")
                page.get_by_label("Your staff name").press("Enter")
                wait_page(page)
                hand_back = page.get_by_role("button", name="Hand back")
                for _ in range(6):  # the list refreshes itself every few seconds: pick again if it closed
                    page.get_by_label("Open a conversation").click()
                    page.keyboard.type(ids["taken"][:8])
                    page.keyboard.press("Enter")
                    try:
                        hand_back.wait_for(timeout=5_000)
                        break
                    except Exception:
                        page.keyboard.press("Escape")
                hand_back.wait_for(timeout=30_000)
                page.locator('[data-testid="stChatMessage"]', has_text="refund confirmation").first.wait_for(
                    timeout=60_000)
                wait_page(page)
                fit_height(page, width)
            shot(page, "dashboard-live.png")
            page.set_viewport_size({"width": width, "height": 900})

            open_logged_in(page, f"{url}/conversations?conversation={ids['transcript']}", password)
            page.get_by_text("Transcript", exact=False).first.wait_for(timeout=60_000)
            page.get_by_text("Tags and notes", exact=False).first.wait_for(timeout=60_000)
            wait_page(page)
            fit_height(page, width)  # the page scrolls inside the app
            shot(page, "dashboard-conversations.png")
            page.set_viewport_size({"width": width, "height": 1400})

            open_logged_in(page, f"{url}/conversations?conversation={ids['replay']}", password)
            page.get_by_role("button", name="Replay against the current Space").click()
            page.get_by_text("turns changed", exact=False).first.wait_for(timeout=90_000)
            wait_page(page)
            replay_box = page.locator(".st-key-conv_replay_box")
            replay_box.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)
            shots.append(out / "dashboard-replay.png")
            replay_box.screenshot(path=str(shots[-1]))

            if before_evaluate:
                before_evaluate()
            open_logged_in(page, f"{url}/evaluate", password)
            page.get_by_text("Pass rate over time").first.wait_for(timeout=60_000)
            page.locator(".eval-diff").first.wait_for(timeout=60_000)
            wait_page(page)
            wait_charts(page, 1)
            fit_height(page, width)
            wait_charts(page, 1)
            shot(page, "dashboard-evaluate.png")
        finally:
            browser.close()
    if outside:
        raise SystemExit(f"the dashboard made requests off the machine: {sorted(set(outside))}")
    return shots


def take_space_page(space: str, out: Path, chromium: str) -> Path:
    """The Space's own chat page after two questions, answered by the shop's model."""
    from playwright.sync_api import sync_playwright

    bots = "[role=log] [data-testid=bot]"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(space + "/")
            for i, question in enumerate(["Hi! Do you ship to Canada?", "Do you sell gift cards?"], start=1):
                box = page.locator("textarea").first
                box.wait_for(timeout=60_000)
                box.fill(question)
                box.press("Enter")
                answer = shop_answer(question)
                page.wait_for_function(
                    "([sel, s, n]) => { const b = [...document.querySelectorAll(sel)];"
                    " return b.length === n && b[n - 1].textContent.trim() === s; }",
                    arg=[bots, answer, i], timeout=60_000)
                page.wait_for_function("() => { const t = document.querySelector('textarea');"
                                       " return t && !t.disabled && !document.querySelector('button.stop-button'); }")
            page.mouse.move(0, 0)
            page.wait_for_timeout(800)
            path = out / "space-chat.png"
            page.screenshot(path=str(path))
            return path
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNG files (default docs/)")
    ap.add_argument("--width", type=int, default=1440, help="browser width in px (default 1440)")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args(argv)

    from chatcore.dashboard.auth import hash_password

    password = secrets.token_urlsafe(12)
    model = ShopModel()
    proc = None
    with tempfile.TemporaryDirectory(prefix="harbor-pine-") as tmp:
        log = Path(tmp) / "demo" / "chat_logs.jsonl"
        dash_port, space_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CHAT_", "OPENAI_", "HF_")) and k != "CHAT_OPERATOR_TOKEN"}
        env.update({"PYTHONUNBUFFERED": "1", "CHAT_RESPONDER": "openai", "OPENAI_BASE_URL": model.url,
                    "OPENAI_MODEL": "shop-assistant", "CHAT_DASHBOARD_PASSWORD_HASH": hash_password(password),
                    "CHAT_TIMEZONE": "UTC"})
        url = f"http://127.0.0.1:{dash_port}"
        output = open(Path(tmp) / "dashboard.out", "wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "chatcore", "dashboard", "--demo", "--port", str(dash_port),
                 "--space-url", f"http://127.0.0.1:{space_port}", "--log", str(log)],
                cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
            wait_http(f"http://127.0.0.1:{space_port}/healthz", proc)
            wait_http(url + "/_stcore/health", proc)
            print("waiting for the demo's simulated visitors…", flush=True)
            demo = wait_for_demo(log)
            print(f"demo wrote {len(demo)} turn(s)", flush=True)
            ids = add_earlier_traffic(log)
            space = f"http://127.0.0.1:{space_port}"
            ids.update(staff_step_in(log, space, env))
            for path in take(url, password, ids, Path(args.out), args.width, args.chromium,
                             before_evaluate=lambda: build_suite(log, model, space, ids, env)):
                print(path)
            # The widget on the demo Space's page, answering as the shop.
            from chatcore.space.widget.screenshots import staff_token, take as take_widget

            for path in take_widget(space, Path(args.out), args.chromium, staff_token(log)):
                print(path)
            print(take_space_page(space, Path(args.out), args.chromium))
        except BaseException:
            output.flush()
            sys.stderr.write((Path(tmp) / "dashboard.out").read_text(errors="replace")[-3000:])
            raise
        finally:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the command stops its Space and Streamlit
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            output.close()
            model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
