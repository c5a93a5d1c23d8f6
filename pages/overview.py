"""Overview: today's traffic, reply times, errors and the health of the Space and the log."""
from __future__ import annotations

import os
from datetime import datetime, timezone

import streamlit as st

from chatcore.dashboard.views import (error_turns, excerpt, figures_of, format_ms, format_time, health_summary,
                                negative_share_by_day, ratings_today, start_of_day, turns_per_hour, tz_name)
from chatcore.config import display_url
from pages._shared import (through_entry, PAGES, header, health, load_feedback, load_questions, settings, shared_store,
                           viewer_tz)

through_entry()

cfg = settings()
tz = viewer_tz()
#: Seconds between refreshes of the figures (the page refreshes only its own figures, like Live).
REFRESH = float(os.environ.get("CHAT_OVERVIEW_REFRESH", "5") or 5)

header("Overview", ":material/dashboard:")


@st.cache_data(ttl=15, show_spinner=False)
def handoffs_since(log_path: str, since: datetime) -> dict:
    from chatcore.space.handoff import handoff_figures

    return handoff_figures(log_path, since)


def format_seconds(value) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def alerts_box(now) -> None:
    """The alerts watcher's last alerts and whether delivery fails (when it ever ran)."""
    from chatcore.staff.alerts import read_status

    status = read_status(cfg.log_path)
    if not status:
        return
    with st.container(border=True, key="overview_alerts"):
        st.subheader("Alerts", anchor=False)
        for hook in status.get("hooks") or []:
            if hook.get("failing"):
                st.warning(f"Delivery to {hook.get('name')} is failing ({hook.get('last_error')}); "
                           f"{hook.get('queued', 0)} alert(s) waiting, retrying.", icon=":material/warning:")
        recent = list(reversed(status.get("recent") or []))[:10]
        if recent:
            def when(value):
                try:
                    return format_time(value, tz, now)
                except (ValueError, TypeError):
                    return str(value or "")

            st.dataframe({"time": [when(a.get("time")) for a in recent],
                          "event": [a.get("event") for a in recent],
                          "conversation_id": [a.get("conversation_id") or "" for a in recent],
                          "detail": [a.get("detail") or "" for a in recent]}, hide_index=True)
        else:
            st.caption("No alerts yet.")


@st.fragment(run_every=REFRESH)
def overview() -> None:
    """Every figure of the page, read afresh (only new log bytes are parsed) on each run."""
    now = datetime.now(timezone.utc)
    questions = load_questions(cfg.log_path)  # every figure is a query: no pass over every turn here
    stats = shared_store(str(cfg.log_path)).stats()
    fig = figures_of(questions, now=now, tz=tz)
    feedback = load_feedback(cfg.log_path)
    rated_today, negative_today = ratings_today(feedback, now=now, tz=tz)
    st.caption(f"Today in {tz_name(tz)} · updated {format_time(now, tz, now)} · refreshes every {REFRESH:g} s")

    with st.container(border=True):
        c1, c2, c3 = st.columns(3)
        c1.metric("Conversations today", fig.conversations_today, help=f"{fig.conversations_total} in the whole log")
        c2.metric("Turns today", fig.turns_today, help=f"{fig.turns_total} in the whole log")
        c3.metric("Active now", fig.active_now, help="Conversations with a turn in the last 5 minutes")
        c4, c5, c6 = st.columns(3)
        reply_help = "The Space's time to produce a reply, as logged (network and browser not included)"
        c4.metric("Reply time p50 (today)", format_ms(fig.latency_p50), help=reply_help)
        c5.metric("Reply time p95 (today)", format_ms(fig.latency_p95), help=reply_help)
        c6.metric("Errors today", fig.errors_today)
        c7, c8, c9 = st.columns(3)
        c7.metric("Ratings today", rated_today, help="Thumbs given today by visitors and staff")
        c8.metric("Negative ratings today", negative_today)
        c9.metric("Negative share today", f"{100 * negative_today / rated_today:.0f} %" if rated_today else "—")
        ho = handoffs_since(str(cfg.log_path), start_of_day(now, tz))
        c10, c11, c12 = st.columns(3)
        c10.metric("Handoffs today", ho["handoffs"],
                   help=f"Conversations a staff member took over today; {ho['requests']} asked for a person")
        share = ho["handoffs"] / fig.conversations_today if fig.conversations_today else None
        c11.metric("Handed to a person", f"{100 * share:.0f} %" if share is not None else "—",
                   help="Share of today's conversations that a staff member took over")
        c12.metric("First human reply p50 / p95",
                   f"{format_seconds(ho['first_reply_p50_s'])} / {format_seconds(ho['first_reply_p95_s'])}",
                   help="From the request for a person (or the takeover) to the first staff message, today")

    left, right = st.columns([2, 1])
    with left:
        with st.container(border=True):
            st.subheader("Turns per hour", anchor=False)
            st.caption(f"Last 24 hours, {tz_name(tz)}")
            hourly = turns_per_hour(questions, now=now, tz=tz)
            st.bar_chart(hourly, x="hour", y="turns", sort=False, height=260, x_label="", y_label="turns")
        with st.container(border=True):
            st.subheader("Negative ratings", anchor=False)
            st.caption(f"Share of thumbs-down among the ratings given each day, last 14 days, {tz_name(tz)}")
            daily = negative_share_by_day(feedback, now=now, tz=tz, days=14)
            if daily["ratings"].sum():
                st.bar_chart(daily.fillna({"negative_share": 0}), x="day", y="negative_share", sort=False, height=220,
                             x_label="", y_label="% negative", color="#d92d20")
            else:
                st.caption("No ratings in the last 14 days.")

    with right:
        h = health_summary(health(cfg.space_url))
        with st.container(border=True):
            st.subheader("Space", anchor=False)
            if h["ok"]:
                st.badge("reachable", icon=":material/check_circle:", color="green")
                a, b = st.columns(2)
                a.metric("Turns logged", h["turns_logged"] if h["turns_logged"] is not None else "—",
                         help="Since the Space started")
                b.metric("Write errors", h["write_errors"] if h["write_errors"] is not None else "—")
                if h["last_write_error"]:
                    st.caption("Last write error:")
                    st.text(h["last_write_error"])
            else:
                st.badge("unreachable", icon=":material/error:", color="red")
                st.text(h["detail"])
            st.caption(f"URL: {display_url(cfg.space_url)}")
        with st.container(border=True):
            st.subheader("Log", anchor=False)
            a, b = st.columns(2)
            a.metric("Lines read", stats.get("lines", 0))
            b.metric("Bad lines skipped", stats.get("bad_total", 0))
            bad = {k: v for k, v in (stats.get("bad") or {}).items() if v and k != "event"}
            if bad:
                st.caption("Skipped: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
            events = (stats.get("bad") or {}).get("event", 0)
            if events:
                st.caption(f"Staff and handoff events: {events}")
            if stats.get("missing"):
                st.caption("No log file yet.")
            if stats.get("error"):
                st.error("The log could not be read.", icon=":material/error:")
                st.text(stats["error"])

    errors = error_turns(questions, limit=10)
    if errors:
        with st.container(border=True):
            st.subheader("Latest errors", anchor=False)
            st.dataframe(
                {"time": [format_time(e["ts"], tz, now) for e in errors],
                 "conversation_id": [e["conversation_id"] for e in errors],
                 "question": [excerpt(e["user_text"], 60) for e in errors],
                 "error": [excerpt(e["error"], 80) for e in errors]},
                hide_index=True,
            )

    alerts_box(now)

    if fig.turns_total == 0:
        st.info("No turns logged yet. Send a prompt on the Chat page or run "
                "`python -m chatcore simulate` to make some traffic.", icon=":material/info:")
        st.page_link(PAGES["chat"], label="Open Chat", icon=":material/chat:")


overview()
