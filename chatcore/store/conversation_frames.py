"""Conversations: group turns by conversation_id, filter, summarise, export.

Works on the pandas frame the store returns (columns of ``records.COLUMNS``).
Used by the CLI and by the dashboard pages alike.
"""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo

import pandas as pd

SUMMARY_COLUMNS = ["conversation_id", "turns", "first_ts", "last_ts", "first_user_text"]
#: What summarise_conversations reads: load only these for a conversation list (a 2x faster cold open).
SUMMARY_INPUT_COLUMNS = ("ts", "conversation_id", "turn", "user_text")



def filter_dates(frame: pd.DataFrame, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """Turns with ``since <= ts < until``."""
    mask = pd.Series(True, index=frame.index)
    if since is not None:
        mask &= frame["ts"] >= pd.Timestamp(since)
    if until is not None:
        mask &= frame["ts"] < pd.Timestamp(until)
    return frame[mask]


def summarise_conversations(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per conversation: id, turns, first/last time, first question; newest first."""
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    ordered = frame.sort_values("ts", kind="stable")
    grouped = ordered.groupby("conversation_id", sort=False, observed=True)
    summary = pd.DataFrame({
        "turns": grouped.size(),
        "first_ts": grouped["ts"].min(),
        "last_ts": grouped["ts"].max(),
        "first_user_text": grouped["user_text"].first(),
    }).reset_index()
    summary["conversation_id"] = summary["conversation_id"].astype(str)
    return summary.sort_values("last_ts", ascending=False, kind="stable").reset_index(drop=True)[SUMMARY_COLUMNS]


def _iso(ts) -> str | None:
    if ts is None or pd.isna(ts):
        return None
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_conversations(summary: pd.DataFrame, fmt: str) -> str:
    rows = [
        {
            "conversation_id": r.conversation_id,
            "turns": int(r.turns),
            "first_ts": _iso(r.first_ts),
            "last_ts": _iso(r.last_ts),
            "first_user_text": r.first_user_text,
        }
        for r in summary.itertuples(index=False)
    ]
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if not rows:
        return "no conversations\n"
    lines = [f"{'conversation_id':<36}  {'turns':>5}  {'first (UTC)':<19}  {'last (UTC)':<19}  first question"]
    for r in rows:
        question = " ".join((r["first_user_text"] or "").split())
        question = question if len(question) <= 60 else question[:59] + "…"
        lines.append(
            f"{r['conversation_id']:<36}  {r['turns']:>5}  {r['first_ts'][:19].replace('T', ' '):<19}  "
            f"{r['last_ts'][:19].replace('T', ' '):<19}  {question}"
        )
    lines.append(f"{len(rows)} conversation(s)")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ export

EXPORT_FIELDS = ["ts", "conversation_id", "turn", "source", "user_text", "response", "latency_ms", "error", "backend", "model"]


def _turn_dicts(turns: pd.DataFrame) -> list[dict]:
    ordered = turns.sort_values("ts", kind="stable")
    out = []
    for row in ordered.to_dict("records"):
        item = {}
        for key in EXPORT_FIELDS:
            value = row.get(key)
            if key == "ts":
                value = _iso(value)
            elif value is not None and not isinstance(value, str) and pd.isna(value):
                value = None
            elif hasattr(value, "item"):  # numpy scalar
                value = value.item()
            item[key] = value
        out.append(item)
    return out


def export_turns(turns: pd.DataFrame, fmt: str) -> str:
    """Turns (any set, e.g. the filtered view) as ``jsonl`` or ``csv`` text."""
    rows = _turn_dicts(turns)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_safe(v) for k, v in r.items()})
        return buf.getvalue()
    raise ValueError(f"unknown export format {fmt!r}")


def _csv_safe(value):
    """Keep spreadsheet programs from running a cell as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _event_md(e: dict) -> list[str]:
    """One event line (schema v2) of a conversation in a markdown transcript."""
    staff, text, kind = e.get("staff") or "staff", e.get("text") or "", e.get("kind")
    if kind == "staff_message":
        return [f"**Staff ({_md_inline(staff)}):** — {e.get('ts')}", "", _md_quote(text), ""]
    if kind == "visitor_message":
        return [f"**User (to staff):** — {e.get('ts')}", "", _md_quote(text), ""]
    what = {"handoff_requested": "the visitor asked for a person",
            "handoff_taken": f"{_md_inline(staff)} took over",
            "handoff_returned": f"{_md_inline(staff)} handed back to the bot",
            "handoff_timeout": "nobody took it in time: the bot carried on",
            "conversation_resolved": f"{_md_inline(staff)} marked it resolved"}.get(kind, str(kind))
    return [f"> {what} — {e.get('ts')}", ""]


def _md_inline(text: str) -> str:
    return re.sub(r"[^\w .@'-]", "_", str(text))[:64]


def conversation_lines(turns: pd.DataFrame, events: list[dict] | None = None) -> list[dict]:
    """Every line of one conversation in log order: its turns (as :data:`EXPORT_FIELDS`, with
    ``kind`` ``turn``) and its ``events`` (schema v2 lines: visitor messages to staff, staff
    messages, handoff steps) in their places.

    An event is written with ``at_turn``, the number the next turn would get, so it
    belongs after every turn below that number and before the turn that has it; events
    of one place keep their time order.
    """
    rows = _turn_dicts(turns)
    pending = sorted(events or [], key=lambda e: (e.get("at_turn") or 0))  # stable: time order kept
    out: list[dict] = []
    for r in rows:
        while pending and r["turn"] is not None and (pending[0].get("at_turn") or 0) <= r["turn"]:
            out.append(pending.pop(0))
        out.append({"kind": "turn", **r})
    out.extend(pending)
    return out


def markdown_transcript(turns: pd.DataFrame, events: list[dict] | None = None) -> str:
    """The conversation as markdown; ``events`` (its schema v2 lines: staff messages, takeover,
    hand-back, …) in their places (:func:`conversation_lines`)."""
    rows = _turn_dicts(turns)
    if not rows:
        return ""
    cid = rows[0]["conversation_id"]
    out = [f"# Conversation {cid}", "",
           f"{len(rows)} turn(s), {rows[0]['ts']} – {rows[-1]['ts']}", ""]
    for r in conversation_lines(turns, events):
        if r["kind"] != "turn":
            out += _event_md(r)
            continue
        latency = f", {r['latency_ms']:.0f} ms" if r.get("latency_ms") is not None else ""
        out += [f"## Turn {r['turn'] if r['turn'] is not None else '?'} — {r['ts']} ({r['source']}{latency})", "",
                "**User:**", "", _md_quote(r["user_text"]), "",
                "**Assistant:**", "", _md_quote(r["response"]), ""]
        if r.get("error"):
            out += [f"> error: {r['error']}", ""]
    return "\n".join(out)


def _md_quote(text: str | None) -> str:
    """Text as an indented code block: markdown or HTML inside it stays inert."""
    text = text or ""
    return "\n".join("    " + line for line in text.split("\n"))


def export_file_name(conversation_id: str, ext: str) -> str:
    """A download name for one conversation that cannot leave the download folder.

    Ids from older logs were never checked: keep letters, digits and ``-_.``, nothing else.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(conversation_id)).strip("._")[:80] or "conversation"
    return f"conversation-{safe}.{ext}"


#: Columns of a conversation's CSV export: what a line is (``kind``: ``turn``, ``staff_message``,
#: ``visitor_message``, ``handoff_requested``, …), then a turn's fields, then an event's.
CONVERSATION_FIELDS = ["kind", *EXPORT_FIELDS, "staff", "text", "at_turn"]


def export_conversation(turns: pd.DataFrame, fmt: str, events: list[dict] | None = None) -> str:
    """One conversation with every line in log order (:func:`conversation_lines`): ``md``, or
    ``jsonl``/``csv`` with a ``kind`` per line (``turn`` or the event's kind)."""
    if fmt == "md":
        return markdown_transcript(turns, events)
    lines = conversation_lines(turns, events)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CONVERSATION_FIELDS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for r in lines:
            writer.writerow({k: _csv_safe(v) for k, v in r.items()})
        return buf.getvalue()
    raise ValueError(f"unknown export format {fmt!r}")


# ------------------------------------------------------------ dashboard filters

#: Date-range presets the dashboard offers, in menu order.
DATE_PRESETS = ("Last hour", "Today", "Last 24 hours", "Last 7 days", "All time", "Custom")


def preset_range(preset: str, now: datetime | None = None, tz: tzinfo = timezone.utc,
                 custom: tuple[date | None, date | None] | None = None) -> tuple[datetime | None, datetime | None]:
    """``(since, until)`` for a preset of :data:`DATE_PRESETS` in the viewer's zone ``tz``.

    ``Today`` starts at local midnight; ``Custom`` takes ``(first day, last day)``
    (both inclusive, either may be None); ``All time`` is ``(None, None)``.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(tz)
    if preset == "Last hour":
        return now - timedelta(hours=1), None
    if preset == "Today":
        return datetime.combine(now.date(), time.min, tzinfo=tz), None
    if preset == "Last 24 hours":
        return now - timedelta(hours=24), None
    if preset == "Last 7 days":
        return now - timedelta(days=7), None
    if preset == "All time":
        return None, None
    if preset == "Custom":
        first, last = custom or (None, None)
        since = datetime.combine(first, time.min, tzinfo=tz) if first else None
        until = datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz) if last else None
        return since, until
    raise ValueError(f"unknown date preset {preset!r}")


def search_turns(frame: pd.DataFrame, query: str | None) -> pd.DataFrame:
    """Turns whose question or reply contains ``query`` (case-insensitive, plain text)."""
    needle = (query or "").strip()
    if not needle or frame.empty:
        return frame
    user = frame["user_text"].fillna("").astype(str)
    reply = frame["response"].fillna("").astype(str)
    mask = user.str.contains(needle, case=False, regex=False) | reply.str.contains(needle, case=False, regex=False)
    return frame[mask]


def filter_sources(frame: pd.DataFrame, sources: list[str] | tuple[str, ...] | None) -> pd.DataFrame:
    """Turns from one of ``sources`` (all turns when empty or None)."""
    if not sources or frame.empty:
        return frame
    return frame[frame["source"].astype(str).isin(list(sources))]


def conversations_matching(frame: pd.DataFrame, query: str | None) -> pd.DataFrame:
    """All turns of every conversation that has at least one turn matching ``query``."""
    hits = search_turns(frame, query)
    if hits is frame:
        return frame
    return frame[frame["conversation_id"].isin(set(hits["conversation_id"]))]


TABLE_COLUMNS = ["conversation_id", "turns", "first_ts", "last_ts", "duration_s", "source",
                 "errors", "first_user_text"]


def conversation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarise_conversations` plus duration (s), source(s) and error count."""
    summary = summarise_conversations(frame)
    if summary.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    grouped = frame.groupby("conversation_id", sort=False, observed=True)
    sources = grouped["source"].agg(lambda s: ", ".join(sorted({str(x) for x in s if x})))
    errors = grouped["error"].agg(lambda s: int(sum(1 for x in s if isinstance(x, str) and x)))
    summary["duration_s"] = (summary["last_ts"] - summary["first_ts"]).dt.total_seconds()
    summary["source"] = summary["conversation_id"].map(sources.rename(index=str))
    summary["errors"] = summary["conversation_id"].map(errors.rename(index=str)).fillna(0).astype(int)
    return summary[TABLE_COLUMNS]


def format_duration(seconds: float | None) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 05 min``."""
    if seconds is None or pd.isna(seconds):
        return ""
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# ------------------------------------------------------- ratings, tags and notes

#: Choices of the dashboard's rating filter, in menu order.
RATING_FILTERS = ("any", "rated negatively", "rated positively")


def ratings_by_turn(feedback: pd.DataFrame) -> dict[tuple[str, int], str]:
    """``{(conversation_id, turn): "up"|"down"}`` from :func:`chatcore.log.annotations.load_feedback`.

    A visitor's rating of a turn outranks a staff rating of the same turn.
    """
    out: dict[tuple[str, int], str] = {}
    if feedback is None or feedback.empty:
        return out
    ordered = feedback.assign(_rank=feedback["by"].map(lambda b: 1 if b == "visitor" else 0))
    for row in ordered.sort_values("_rank", kind="stable").itertuples(index=False):
        out[(str(row.conversation_id), int(row.turn))] = row.rating
    return out


def rating_counts(feedback: pd.DataFrame) -> pd.DataFrame:
    """Rated turns per conversation: columns ``conversation_id``, ``up``, ``down``."""
    rows: dict[str, dict] = {}
    for (cid, _turn), rating in ratings_by_turn(feedback).items():
        entry = rows.setdefault(cid, {"conversation_id": cid, "up": 0, "down": 0})
        entry[rating] += 1
    return pd.DataFrame(list(rows.values()), columns=["conversation_id", "up", "down"])


def with_annotations(table: pd.DataFrame, feedback: pd.DataFrame, annotations: dict[str, dict]) -> pd.DataFrame:
    """:func:`conversation_table` plus ``up``/``down`` rating counts and the ``tags`` (sorted list)."""
    out = table.copy()
    counts = rating_counts(feedback).set_index("conversation_id")
    ids = out["conversation_id"].astype(str)
    out["up"] = ids.map(counts["up"]).fillna(0).astype(int) if len(counts) else 0
    out["down"] = ids.map(counts["down"]).fillna(0).astype(int) if len(counts) else 0
    out["tags"] = [sorted(annotations.get(cid, {}).get("tags", ())) for cid in ids]
    return out


def filter_rated(table: pd.DataFrame, which: str | None) -> pd.DataFrame:
    """Rows of :func:`with_annotations` with a negative / positive rating (all for ``any``)."""
    if not which or which == "any":
        return table
    if which == "rated negatively":
        return table[table["down"] > 0]
    if which == "rated positively":
        return table[table["up"] > 0]
    raise ValueError(f"unknown rating filter {which!r}")


def filter_annotated(table: pd.DataFrame, annotations: dict[str, dict], tag: str | None = None,
                     text: str | None = None) -> pd.DataFrame:
    """Rows whose conversation has ``tag`` and/or a note or tag containing ``text``."""
    if not tag and not (text or "").strip():
        return table
    from chatcore.log.annotations import conversations_with

    hits = conversations_with(annotations, tag=tag or None, text=(text or "").strip() or None)
    return table[table["conversation_id"].astype(str).isin(hits)]
