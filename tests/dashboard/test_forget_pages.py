"""A forgotten conversation leaves the open dashboard's pages without a restart."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from chatcore.log.retention import forget
from test_pages import _env, open_page, rec, run_until, shown_ids, write_log  # noqa: F401  (_env: autouse)
from conftest import free_port


def _live_text(at) -> str:
    """Every table of the Live page: the inbox of conversations now and the stream of turns."""
    return " ".join(str(v) for d in at.dataframe for v in d.value.to_dict("list").values())


def test_conversations_and_live_drop_a_forgotten_conversation(tmp_path, monkeypatch):
    log = tmp_path / "logs" / "chat.jsonl"
    now = datetime.now(timezone.utc)
    write_log(log, [rec("keep-me-0001", 0, now - timedelta(minutes=3), "hello there"),
                    rec("forget-me-01", 0, now - timedelta(minutes=2), "my card is 4111 1111 1111 1111"),
                    rec("forget-me-01", 1, now - timedelta(minutes=1), "and call me on 555 0100")])
    monkeypatch.setenv("CHAT_LOG_PATH", str(log))
    monkeypatch.setenv("CHAT_SPACE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CHAT_LIVE_REFRESH", "0.2")
    conversations = open_page("conversations")
    assert set(shown_ids(conversations)) == {"keep-me-0001", "forget-me-01"}
    live = open_page("live")
    assert "4111" in _live_text(live)

    forget(log, "forget-me-01", by="test")

    run_until(conversations, lambda a: set(shown_ids(a)) == {"keep-me-0001"})
    assert set(shown_ids(conversations)) == {"keep-me-0001"}
    run_until(live, lambda a: "4111" not in _live_text(a))
    assert "4111" not in _live_text(live) and "hello there" in _live_text(live)


def test_the_staff_inbox_drops_a_forgotten_conversation(tmp_path):
    from chatcore.log.records import make_event, make_record
    from chatcore.log.writer import LogWriter
    from chatcore.staff.inbox import LiveConversations

    log = tmp_path / "logs" / "chat.jsonl"
    w = LogWriter(log)
    for cid in ("keep-inbox-01", "forget-inbox-1"):
        w.append(make_record(conversation_id=cid, turn=0, user_text=f"card 4111 1111 1111 1111 from {cid}",
                             response="ok", latency_ms=3, source="widget", backend="echo"))
        w.append(make_event(conversation_id=cid, kind="handoff_requested", at_turn=1))
    inbox = LiveConversations(log)
    assert {r["conversation_id"] for r in inbox.active(15)} == {"keep-inbox-01", "forget-inbox-1"}
    assert inbox.transcript("forget-inbox-1")

    forget(log, "forget-inbox-1", by="test")
    assert [r["conversation_id"] for r in inbox.active(15)] == ["keep-inbox-01"]
    assert inbox.transcript("forget-inbox-1") == []
    w.append(make_record(conversation_id="keep-inbox-01", turn=1, user_text="still here", response="ok",
                         latency_ms=3, source="widget", backend="echo"))
    assert "still here" in str(inbox.transcript("keep-inbox-01"))  # followed on after the rewrite
