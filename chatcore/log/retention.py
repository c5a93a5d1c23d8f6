"""Deleting from the log: forgetting one conversation, and retention by age.

Both work on the live log folder while Spaces append and dashboards read.

*Forget* rewrites every shard holding a line of the conversation without those lines
(:mod:`chatcore.log.rewrite`: no line of another conversation is lost or torn while writers
append). The annotations of the conversation go the same way, the store's persisted cache
drops every file holding the conversation, and an audit line (who, what, when, how
many lines; never the content) goes to ``annotations/audit.jsonl``. Each rewrite is
noted (file identities and removed byte ranges only) in ``.chatcore-cache/rewrites.jsonl``
so a running :class:`chatcore.log.follow.LogTail` continues where it was instead of reading
the shard again, and the id goes to the forgotten registry (:mod:`chatcore.log.forgotten`),
which every running Space, follower and page honours.

*Retention* deletes whole daily shards (a ``YYYY-MM-DD`` in the file name) older than
``keep_days``, then the annotations of conversations left in no shard, and the cache
entries of the deleted shards; the conversations that left with them are registered as
forgotten too.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from chatcore.config import log_folder
from chatcore.log.cache_purge import _contains, drop_cache_of_deleted, purge_cache
from chatcore.log.forgotten import note_rewrite, record_forgotten
from chatcore.log.records import check_conversation_id, utc_now_iso
from chatcore.log.rewrite import Rewrite, _fsync_dir, _lines, _open_locked, rewrite_without
from chatcore.log.shards import shard_paths
from chatcore.store.ingest import shard_day

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
ANNOTATION_FILES = ("feedback.jsonl", "notes.jsonl", "suites.jsonl")
EVAL_RUNS = "eval-runs"


def shard_files(log_path) -> list[Path]:
    """Every shard of the log: the ``*.jsonl`` files of its folder."""
    return shard_paths(log_folder(log_path))


def _annotation_files(log_path) -> list[Path]:
    from chatcore.log.annotations import annotations_dir

    d = annotations_dir(log_path)
    return [d / name for name in ANNOTATION_FILES if (d / name).is_file()]


def _note_rewrite(rw: Rewrite, conversation_id: str | None) -> None:
    note_rewrite(rw.path, rw.old, rw.new, rw.ranges, conversation_id)


# ------------------------------------------------------------------------- forget


def _quoted(cid: str) -> bytes:
    return b'"' + cid.encode("utf-8") + b'"'


def _drop_conversation(cid: str) -> Callable[[bytes], bool]:
    import orjson

    quoted = _quoted(cid)

    def drop(line: bytes) -> bool:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            # a torn fragment: drop it when it may be this conversation's
            return quoted in line
        return isinstance(obj, dict) and obj.get("conversation_id") == cid

    return drop


def linked_replays(log_path, conversation_id: str) -> list[str]:
    """Ids of the replays of a conversation (replay links in the notes, eval run reports):
    they repeat its visitor's questions, so forgetting it forgets them too."""
    import orjson

    from chatcore.log.annotations import annotations_dir

    found: list[str] = []
    needle = _quoted(conversation_id)
    try:
        with open(annotations_dir(log_path) / "notes.jsonl", "rb") as f:
            for line in f:
                if needle not in line:
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if obj.get("kind") == "replay" and obj.get("conversation_id") == conversation_id \
                        and isinstance(obj.get("value"), str):
                    found.append(obj["value"])
    except OSError:
        pass
    for report in sorted((annotations_dir(log_path) / EVAL_RUNS).glob("*.json")):
        if not _contains(report, [needle]):
            continue
        try:
            data = orjson.loads(report.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        for conv in (data.get("conversations") or []) if isinstance(data, dict) else []:
            if isinstance(conv, dict) and conv.get("conversation_id") == conversation_id \
                    and isinstance(conv.get("replay_id"), str):
                found.append(conv["replay_id"])
    out = []
    for rid in found:
        try:
            check_conversation_id(rid)
        except ValueError:
            continue
        if rid != conversation_id and rid not in out:
            out.append(rid)
    return out


def _forget_in_reports(log_path, conversation_id: str, dry_run: bool) -> int:
    """Drop the conversation from eval run reports (they hold its questions and replies)."""
    import json

    from chatcore.log.annotations import annotations_dir

    needle = _quoted(conversation_id)
    changed = 0
    for report in sorted((annotations_dir(log_path) / EVAL_RUNS).glob("*.json")):
        if not _contains(report, [needle]):
            continue
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("conversations"), list):
            continue
        kept = [c for c in data["conversations"]
                if not (isinstance(c, dict) and conversation_id in (c.get("conversation_id"), c.get("replay_id")))]
        if len(kept) == len(data["conversations"]):
            continue
        changed += 1
        if dry_run:
            continue
        data["conversations"] = kept
        tmp = report.with_name(report.name + f".{os.getpid()}.forget.tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, report)
    return changed


def forget(log_path, conversation_id: str, *, by: str, dry_run: bool = False, _seen: set | None = None) -> dict:
    """Remove every line of ``conversation_id`` from every shard, its annotations, eval
    reports and cached copies, and the same for its replays; append an audit line.
    Returns counts (and the shard names)."""
    check_conversation_id(conversation_id)
    seen = _seen if _seen is not None else set()
    seen.add(conversation_id)
    replays = [r for r in linked_replays(log_path, conversation_id) if r not in seen]
    drop = _drop_conversation(conversation_id)
    needle = _quoted(conversation_id)
    shards, lines, rewritten = [], 0, []
    for p in shard_files(log_path):
        # the note comes first, so a tail that sees the new file already knows it
        rw = rewrite_without(p, drop, needle, dry_run=dry_run,
                             before_rename=lambda r: _note_rewrite(r, conversation_id))
        if rw.removed:
            shards.append(p.name)
            lines += rw.removed
            if not dry_run:
                rewritten.append(rw)
    notes = 0
    for p in _annotation_files(log_path):
        notes += rewrite_without(p, drop, needle, dry_run=dry_run,
                                 before_rename=lambda r: _note_rewrite(r, conversation_id)).removed
    reports = _forget_in_reports(log_path, conversation_id, dry_run)
    result = {"conversation_id": conversation_id, "lines": lines, "shards": shards, "annotations": notes,
              "eval_reports": reports, "replays": [], "dry_run": dry_run}
    for rid in replays:
        sub = forget(log_path, rid, by=by, dry_run=dry_run, _seen=seen)
        if sub["lines"] or sub["annotations"]:
            result["replays"].append({"conversation_id": rid, "lines": sub["lines"]})
    if dry_run:
        return result
    # after the rewrite, so a holder that drops the id and reads the log again finds none of it
    record_forgotten(log_path, [conversation_id])
    cached = purge_cache(log_path, [conversation_id.encode("utf-8")], [rw.path for rw in rewritten])
    # a dashboard may have been writing a cache segment of the old shard meanwhile
    time.sleep(0.2)
    cached += purge_cache(log_path, [conversation_id.encode("utf-8")])
    result["cache_files"] = cached
    audit(log_path, {"action": "forget", "conversation_id": conversation_id, "by": by,
                     "lines": lines, "shards": shards, "annotations": notes, "eval_reports": reports,
                     "replays": [r["conversation_id"] for r in result["replays"]]})
    return result


def audit(log_path, record: dict) -> None:
    from chatcore.log.annotations import annotations_dir
    from chatcore.log.writer import LogWriter

    w = LogWriter(annotations_dir(log_path) / AUDIT_FILE)
    if not w.append({"ts": utc_now_iso(), **record}):
        raise OSError(f"could not write the audit line: {w.last_error}")
    w.close()


def matcher(text: str) -> Callable[[str], bool]:
    """A test for an e-mail (any case) or a phone number (digits, any separators)."""
    text = (text or "").strip()
    if not text:
        raise ValueError("give the e-mail or phone number to look for")
    digits = re.sub(r"\D", "", text)
    if "@" not in text and len(digits) >= 5 and re.fullmatch(r"[\d\s().+-]+", text):
        # the number as given, or after a country code of 1-3 digits
        pattern = re.compile(r"(?<!\d)(?:\d{1,3}[\s().-]{0,3})?" + r"[\s().-]{0,3}".join(digits) + r"(?!\d)")
        return lambda s: bool(pattern.search(s))
    low = text.lower()
    return lambda s: low in s.lower()


def find_matching(log_path, text: str) -> dict[str, int]:
    """``{conversation_id: turns}`` of conversations whose visitor text or replies
    contain ``text`` (an e-mail or phone number)."""
    from chatcore.log.records import BadRecord
    from chatcore.store import parse_line

    hit = matcher(text)
    out: dict[str, int] = {}
    for line in _log_lines(log_path):
        try:
            rec = parse_line(line.rstrip(b"\n"))
        except BadRecord:
            continue
        texts = [rec.get("user_text") or "", rec.get("response") or ""]
        if any(isinstance(t, str) and hit(t) for t in texts):
            cid = rec["conversation_id"]
            out[cid] = out.get(cid, 0) + 1
    return out


def _log_lines(log_path):
    """Every line of every shard of the log (shards that cannot be opened are skipped)."""
    return _shard_lines(shard_files(log_path))


def _shard_lines(shards: list[Path]):
    for p in shards:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            for _, line in _lines(fd, os.fstat(fd).st_size):
                yield line
        finally:
            os.close(fd)


# ---------------------------------------------------------------------- retention


def retention(log_path, keep_days: int, *, today: date | None = None, dry_run: bool = False,
              by: str = "retention") -> dict:
    """Delete the daily shards older than ``keep_days`` days, then the annotations of
    conversations in no shard any more, and the cache entries of deleted shards."""
    if keep_days < 1:
        raise ValueError("keep at least 1 day")
    today = today or datetime.now(timezone.utc).date()
    cutoff = today - timedelta(days=keep_days)
    old, undated = [], []
    for p in shard_files(log_path):
        day = shard_day(p)
        if day is None:
            undated.append(p.name)
        elif day < cutoff:
            old.append(p)
    result = {"cutoff": cutoff.isoformat(), "deleted": [p.name for p in old], "undated": undated,
              "annotations": 0, "dry_run": dry_run}
    if dry_run or not old:
        return result
    leaving = _ids_in(old)
    for p in old:
        fd = _open_locked(p)  # a writer mid-append finishes its line first
        if fd is None:
            continue
        try:
            p.unlink(missing_ok=True)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    _fsync_dir(log_folder(log_path))
    started = datetime.now(timezone.utc)
    live = _live_ids(log_path)
    record_forgotten(log_path, sorted(leaving - live))
    result["annotations"] = _drop_orphan_annotations(log_path, live, started)
    result["cache_files"] = drop_cache_of_deleted(log_path)
    audit(log_path, {"action": "retention", "by": by, "keep_days": keep_days, "deleted": result["deleted"],
                     "annotations": result["annotations"]})
    return result


def _live_ids(log_path) -> set[str]:
    return _ids_in(shard_files(log_path))


def _ids_in(shards: list[Path]) -> set[str]:
    """Every conversation id with a line in ``shards``."""
    import orjson

    ids = set()
    for line in _shard_lines(shards):
        if b"conversation_id" not in line:
            continue
        try:
            cid = orjson.loads(line).get("conversation_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(cid, str):
            ids.add(cid)
    return ids


def _drop_orphan_annotations(log_path, live: set[str], before: datetime) -> int:
    """Annotations of conversations not in ``live``, written before ``before`` (a
    conversation started after the scan keeps its fresh annotations)."""
    import orjson

    def drop(line: bytes) -> bool:
        try:
            obj = orjson.loads(line)
            cid, ts = obj.get("conversation_id"), obj.get("ts")
        except (orjson.JSONDecodeError, AttributeError):
            return False
        if not isinstance(cid, str) or cid in live or not isinstance(ts, str):
            return False
        try:
            when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when < before

    return sum(rewrite_without(p, drop, b"conversation_id", before_rename=lambda r: _note_rewrite(r, None)).removed
               for p in _annotation_files(log_path))


def start_schedule(log_path, keep_days: int, every_s: float = 3600.0) -> threading.Thread:
    """Run :func:`retention` now and then every ``every_s`` seconds in a daemon thread.
    Replicas sharing the folder take turns through a lock file."""

    def loop() -> None:
        lock_path = log_folder(log_path) / ".chatcore-retention.lock"
        while True:
            try:
                lock_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    res = retention(log_path, keep_days, by="schedule")
                    if res["deleted"]:
                        log.info("retention: deleted %d shard(s) older than %s", len(res["deleted"]), res["cutoff"])
                except BlockingIOError:
                    pass
                finally:
                    os.close(fd)
            except Exception as exc:  # never let the thread die
                log.warning("retention failed: %s", exc)
            time.sleep(every_s)

    th = threading.Thread(target=loop, name="chatcore-retention", daemon=True)
    th.start()
    return th
