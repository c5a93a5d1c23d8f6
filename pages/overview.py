"""Overview: today's traffic, reply times, errors, tokens and cost (by model and by prompt
version) and the health of the Space and the log."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

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
REFRESH = cfg.overview_refresh

header("Overview", ":material/dashboard:")
include_test = st.toggle("Include test traffic", key="overview_include_test",
                         help="Replays and simulated visitors; every figure is about real visitors when off")


@st.cache_data(ttl=15, show_spinner=False)
def handoffs_since(log_path: str, since: datetime, leave_out: frozenset, events: int) -> dict:
    """``events``: the event lines the store has read. Without any there is nothing to find, and
    the log is not searched for them (a first search reads every byte of the log)."""
    if not events:
        return {"handoffs": 0, "requests": 0, "first_reply_p50_s": None, "first_reply_p95_s": None,
                "first_replies": 0}
    from chatcore.staff.handoff_log import handoff_figures

    return handoff_figures(log_path, since, leave_out)


def format_seconds(value) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


@st.cache_data(ttl=15, show_spinner=False)
def handed_off(log_path: str) -> frozenset:
    from chatcore.staff.handoff_log import handed_off_ids

    return frozenset(handed_off_ids(log_path))


def format_usd(value) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def format_tokens(row: dict | None) -> str:
    if not row:
        return "0 / 0"
    return f"{row['input_tokens']:,} / {row['output_tokens']:,}"


def spend_box(questions, now) -> None:
    """Tokens and cost today and over 7 days, by model and by prompt version, and per prompt
    version what a lead compares (shown once a turn reported usage or a prompt version)."""
    from chatcore.log import annotations
    from chatcore.store.conversation_frames import rating_counts

    if questions is None:  # no log yet
        return
    today, week = start_of_day(now, tz), start_of_day(now - timedelta(days=6), tz)
    total_week = questions.spend(week, include_test=include_test)
    versions_week = questions.spend(week, by="prompt_version", include_test=include_test)
    if not total_week or (not total_week[0]["input_tokens"] and not total_week[0]["output_tokens"]
                          and not any(r["prompt_version"] for r in versions_week)):
        return
    total_today = questions.spend(today, include_test=include_test)
    try:
        feedback, version = annotations.feedback_state(cfg.log_path)
        questions.set_ratings(rating_counts(feedback), version)
    except Exception:  # a broken annotations file must not take the page down
        pass
    with st.container(border=True, key="overview_spend"):
        st.subheader("Tokens and cost", anchor=False)
        st.caption("Tokens as the model servers reported them (input / output); cost from CHAT_PRICES, "
                   "only for models with a price")
        a, b, c, d = st.columns(4)
        a.metric("Tokens today", format_tokens(total_today[0] if total_today else None))
        b.metric("Cost today", format_usd(total_today[0]["cost_usd"] if total_today else None))
        c.metric("Tokens, 7 days", format_tokens(total_week[0]))
        d.metric("Cost, 7 days", format_usd(total_week[0]["cost_usd"]))
        by_model, by_version = st.tabs(["By model", "By prompt version"])
        for tab, key in ((by_model, "model"), (by_version, "prompt_version")):
            with tab:
                for label, since in (("Today", today), ("Last 7 days", week)):
                    rows = questions.spend(since, by=key, include_test=include_test)
                    st.caption(label)
                    st.dataframe({key.replace("_", " "): [r[key] or "(none)" for r in rows],
                                  "turns": [r["turns"] for r in rows],
                                  "input tokens": [r["input_tokens"] for r in rows],
                                  "output tokens": [r["output_tokens"] for r in rows],
                                  "cost": [format_usd(r["cost_usd"]) for r in rows]},
                                 hide_index=True, key=f"overview_spend_{key}_{label}")
        rows = questions.prompt_versions(week, handed_off(str(cfg.log_path)), include_test=include_test)
        if rows:
            st.subheader("Prompt versions, last 7 days", anchor=False)
            pct = lambda v: "—" if v is None else f"{100 * v:.0f} %"  # noqa: E731
            st.dataframe({"prompt version": [r["prompt_version"] for r in rows],
                          "since": [format_time(r["first_ts"], tz, now) for r in rows],
                          "conversations": [r["conversations"] for r in rows],
                          "👎 share": [pct(r["negative_share"]) for r in rows],
                          "handed to a person": [pct(r["handoff_share"]) for r in rows],
                          "reply time p50": [format_ms(r["reply_p50_ms"]) for r in rows],
                          "cost per conversation": [format_usd(r["cost_per_conversation"]) for r in rows]},
                         hide_index=True, key="overview_prompt_versions")
            st.caption("Each conversation counts for the version of its latest reply. 👎 share: thumbs-down "
                       "among its rated replies; handed to a person: taken over by staff.")


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
    fig = figures_of(questions, now=now, tz=tz, include_test=include_test)
    feedback = load_feedback(cfg.log_path)
    leave_out = frozenset() if include_test or questions is None else questions.test_conversation_ids()
    if leave_out:  # ratings and hand-offs of test conversations
        feedback = feedback[~feedback["conversation_id"].isin(leave_out)]
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
        ho = handoffs_since(str(cfg.log_path), start_of_day(now, tz), leave_out,
                            questions.store.stats.get("events", 0) if questions is not None else 0)
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
            hourly = turns_per_hour(questions, now=now, tz=tz, include_test=include_test)
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

    errors = error_turns(questions, limit=10, include_test=include_test)
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

    spend_box(questions, now)
    alerts_box(now)

    if fig.turns_total == 0 and leave_out:
        st.info("Only test traffic so far (replays, simulated visitors): switch on “Include test traffic” "
                "to see it.", icon=":material/info:")
    elif fig.turns_total == 0:
        st.info("No turns logged yet. Send a prompt on the Chat page or run "
                "`python -m chatcore simulate` to make some traffic.", icon=":material/info:")
        st.page_link(PAGES["chat"], label="Open Chat", icon=":material/chat:")


overview()
