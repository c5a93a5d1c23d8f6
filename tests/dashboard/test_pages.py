"""The dashboard pages under Streamlit's AppTest, and the helpers they call.

Chat runs against a real local Space (fixtures in conftest.py); the other pages
read a log written by the test. Nothing here opens a browser.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import streamlit as st
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from chatcore.store import conversation_frames as conv
from chatcore.dashboard import views as dash
from chatcore.log.records import make_record

from conftest import ROOT, apptest_knows_the_entry_navigates, free_port

ENTRY = str(ROOT / "dashboard.py")
XSS = ["<img src=x onerror=alert(1)>", "![x](http://127.0.0.1:9/p.png)", "[click](javascript:alert(1))"]


# ---------------------------------------------------------------------------- helpers


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def rec(cid: str, turn: int, ts: datetime, user: str = "question", reply: str = "answer",
        source: str = "widget", latency: float = 120.0, error: str | None = None) -> dict:
    return make_record(conversation_id=cid, turn=turn, user_text=user, response=reply, latency_ms=latency,
                       source=source, backend="echo", error=error, ts=iso(ts))


def write_log(path: Path, records: list[dict], mode: str = "a") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode, encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("CHAT_TIMEZONE", "UTC")
    apptest_knows_the_entry_navigates(monkeypatch)
    yield
    st.cache_resource.clear()  # stops live tails (on_release) and forgets stores
    st.cache_data.clear()


@pytest.fixture
def media(monkeypatch):
    """Bytes behind every download button, by the file name in its URL."""
    files: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        data = path_or_data.encode() if isinstance(path_or_data, str) else bytes(path_or_data)
        files[file_id] = data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    deferred: dict[str, object] = {}  # downloads built only when asked for: their builders
    original_deferred = MediaFileManager.add_deferred

    def spy_deferred(self, data_callable, *args, **kwargs):
        file_id = original_deferred(self, data_callable, *args, **kwargs)
        deferred[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy_deferred)

    def content(button) -> str:
        if not button.proto.url and button.proto.deferred_file_id:  # the click: build it now
            data = deferred[button.proto.deferred_file_id]()
            return data.decode("utf-8") if isinstance(data, bytes) else data
        name = button.proto.url.rsplit("/", 1)[-1].split(".")[0]
        return files[name].decode("utf-8")

    return content


def open_page(page: str, timeout: float = 30) -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=timeout).run()
    assert not at.exception, at.exception
    if page != "overview":
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
    return at


def button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def metric(at: AppTest, label: str):
    return next(m.value for m in at.metric if m.label == label)


def download(at: AppTest, key: str):
    return next(d for d in at.get("download_button") if d.proto.id.endswith(key))


# ------------------------------------------------------------------------ escaping


def test_escape_markdown_makes_markup_inert():
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark")
    for text in XSS + ["**bold** `code` # head\n- item", "<script>alert(1)</script>", "a & b &lt;"]:
        html = md.render(dash.escape_markdown(text))
        assert "<img" not in html and "<a " not in html and "<script" not in html
        assert "<strong>" not in html and "<code>" not in html and "<li>" not in html
    # Escaping pieces of a stream one by one equals escaping the whole.
    text = "You said: <img src=x onerror=alert(1)> and ![x](y)"
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    assert "".join(dash.escaped_stream(pieces)) == dash.escape_markdown(text)


# ------------------------------------------------------------------------- helpers


def test_preset_ranges_follow_the_viewer_timezone():
    tz = ZoneInfo("America/New_York")
    now = datetime(2026, 11, 21, 3, 30, tzinfo=timezone.utc)  # 22:30 on the 20th in New York
    since, until = conv.preset_range("Today", now=now, tz=tz)
    assert since == datetime(2026, 11, 20, tzinfo=tz) and until is None
    since, _ = conv.preset_range("Last hour", now=now, tz=tz)
    assert since == now - timedelta(hours=1)
    assert conv.preset_range("All time", now=now, tz=tz) == (None, None)
    since, until = conv.preset_range("Custom", now=now, tz=tz, custom=(date(2026, 11, 1), date(2026, 11, 2)))
    assert since == datetime(2026, 11, 1, tzinfo=tz) and until == datetime(2026, 11, 3, tzinfo=tz)
    with pytest.raises(ValueError):
        conv.preset_range("Yesterday-ish", now=now)


def test_overview_figures_and_hourly_chart(tmp_path):
    now = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    rows = [rec("a", 0, now - timedelta(minutes=1), latency=100),
            rec("a", 1, now - timedelta(minutes=2), latency=300, error="backend down"),
            rec("b", 0, now - timedelta(hours=3), latency=200),
            rec("c", 0, now - timedelta(days=2), latency=9000)]
    write_log(tmp_path / "chat.jsonl", rows)
    questions = dash.SharedStore(tmp_path / "chat.jsonl").questions()
    fig = dash.figures_of(questions, now=now, tz=timezone.utc)
    assert (fig.conversations_today, fig.turns_today, fig.active_now, fig.errors_today) == (2, 3, 1, 1)
    assert fig.latency_p50 == 200 and fig.turns_total == 4
    hourly = dash.turns_per_hour(questions, now=now, tz=timezone.utc)
    assert len(hourly) == 24 and hourly["turns"].sum() == 3
    assert hourly.iloc[-1]["hour"] == "12:00" and hourly.iloc[-1]["turns"] == 0
    assert hourly.iloc[-2]["turns"] == 2 and hourly.iloc[-4]["turns"] == 1


def test_conversation_ids_match_by_prefix():
    rows = [{"conversation_id": "6f1c0d7e-1111-4e5f", "source": "widget"},
            {"conversation_id": "6f1c9999-2222-4e5f", "source": "api"}]
    ids = lambda got: [r["conversation_id"][:8] for r in got]  # noqa: E731
    assert ids(dash.filter_live(rows, "6f1c0d7e-1111-4e5f")) == ["6f1c0d7e"]  # the full id
    assert ids(dash.filter_live(rows, "6f1c0d7e…")) == ["6f1c0d7e"]  # as the table shows it
    assert ids(dash.filter_live(rows, "6F1C0D7E...")) == ["6f1c0d7e"]
    assert ids(dash.filter_live(rows, "6f1c")) == ["6f1c0d7e", "6f1c9999"]
    assert ids(dash.filter_live(rows, "6f1c", source="api")) == ["6f1c9999"]
    assert ids(dash.filter_live(rows, "0d7e")) == [] and ids(dash.filter_live(rows, "  ")) == ["6f1c0d7e", "6f1c9999"]


def test_live_merge_dedupes_and_keeps_newest_first():
    t0 = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    a, b, c = (rec("x", i, t0 + timedelta(seconds=i)) for i in range(3))
    rows = dash.merge_live([], [a, b])
    rows = dash.merge_live(rows, [b, c])
    assert [r["turn"] for r in rows] == [2, 1, 0]
    table = dash.live_table(rows, ZoneInfo("Europe/Paris"), now=t0)
    assert table["time"].tolist() == ["13:00:02", "13:00:01", "13:00:00"]


# ------------------------------------------------------------------------ overview


def test_overview_figures_are_read_afresh_on_each_run(tmp_path, monkeypatch):
    """The figures live in a fragment that reruns every CHAT_OVERVIEW_REFRESH seconds in the
    browser (tests/dashboard/test_dashboard_offline.py); AppTest does not tick run_every, so rerun here."""
    log = tmp_path / "chat.jsonl"
    now = datetime.now(timezone.utc)
    write_log(log, [rec("a", 0, now - timedelta(seconds=20))])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CHAT_OVERVIEW_REFRESH", "3")
    at = open_page("overview")
    assert metric(at, "Turns today") == "1"
    caption = next(c.value for c in at.caption if "updated" in c.value)
    assert "refreshes every 3 s" in caption
    write_log(log, [rec("b", 0, now), rec("b", 1, now)])
    at.run()
    assert not at.exception
    assert metric(at, "Turns today") == "3" and metric(at, "Conversations today") == "2"


def test_overview_page_figures(tmp_path, monkeypatch):
    log = tmp_path / "chat.jsonl"
    now = datetime.now(timezone.utc)
    write_log(log, [rec("a", 0, now - timedelta(seconds=20), latency=100),
                    rec("a", 1, now - timedelta(seconds=10), latency=300, error="backend down"),
                    rec("b", 0, now - timedelta(days=3), latency=50)])
    with open(log, "a") as f:
        f.write("{broken json\n")
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    at = open_page("overview")
    assert metric(at, "Conversations today") == "1"
    assert metric(at, "Turns today") == "2"
    assert metric(at, "Active now") == "1"
    assert metric(at, "Errors today") == "1"
    assert metric(at, "Reply time p50 (today)") == "200 ms"
    assert metric(at, "Bad lines skipped") == "1"
    assert any("cannot reach" in t.value for t in at.text)  # the Space's health, as text
    sidebar = " ".join(h.proto.body for h in at.sidebar.get("html"))  # settings shown by the entry script
    assert str(log).replace("/", "/<wbr>") in sidebar and os.environ["CHAT_SPACE_URL"] in sidebar
    assert 'title="http://127.0.0.1:' in sidebar  # the whole URL in the tooltip
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")


def test_overview_handoff_figures(tmp_path, monkeypatch):
    from chatcore.log.records import make_event

    log = tmp_path / "chat.jsonl"
    now = datetime.now(timezone.utc)
    write_log(log, [rec("a", 0, now - timedelta(seconds=60)), rec("c", 0, now - timedelta(seconds=55))])
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # noqa: E731
    with open(log, "a") as f:
        for cid, kind, staff, text, ago in (
                ("old", "handoff_taken", "Bo", None, timedelta(days=3)),  # not today
                ("c", "handoff_requested", None, None, timedelta(seconds=50)),
                ("c", "handoff_taken", "Ana", None, timedelta(seconds=40)),
                ("c", "staff_message", "Ana", "Hi, Ana here", timedelta(seconds=20)),
                ("c", "staff_message", "Ana", "Anything else?", timedelta(seconds=10))):
            f.write(json.dumps(make_event(conversation_id=cid, kind=kind, at_turn=1, staff=staff, text=text,
                                          ts=iso(now - ago))) + "\n")
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    at = open_page("overview")
    assert metric(at, "Handoffs today") == "1"
    assert metric(at, "Handed to a person") == "50 %"  # c of a and c
    assert metric(at, "First human reply p50 / p95") == "30 s / 30 s"  # request -> first staff message
    assert metric(at, "Conversations today") == "2" and metric(at, "Turns today") == "2"
    assert metric(at, "Bad lines skipped") == "0"  # event lines are not bad lines
    captions = " ".join(c.value for c in at.caption)
    assert "Staff and handoff events: 5" in captions and "Skipped" not in captions


def test_overview_with_space_health(space, monkeypatch):
    monkeypatch.setenv("CHAT_LOG_PATH", str(space.log_path))
    monkeypatch.setenv("CHAT_SPACE_URL", space.url)
    at = open_page("overview")
    assert metric(at, "Write errors") == "0"
    assert metric(at, "Turns logged") == str(space.health()["turns_logged"])


# -------------------------------------------------------------------- conversations


@pytest.fixture
def conv_log(tmp_path, monkeypatch):
    now = datetime.now(timezone.utc)
    log = tmp_path / "chat.jsonl"
    write_log(log, [
        rec("recent-1", 0, now - timedelta(minutes=5), "How do I reset my password?", "Use the reset link.",
            source="widget"),
        rec("recent-1", 1, now - timedelta(minutes=4), "Thanks", "You're welcome.", source="widget"),
        rec("operator-1", 0, now - timedelta(minutes=3), XSS[0], "Echo " + XSS[1] + " " + XSS[2],
            source="operator"),
        rec("older-1", 0, now - timedelta(days=3), "Where is my order?", "It ships tomorrow.", source="widget"),
        rec("ancient-1", 0, now - timedelta(days=30), "=HYPERLINK(\"http://x\")", "old reply", source="api"),
    ])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    return log, now


def shown_ids(at: AppTest) -> list[str]:
    frames = at.dataframe
    return list(frames[0].value["conversation_id"]) if frames else []


def test_conversations_filters_by_date_text_and_source(conv_log):
    _, now = conv_log
    at = open_page("conversations")
    assert set(shown_ids(at)) == {"recent-1", "operator-1", "older-1"}  # default: last 7 days
    at.selectbox(key="conv_preset").select("All time").run()
    assert set(shown_ids(at)) == {"recent-1", "operator-1", "older-1", "ancient-1"}
    at.selectbox(key="conv_preset").select("Last hour").run()
    assert set(shown_ids(at)) == {"recent-1", "operator-1"}
    at.selectbox(key="conv_preset").select("Custom").run()
    day = (now - timedelta(days=30)).date()
    at.date_input(key="conv_days").set_value((day, day)).run()
    assert shown_ids(at) == ["ancient-1"]
    at.selectbox(key="conv_preset").select("All time").run()
    at.text_input(key="conv_search").input("PASSWORD").run()  # case-insensitive, questions
    assert shown_ids(at) == ["recent-1"]
    at.text_input(key="conv_search").input("ships tomorrow").run()  # replies too
    assert shown_ids(at) == ["older-1"]
    at.text_input(key="conv_search").input("").run()
    at.multiselect(key="conv_sources").select("operator").run()
    assert shown_ids(at) == ["operator-1"]
    assert metric(at, "Turns") == "1"
    assert not at.exception


def test_conversations_export_and_transcript(conv_log, media):
    at = open_page("conversations")
    at.text_input(key="conv_search").input("password").run()
    exported = media(download(at, "conv_jsonl"))
    lines = [json.loads(line) for line in exported.splitlines()]
    assert [(r["conversation_id"], r["turn"]) for r in lines] == [("recent-1", 0), ("recent-1", 1)]
    table = list(csv.DictReader(io.StringIO(media(download(at, "conv_csv")))))
    assert [r["user_text"] for r in table] == ["How do I reset my password?", "Thanks"]
    # The transcript of the selected conversation, and its Markdown export.
    assert at.selectbox(key="conv_pick").value == "recent-1"
    texts = [t.value for t in at.text]
    assert "How do I reset my password?" in texts and "Use the reset link." in texts
    md = media(download(at, "conv_md"))
    assert md.startswith("# Conversation recent-1") and "How do I reset my password?" in md
    # CSV export defuses formulas.
    at.text_input(key="conv_search").input("HYPERLINK").run()
    at.selectbox(key="conv_preset").select("All time").run()
    table = list(csv.DictReader(io.StringIO(media(download(at, "conv_csv")))))
    assert table[0]["user_text"].startswith("'=")


def test_transcript_shows_markup_as_plain_text(conv_log):
    at = open_page("conversations")
    at.selectbox(key="conv_pick").select("operator-1").run()
    texts = [t.value for t in at.text]
    assert XSS[0] in texts
    assert "Echo " + XSS[1] + " " + XSS[2] in texts
    rendered_markdown = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    for bad in XSS:
        assert bad not in rendered_markdown


def test_transcript_shows_staff_messages_and_handoff_steps(conv_log, media):
    from chatcore.log.records import make_event

    log, now = conv_log
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # noqa: E731
    with open(log, "a") as f:
        for kind, staff, text, minutes in (("handoff_requested", None, None, 4), ("handoff_taken", "Ana", None, 3),
                                           ("staff_message", "Ana", "Hi, Ana here: <b>I can help</b>", 2),
                                           ("handoff_returned", "Ana", None, 1)):
            f.write(json.dumps(make_event(conversation_id="recent-1", kind=kind, at_turn=1, staff=staff,
                                          text=text, ts=iso(now - timedelta(minutes=minutes)))) + "\n")
    at = open_page("conversations")
    at.selectbox(key="conv_pick").select("recent-1").run()
    assert "Hi, Ana here: <b>I can help</b>" in [t.value for t in at.text]  # as text, never markup
    captions = " ".join(c.value for c in at.caption)
    assert "Ana took over" in captions and "staff: Ana" in captions and "handed back" in captions
    md = media(download(at, "conv_md"))
    assert "**Staff (Ana):**" in md and "Ana took over" in md
    assert md.index("Ana took over") < md.index("## Turn 1")  # before the turn it preceded
    assert shown_ids(at).count("recent-1") == 1 and metric(at, "Turns") != "0"


def test_conversation_opened_by_query_param(conv_log):
    at = AppTest.from_file(ENTRY, default_timeout=30)
    at.query_params["conversation"] = "ancient-1"  # outside the default 7 days
    at.run()
    at.switch_page("pages/conversations.py").run()
    assert at.selectbox(key="conv_pick").value == "ancient-1"
    assert "old reply" in [t.value for t in at.text]


# ---------------------------------------------------------------------------- chat


def test_chat_against_a_real_space(space, monkeypatch):
    monkeypatch.setenv("CHAT_LOG_PATH", str(space.log_path))
    monkeypatch.setenv("CHAT_SPACE_URL", space.url)
    at = open_page("chat")
    cid = at.session_state["chat_cid"]
    uuid.UUID(cid)
    assert cid in [c.value for c in at.code]
    at.run()
    assert at.session_state["chat_cid"] == cid  # kept across reruns

    at.chat_input(key="chat_prompt").set_value("hello " + XSS[0]).run()
    assert not at.exception and not at.error
    assert at.session_state["chat_cid"] == cid
    texts = [t.value for t in at.text]
    assert "hello " + XSS[0] in texts
    assert any(t.startswith("You said: hello") for t in texts)
    assert any("round trip" in c.value for c in at.caption)  # measured here, not the Space's reply time
    assert not any("latency" in c.value for c in at.caption)
    at.chat_input(key="chat_prompt").set_value("second").run()
    assert "You said: second (message 2 in this conversation)" in [t.value for t in at.text]
    mine = [r for r in space.records() if r["conversation_id"] == cid]
    assert [(r["turn"], r["source"]) for r in mine] == [(0, "operator"), (1, "operator")]

    button(at, "chat_new").click().run()
    new_cid = at.session_state["chat_cid"]
    assert new_cid != cid and uuid.UUID(new_cid)
    assert not [t for t in at.text if t.value.startswith("You said")]
    at.chat_input(key="chat_prompt").set_value("fresh start").run()
    assert "You said: fresh start" in [t.value for t in at.text]  # no history carried over
    mine = [r for r in space.records() if r["conversation_id"] == new_cid]
    assert [r["turn"] for r in mine] == [0]


def test_chat_space_down_keeps_prompt_and_retries(space_factory, tmp_path, monkeypatch):
    port = free_port()
    log = tmp_path / "logs" / "chat.jsonl"
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{port}")
    at = open_page("chat")
    at.chat_input(key="chat_prompt").set_value("please keep me").run()
    assert not at.exception
    assert at.error and "Cannot reach the Space" in at.error[0].value
    assert at.session_state["chat_pending"] == "please keep me"
    assert "please keep me" in [c.value for c in at.code]
    cid = at.session_state["chat_cid"]

    sp = space_factory(log_path=log, port=port)  # the Space comes back
    button(at, "chat_retry_btn").click().run()
    assert not at.exception and not at.error
    assert "You said: please keep me" in [t.value for t in at.text]
    assert at.session_state["chat_pending"] is None
    assert [r["user_text"] for r in sp.records() if r["conversation_id"] == cid] == ["please keep me"]


# ---------------------------------------------------------------------------- live


def live_ids(at: AppTest) -> list[tuple]:
    """The stream of turns (below the inbox of conversations active now)."""
    frame = next(d.value for d in at.dataframe if "user_text" in d.value.columns)
    return list(zip(frame["conversation"], frame["user_text"]))


def run_until(at: AppTest, check, timeout: float = 5.0) -> AppTest:
    """AppTest does not tick ``run_every``: rerun until ``check(at)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        assert not at.exception, at.exception
        if check(at) or time.monotonic() > deadline:
            return at
        time.sleep(0.2)


def count(at: AppTest) -> int:
    return int(metric(at, "New turns since opening"))


@pytest.fixture
def live_log(tmp_path, monkeypatch):
    log = tmp_path / "logs" / "chat.jsonl"
    now = datetime.now(timezone.utc)
    write_log(log, [rec("old-a", 0, now - timedelta(minutes=2), "earlier question"),
                    rec("old-b", 0, now - timedelta(minutes=1), "another earlier one", source="api")])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CHAT_LIVE_REFRESH", "0.2")
    return log


def test_live_shows_new_turns_newest_first(live_log):
    at = open_page("live")
    assert count(at) == 0
    assert [u for _, u in live_ids(at)] == ["another earlier one", "earlier question"]
    now = datetime.now(timezone.utc)
    write_log(live_log, [rec("new-conv-1", 0, now, "first new " + XSS[0], "reply " + XSS[1]),
                         rec("new-conv-1", 1, now + timedelta(seconds=1), "second new", error="backend down")])
    run_until(at, lambda a: count(a) == 2)
    assert count(at) == 2
    (stream,) = [d for d in at.dataframe if "user_text" in d.value.columns]
    table = stream.value
    assert list(table["user_text"][:2]) == ["second new", "first new " + XSS[0]]
    assert table["reply"][1] == "reply " + XSS[1]  # a dataframe cell: inert text
    assert table["error"][0] == "backend down" and table["error"][1] == ""  # plain text, no emoji
    assert table["conversation"][0] == "new-conv…"
    columns = str(stream.proto.columns)  # the Space's logged time, labelled as such
    assert "Reply time (ms)" in columns and "Latency" not in columns
    assert not any(XSS[0] in m.value or XSS[1] in m.value for m in at.markdown)


def test_live_filters_pause_and_click_through(live_log):
    at = open_page("live")
    at.selectbox(key="live_source").select("api").run()
    assert [u for _, u in live_ids(at)] == ["another earlier one"]
    at.selectbox(key="live_source").select("all").run()
    at.text_input(key="live_conv").input("old-a").run()
    assert [u for _, u in live_ids(at)] == ["earlier question"]
    at.text_input(key="live_conv").input(" old-").run()  # the first characters, as tables show them
    assert [u for _, u in live_ids(at)] == ["another earlier one", "earlier question"]
    assert any("2 conversation(s)" in c.value for c in at.caption)
    at.text_input(key="live_conv").input("OLD-B…").run()  # copied from a table cell, any case
    assert [u for _, u in live_ids(at)] == ["another earlier one"]
    at.text_input(key="live_conv").input("ld-a").run()  # a prefix, not a substring
    assert live_ids(at) == []
    at.text_input(key="live_conv").input(XSS[1]).run()  # what was typed is echoed as text, not markup
    assert any("\\!\\[x\\]" in c.value for c in at.caption)
    at.text_input(key="live_conv").input("").run()

    at.toggle(key="live_paused").set_value(True).run()
    write_log(live_log, [rec("paused-1", 0, datetime.now(timezone.utc), "while paused")])
    run_until(at, lambda a: metric(a, "Waiting (paused)") == "1")
    assert metric(at, "Waiting (paused)") == "1" and count(at) == 0
    at.toggle(key="live_paused").set_value(False).run()
    run_until(at, lambda a: count(a) == 1)
    assert live_ids(at)[0][1] == "while paused"

    at.session_state["live_selected"] = "paused-1"  # what a row click stores
    at.run()
    links = at.get("page_link")
    link = next(link for link in links if "paused-1" in str(link.proto))
    assert "conversation=paused-1" in str(link.proto)


def test_live_survives_truncation_replacement_and_new_shards(tmp_path, live_log, monkeypatch):
    at = open_page("live")
    now = datetime.now(timezone.utc)
    live_log.write_text(json.dumps(rec("after-truncate", 0, now, "after truncate")) + "\n")  # truncated
    run_until(at, lambda a: count(a) == 1)
    assert live_ids(at)[0][1] == "after truncate"

    replacement = live_log.with_name("new.tmp")
    write_log(replacement, [rec("replaced", 0, now, "in the replacement file")])
    replacement.replace(live_log)  # rotated/replaced by rename
    run_until(at, lambda a: count(a) == 2)
    assert live_ids(at)[0][1] == "in the replacement file"
    write_log(live_log, [rec("replaced", 1, now, "appended after the rename")])
    run_until(at, lambda a: count(a) == 3)
    assert live_ids(at)[0][1] == "appended after the rename"

    # A folder of shards that grows a new file.
    folder = tmp_path / "shards"
    write_log(folder / "chat.a.jsonl", [rec("shard-a", 0, now, "from shard a")])
    monkeypatch.setenv("CHAT_LOG_PATH", str(folder))
    at = open_page("live")
    assert [u for _, u in live_ids(at)] == ["from shard a"]
    write_log(folder / "chat.b.jsonl", [rec("shard-b", 0, now, "from a new shard b")])
    run_until(at, lambda a: count(a) == 1)
    assert live_ids(at)[0][1] == "from a new shard b"


def test_chat_rejected_and_slow_turns_show_a_message(space, space_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAT_LOG_PATH", str(space.log_path))
    monkeypatch.setenv("CHAT_SPACE_URL", space.url)
    at = open_page("chat")
    too_long = "x" * 40_000
    at.chat_input(key="chat_prompt").set_value(too_long).run()
    assert not at.exception
    assert at.error and "too long" in at.error[0].value
    assert at.session_state["chat_pending"] == too_long

    slow = space_factory(log_path=tmp_path / "slow" / "chat.jsonl", env={"CHAT_ECHO_DELAY": "1"})
    monkeypatch.setenv("CHAT_SPACE_URL", slow.url)
    monkeypatch.setenv("CHAT_LOG_PATH", str(slow.log_path))  # its staff token is beside its log
    monkeypatch.setenv("CHAT_DASHBOARD_TIMEOUT", "1.5")
    at = open_page("chat")
    at.chat_input(key="chat_prompt").set_value("a slow answer please").run()
    assert not at.exception
    assert at.error and "did not answer in time" in at.error[0].value
    assert at.session_state["chat_pending"] == "a slow answer please"


def test_search_by_id_prefix_and_a_pasted_id_opens_it(conv_log):
    at = open_page("conversations")
    at.text_input(key="conv_search").input("recent").run()  # the start of an id
    assert shown_ids(at) == ["recent-1"]
    at.text_input(key="conv_search").input("ancient-1").run()  # a full id, outside the last 7 days
    assert at.selectbox(key="conv_pick").value == "ancient-1"
    assert "old reply" in [t.value for t in at.text]
    assert any("reply time" in c.value for c in at.caption)  # the Space's per-turn time, named for people
    assert not any(c.value.startswith("latency") for c in at.caption)


def test_exports_are_built_only_when_asked_for(conv_log, media, monkeypatch):
    """Reruns do not build the exports: the buttons carry a deferred file, built on click."""
    import chatcore.store.conversation_frames as conversations_mod

    calls = []
    real = conversations_mod.export_turns
    monkeypatch.setattr(conversations_mod, "export_turns", lambda *a, **k: calls.append(1) or real(*a, **k))
    at = open_page("conversations")
    at.selectbox(key="conv_preset").select("All time").run()
    at.run()
    for key in ("conv_csv", "conv_jsonl", "conv_md"):
        button = download(at, key)
        assert button.proto.deferred_file_id and not button.proto.url
    assert calls == []  # three runs, nothing exported
    assert "recent-1" in media(download(at, "conv_jsonl"))  # the click builds it
    assert calls == [1]


def test_table_pages_are_sorted_and_counted_by_the_engine(tmp_path, monkeypatch):
    now = datetime.now(timezone.utc)
    log = tmp_path / "chat.jsonl"
    write_log(log, [rec(f"c-{i:03d}", t, now - timedelta(minutes=500 - i, seconds=-t)) for i in range(120)
                    for t in range(1 + i % 3)])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    at = open_page("conversations")
    assert metric(at, "Conversations") == "120" and metric(at, "Turns") == "240"
    assert shown_ids(at) == [f"c-{i:03d}" for i in range(119, 69, -1)]  # only the first page: 50 newest
    at.number_input(key="conv_page").set_value(3).run()
    assert shown_ids(at) == [f"c-{i:03d}" for i in range(19, -1, -1)]
    at.selectbox(key="conv_sort").select("Most turns").run()
    assert len(shown_ids(at)) == 50 and all(int(c[2:]) % 3 == 2 for c in shown_ids(at)[:40])
