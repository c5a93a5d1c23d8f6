"""Dashboard features under AppTest: personal data masking, ratings, tags and notes, replay.

Chat feedback and replay run against a real local Space (conftest.py); the rest
reads a log and annotation files written by the test.
"""
from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from chatcore.log import annotations
from chatcore.store import conversation_frames as conv
from chatcore.dashboard import views as dash

from conftest import free_port
from test_pages import _env, button, download, media, metric, open_page, rec, shown_ids, write_log  # noqa: F401

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"


def all_text(at) -> str:
    """Every text the page shows (markdown, text, captions, code, dataframes, html)."""
    parts = [m.value for m in at.markdown] + [t.value for t in at.text] + [c.value for c in at.caption]
    parts += [c.value for c in at.code] + [s.value for s in at.subheader] + [e.value for e in at.error]
    for frame in at.dataframe:
        parts.append(frame.value.to_csv())
    parts += [h.proto.body for h in at.get("html")]
    parts += [str(s.proto) for s in at.selectbox]
    return "\n".join(str(p) for p in parts)


@pytest.fixture
def pii_log(tmp_path, monkeypatch):
    now = datetime.now(timezone.utc)
    log = tmp_path / "chat.jsonl"
    write_log(log, [
        rec("pii-1", 0, now - timedelta(minutes=5), f"My mail is {EMAIL}, card {CARD}",
            f"Thanks, I noted {EMAIL}."),
        rec("pii-1", 1, now - timedelta(minutes=4), "Call me on +44 20 7946 0958", "Will do."),
        rec("clean-1", 0, now - timedelta(minutes=3), "Where is my order?", "It ships tomorrow."),
    ])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    return log, now


# ------------------------------------------------------------------------ masking


def test_mask_personal_data_in_table_transcript_and_exports(pii_log, media):
    at = open_page("conversations")
    at.selectbox(key="conv_pick").select("pii-1").run()
    assert EMAIL in all_text(at)  # off by default
    at.toggle(key="conv_mask").set_value(True).run()
    assert not at.exception
    text = all_text(at)
    assert EMAIL not in text and CARD not in text and "7946" not in text
    assert "[email]" in text and "[card]" in text
    for key in ("conv_csv", "conv_jsonl", "conv_md"):
        data = media(download(at, key))
        assert EMAIL not in data and CARD not in data and "7946 0958" not in data, key
        assert "[email]" in data
    rows = list(csv.DictReader(io.StringIO(media(download(at, "conv_csv")))))
    assert {r["conversation_id"] for r in rows} == {"pii-1", "clean-1"}  # masking keeps every turn
    at.toggle(key="conv_mask").set_value(False).run()
    assert EMAIL in media(download(at, "conv_jsonl"))


# ------------------------------------------------------------------------ ratings


def test_rating_helpers():
    now = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)
    fb = pd.DataFrame({
        "ts": pd.to_datetime([now - timedelta(hours=1), now - timedelta(hours=2), now - timedelta(days=1),
                              now - timedelta(days=30), now - timedelta(hours=3)], utc=True),
        "conversation_id": ["a", "a", "b", "c", "b"], "turn": [0, 1, 0, 0, 0],
        "rating": ["down", "up", "down", "down", "up"], "by": ["staff", "visitor", "staff", "visitor", "visitor"],
        "source": ["x"] * 5})
    # A visitor's rating outranks staff's on the same turn.
    assert conv.ratings_by_turn(fb) == {("a", 0): "down", ("a", 1): "up", ("b", 0): "up", ("c", 0): "down"}
    counts = conv.rating_counts(fb).set_index("conversation_id")
    assert counts.loc["a"].tolist() == [1, 1] and counts.loc["b"].tolist() == [1, 0]
    daily = dash.negative_share_by_day(fb, now=now, tz=timezone.utc, days=14)
    assert len(daily) == 14 and daily["day"].iloc[-1] == "11-21"
    assert daily["ratings"].iloc[-1] == 3 and daily["negative"].iloc[-1] == 1
    assert daily["negative_share"].iloc[-2] == 100.0 and pd.isna(daily["negative_share"].iloc[0])
    assert daily["ratings"].sum() == 4  # 30 days ago is outside
    assert dash.ratings_today(fb, now=now, tz=timezone.utc) == (3, 1)


def test_conversations_show_and_filter_ratings(pii_log):
    log, _ = pii_log
    annotations.record_feedback(log, "pii-1", 0, "down", by="visitor", source="widget")
    annotations.record_feedback(log, "pii-1", 1, "up", by="staff", source="dashboard")
    annotations.record_feedback(log, "clean-1", 0, "up", by="visitor", source="widget")
    at = open_page("conversations")
    table = at.dataframe[0].value.set_index("conversation_id")
    assert table.loc["pii-1", "rated down"] == 1 and table.loc["clean-1", "rated down"] == 0
    at.selectbox(key="conv_rating").select("rated negatively").run()
    assert shown_ids(at) == ["pii-1"]
    captions = [c.value for c in at.caption]
    assert any("· rated down" in c for c in captions) and any("· rated up" in c for c in captions)
    at.selectbox(key="conv_rating").select("rated positively").run()
    assert set(shown_ids(at)) == {"pii-1", "clean-1"}
    at.selectbox(key="conv_rating").select("any").run()
    assert set(shown_ids(at)) == {"pii-1", "clean-1"}


def test_overview_negative_ratings(pii_log):
    log, _ = pii_log
    annotations.record_feedback(log, "pii-1", 0, "down", by="visitor", source="widget")
    annotations.record_feedback(log, "pii-1", 1, "down", by="staff", source="dashboard")
    annotations.record_feedback(log, "clean-1", 0, "up", by="visitor", source="widget")
    at = open_page("overview")
    assert not at.exception
    assert metric(at, "Negative ratings today") == "2"
    assert metric(at, "Ratings today") == "3"
    assert metric(at, "Negative share today") == "67 %"
    assert "Negative ratings" in [s.value for s in at.subheader]
    assert len(at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")) >= 2


def test_chat_thumbs_are_saved_as_staff_feedback(space, monkeypatch):
    monkeypatch.setenv("CHAT_LOG_PATH", str(space.log_path))
    monkeypatch.setenv("CHAT_SPACE_URL", space.url)
    at = open_page("chat")
    cid = at.session_state["chat_cid"]
    at.chat_input(key="chat_prompt").set_value("first question").run()
    at.chat_input(key="chat_prompt").set_value("second question").run()
    assert not at.exception and len(at.feedback) == 2
    at.feedback[1].set_value(0).run()  # thumbs down on the second reply (turn 1)
    at.feedback[0].set_value(1).run()  # thumbs up on the first (turn 0)
    assert not at.exception and not at.warning
    fb = annotations.load_feedback(space.log_path)
    mine = fb[fb["conversation_id"] == cid]
    assert sorted(zip(mine["turn"], mine["rating"], mine["by"], mine["source"])) == [
        (0, "up", "staff", "dashboard"), (1, "down", "staff", "dashboard")]
    # The turn numbers are the Space's: the same as in the log.
    logged = {r["turn"]: r["user_text"] for r in space.records() if r["conversation_id"] == cid}
    assert logged == {0: "first question", 1: "second question"}
    at.feedback[1].set_value(1).run()  # a changed mind wins
    assert annotations.feedback_by_turn(space.log_path)[(cid, 1)] == "up"


# ------------------------------------------------------------------- tags and notes


def test_tags_and_notes(pii_log):
    log, _ = pii_log
    at = open_page("conversations")
    at.selectbox(key="conv_pick").select("pii-1").run()
    assert "No tags yet." in [c.value for c in at.caption]
    suggest = at.pills(key="conv_tag_suggest_pii-1")
    assert {"escalated", "bug", "resolved"} <= set(suggest.options)
    suggest.set_value("escalated").run()  # a suggestion, one click
    assert "escalated" not in at.pills(key="conv_tag_suggest_pii-1").options
    at.text_input(key="conv_new_tag").input("Needs  Refund").run()  # typed in (normalised)
    button(at, "conv_add_tag").click().run()
    assert not at.exception and not at.error
    assert annotations.load_annotations(log)["pii-1"]["tags"] == {"escalated", "needs refund"}
    pills = at.pills(key="conv_tags_pii-1")
    assert set(pills.options) == {"escalated", "needs refund"}
    table = at.dataframe[0].value.set_index("conversation_id")
    assert table.loc["pii-1", "tags"] == "escalated, needs refund"

    # Remove one.
    pills.set_value("escalated").run()
    button(at, "conv_untag").click().run()
    assert annotations.load_annotations(log)["pii-1"]["tags"] == {"needs refund"}
    assert at.pills(key="conv_tags_pii-1").options == ["needs refund"]

    # A note, shown as text with time and author (markup stays inert).
    note = "Customer asked for **a refund** <img src=x onerror=alert(1)>"
    at.text_area(key="conv_note_text").input(note)
    next(b for b in at.button if b.label == "Save note").click()
    at.run()
    assert not at.exception and not at.error
    assert note in [t.value for t in at.text]
    assert not any("<img" in m.value for m in at.markdown)
    assert any(c.value.endswith("· staff") for c in at.caption)
    assert annotations.load_annotations(log)["pii-1"]["notes"][0][1:] == ("staff", note)

    # Filter and search by tag and by note text.
    at.selectbox(key="conv_tag").select("needs refund").run()
    assert shown_ids(at) == ["pii-1"]
    at.selectbox(key="conv_tag").set_value(None).run()
    assert set(shown_ids(at)) == {"pii-1", "clean-1"}
    at.text_input(key="conv_note_search").input("REFUND").run()
    assert shown_ids(at) == ["pii-1"]
    at.text_input(key="conv_note_search").input("nothing like this").run()
    assert shown_ids(at) == []


def test_bad_tag_shows_a_message(pii_log):
    at = open_page("conversations")
    at.text_input(key="conv_new_tag").input("<b>bad</b>").run()
    button(at, "conv_add_tag").click().run()
    assert not at.exception
    assert at.error and "a tag is 1–32 characters" in at.error[0].value


# -------------------------------------------------------------------------- replay


def test_replay_against_a_real_space(space, monkeypatch):
    cid = f"orig-{uuid.uuid4()}"
    now = datetime.now(timezone.utc)
    # The echo Space answers "You said: <text> (…)"; the first logged reply is identical
    # to what it says now, the second differs.
    write_log(space.log_path, [
        rec(cid, 0, now - timedelta(minutes=2), "hello <b>there</b>", "You said: hello <b>there</b>"),
        rec(cid, 1, now - timedelta(minutes=1), "second", "An older, different reply"),
    ])
    monkeypatch.setenv("CHAT_LOG_PATH", str(space.log_path))
    monkeypatch.setenv("CHAT_SPACE_URL", space.url)
    at = open_page("conversations")
    at.selectbox(key="conv_pick").select(cid).run()
    button(at, "conv_replay_btn").click().run()
    assert not at.exception and not at.error
    result = at.session_state["conv_replays"][cid]["result"]
    assert len(result.turns) == 2 and all(t.error is None for t in result.turns)
    assert result.turns[1].new.startswith("You said: second") and not result.turns[1].same
    assert f"**{result.changed} of 2 turns changed**" in [m.value for m in at.markdown]
    html = [h.proto.body for h in at.main.get("html")]  # the sidebar has its own
    assert len(html) == 4
    joined = "".join(html)
    assert "<del" in joined and "<ins" in joined and "line-through" in joined
    assert "&lt;b&gt;there&lt;/b&gt;" in joined and "<b>there" not in joined  # escaped, not markup
    assert "line-through\">different</del>" in html[2]  # turn 1, logged side
    assert "second" in html[3] and "<ins" in html[3]
    # The replay is logged as its own conversation and linked to the original.
    replays = annotations.load_annotations(space.log_path)[cid]["replays"]
    assert replays == [result.replay_id]
    logged = [r for r in space.records() if r["conversation_id"] == result.replay_id]
    assert [(r["turn"], r["source"]) for r in logged] == [(0, "replay"), (1, "replay")]
    at.run()
    links = [str(link.proto) for link in at.get("page_link")]
    assert any(f"conversation={result.replay_id}" in link for link in links)


def test_replay_with_the_space_down(pii_log):
    at = open_page("conversations")
    at.selectbox(key="conv_pick").select("pii-1").run()
    button(at, "conv_replay_btn").click().run()
    assert not at.exception
    assert at.error and "Cannot reach the Space" in at.error[0].value
    assert not at.main.get("html")
    log, _ = pii_log
    assert annotations.load_annotations(log).get("pii-1", {}).get("replays", []) == []
