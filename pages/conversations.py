"""Conversations: find conversations by date, text and source; read and export them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from chatcore.conversations import (DATE_PRESETS, conversation_table, conversations_matching, export_turns,
                                    filter_dates, filter_sources, format_duration, markdown_transcript,
                                    preset_range)
from chatcore.dashboard import escape_markdown, excerpt, format_ms, format_time, tz_name
from pages._shared import through_entry, header, load_frame, settings, viewer_tz

through_entry()

cfg = settings()
tz = viewer_tz()
ss = st.session_state
now = datetime.now(timezone.utc)
frame, stats = load_frame(cfg.log_path)

# A conversation picked elsewhere (the Live page) arrives as ?conversation=<id>.
wanted = st.query_params.get("conversation")
if wanted and wanted != ss.get("conv_from_link"):
    ss.conv_from_link = wanted
    ss.conv_selected = wanted

header("Conversations", ":material/forum:", f"Grouped by conversation_id · times in {tz_name(tz)}")

with st.container(border=True):
    c1, c2, c3 = st.columns([1.2, 2, 1.5])
    preset = c1.selectbox("Date range", DATE_PRESETS, index=DATE_PRESETS.index("Last 7 days"), key="conv_preset")
    query = c2.text_input("Search questions and replies", key="conv_search", placeholder="e.g. password")
    sources = sorted({str(s) for s in frame["source"].dropna().unique()}) if not frame.empty else []
    chosen = c3.multiselect("Source", sources, key="conv_sources", placeholder="All sources")
    custom = None
    if preset == "Custom":
        today = now.astimezone(tz).date()
        picked = st.date_input("Days", value=(today - timedelta(days=7), today), key="conv_days")
        if isinstance(picked, (tuple, list)):
            custom = (picked[0] if len(picked) > 0 else None, picked[1] if len(picked) > 1 else None)
        else:
            custom = (picked, picked)
    since, until = preset_range(preset, now=now, tz=tz, custom=custom)

view = filter_sources(filter_dates(frame, since, until), chosen)
view = conversations_matching(view, query)
table = conversation_table(view)

m1, m2, m3 = st.columns(3)
m1.metric("Conversations", len(table))
m2.metric("Turns", len(view))
m3.metric("Errors", int(table["errors"].sum()) if len(table) else 0)

with st.container(border=True):
    st.subheader("Matching conversations", anchor=False)
    if table.empty:
        st.info("No conversations match these filters.", icon=":material/search_off:")
    else:
        shown = {
            "conversation_id": list(table["conversation_id"]),
            "turns": [int(t) for t in table["turns"]],
            "first": [format_time(t, tz, now) for t in table["first_ts"]],
            "last": [format_time(t, tz, now) for t in table["last_ts"]],
            "duration": [format_duration(d) for d in table["duration_s"]],
            "source": list(table["source"]),
            "errors": [int(e) for e in table["errors"]],
            "first question": [excerpt(t, 90) for t in table["first_user_text"]],
        }
        event = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row",
                             key="conv_table", height=min(420, 38 + 35 * len(table)))
        rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
        if rows and rows[0] < len(table):
            picked = table["conversation_id"].iloc[rows[0]]
            if picked != ss.get("conv_table_pick"):
                ss.conv_table_pick = picked
                ss.conv_selected = picked
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button("Export CSV", export_turns(view, "csv"), file_name="conversations.csv",
                       mime="text/csv", icon=":material/download:", key="conv_csv", disabled=view.empty)
    d2.download_button("Export JSONL", export_turns(view, "jsonl"), file_name="conversations.jsonl",
                       mime="application/x-ndjson", icon=":material/download:", key="conv_jsonl",
                       disabled=view.empty)

# ----------------------------------------------------------------------- transcript

ids = list(table["conversation_id"]) if not table.empty else []
selected = ss.get("conv_selected")
if (selected and selected not in ids and selected == ss.get("conv_from_link")
        and not frame.empty and (frame["conversation_id"] == selected).any()):
    ids = [selected] + ids  # opened from a link but outside the current filters
if ids:
    if ss.get("conv_pick") not in ids or (selected and selected != ss.get("conv_pick")):
        ss.conv_pick = selected if selected in ids else ids[0]
    firsts = dict(zip(table["conversation_id"], table["first_user_text"])) if not table.empty else {}
    cid = st.selectbox("Transcript of", ids, key="conv_pick",
                       format_func=lambda c: f"{c}  ·  {excerpt(firsts.get(c), 60)}" if firsts.get(c) else c)
    ss.conv_selected = cid
    turns = frame[frame["conversation_id"] == cid].sort_values("ts", kind="stable")
    with st.container(border=True):
        top, dl = st.columns([4, 1], vertical_alignment="center")
        with top:
            st.subheader("Transcript", anchor=False)
            st.code(cid, language=None)
            first, last = turns["ts"].iloc[0], turns["ts"].iloc[-1]
            st.caption(f"{len(turns)} turn(s) · {format_time(first, tz, now)} – {format_time(last, tz, now)} · "
                       f"{format_duration((last - first).total_seconds())}")
        dl.download_button("Markdown", markdown_transcript(turns), file_name=f"conversation-{cid}.md",
                           mime="text/markdown", icon=":material/download:", key="conv_md")
        for row in turns.itertuples(index=False):
            with st.chat_message("user"):
                st.text(row.user_text or "")
                turn = "?" if pd.isna(row.turn) else int(row.turn)
                st.caption(f"{format_time(row.ts, tz, now)} · turn {turn} · {escape_markdown(str(row.source))}")
            with st.chat_message("assistant"):
                st.text(row.response or "")
                st.caption(f"latency {format_ms(row.latency_ms)}")
                if isinstance(row.error, str) and row.error:
                    st.error("Error logged for this turn", icon=":material/error:")
                    st.text(row.error)
