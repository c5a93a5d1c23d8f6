"""Evaluate: replay a regression suite against a Space, score it, and follow the pass rate over time."""
from __future__ import annotations

import queue
import threading

import streamlit as st

from chatcore.staff import evaluate as ev
from chatcore.remote.client import space_health
from chatcore.dashboard.views import escape_markdown
from chatcore.staff.replay import diff_html
from chatcore.config import display_url, operator_token
from chatcore.staff.suites import load_suites
from pages._shared import header, settings, through_entry

through_entry()

cfg = settings()
ss = st.session_state

header("Evaluate", ":material/fact_check:",
       "Replay a suite of logged conversations against a Space (e.g. a staging Space with a new prompt). "
       "A reply rated down must be fixed (it matches the ideal answer, or a judge model says so); a reply "
       "rated up, or nobody rated, must hold. See docs/regression-gate.md.")

try:
    suites = {name: s for name, s in load_suites(cfg.log_path).items() if s.conversations}
except Exception as exc:  # a broken suites file: say so, no traceback
    st.error(f"The suites could not be read: {exc}", icon=":material/error:")
    st.stop()

if not suites:
    st.info("No suites yet. Add conversations to a suite from a transcript on the Conversations page, "
            "or with `python -m chatcore suite add NAME --rated down`.", icon=":material/info:")
    st.stop()

names = sorted(suites)
suite_name = st.selectbox("Suite", names, key="eval_suite",
                          format_func=lambda n: f"{n} · {len(suites[n].conversations)} conversation(s), "
                                                f"{suites[n].turn_count} turn(s)")
suite = suites[suite_name]

with st.form("eval_form", border=True):
    a, b = st.columns(2)
    space_url = a.text_input("Space URL", value=cfg.space_url, key="eval_space",
                             help="The Space to test; replays are sent as source = replay with the staff token.")
    judge_url = b.text_input("Judge (optional)", key="eval_judge", placeholder="http://127.0.0.1:8080/v1",
                             help="An OpenAI-compatible server that judges each turn (prompt: "
                                  "chatcore/staff/eval_judge_prompt.md). Empty: score by similarity.")
    c, d, e = st.columns(3)
    min_pass = c.number_input("Share of turns that must pass", 0.0, 1.0, 1.0, 0.05, key="eval_min_pass",
                              help="A turn passes when it is fixed or held. Below this share the gate fails.")
    threshold = d.number_input("Similarity to pass", 0.05, 1.0, ev.DEFAULT_SIMILARITY, 0.05, key="eval_similarity")
    parallel = e.number_input("In parallel", 1, ev.MAX_PARALLEL, ev.DEFAULT_PARALLEL, 1, key="eval_parallel")
    run = st.form_submit_button("Run the suite", icon=":material/play_arrow:", type="primary")


def _run() -> None:
    url = (space_url or "").strip()
    if not url.startswith(("http://", "https://")):
        ss.eval_error = "The Space URL must start with http:// or https://."
        return
    if space_health(url, timeout=3.0).get("status") not in ("ok", "degraded"):
        ss.eval_error = f"Cannot reach the Space at {display_url(url)}; nothing was replayed."
        return
    judge = None
    if (judge_url or "").strip():
        try:
            judge = ev.judge_from_env(judge_url.strip())
        except ValueError as exc:
            ss.eval_error = str(exc)
            return
    events: queue.Queue = queue.Queue()
    box: dict = {}
    previous = ev.latest_run(cfg.log_path, suite.name)

    def work() -> None:
        try:
            box["report"] = ev.run_suite(
                suite, url, judge=judge, parallel=int(parallel), threshold=float(threshold),
                operator_token=operator_token(cfg.log_path), token_log_path=cfg.log_path, previous=previous,
                on_conversation=lambda done, total, conv: events.put((done, total, conv["conversation_id"])))
        except Exception as exc:  # shown as a message
            box["error"] = f"The run failed: {exc}"

    total = len(suite.conversations)
    with st.status(f"Replaying {total} conversation(s) against {display_url(url)} …", expanded=True) as status:
        bar = st.progress(0.0, text=f"0 of {total} conversations")
        worker = threading.Thread(target=work, name="eval-run", daemon=True)
        worker.start()
        while worker.is_alive() or not events.empty():
            try:
                done, total, cid = events.get(timeout=0.2)
            except queue.Empty:
                continue
            bar.progress(done / max(total, 1), text=f"{done} of {total} conversations · {cid}")
        worker.join()
        if judge:
            judge.close()
        if "error" in box:
            status.update(label="Run failed", state="error", expanded=False)
            ss.eval_error = box["error"]
            return
        report = ev.apply_gate(box["report"], float(min_pass))
        try:
            ev.save_report(cfg.log_path, report)
        except OSError as exc:
            ss.eval_error = f"The run finished but its report could not be saved ({exc.strerror})."
        ss.eval_shown = report["run_id"]
        ss.eval_last = report
        s = report["summary"]
        status.update(label=f"Done: pass rate {s['pass_rate']:.0%}", state="complete" if report["gate"] == "pass"
                      else "error", expanded=False)


if run:
    ss.pop("eval_error", None)
    _run()
if ss.get("eval_error"):
    st.error(ss.eval_error, icon=":material/error:")

# ----------------------------------------------------------------------------- history

runs = ev.list_runs(cfg.log_path, suite.name)
last = ss.get("eval_last")
if last and last.get("suite") == suite.name and all(r["run_id"] != last["run_id"] for r in runs):
    runs.append(last)  # not saved (read-only folder): still shown
if not runs:
    st.caption("No runs of this suite yet.")
    st.stop()

st.subheader("Pass rate over time", anchor=False)
hist = ev.history_frame(runs)
if len(hist) > 1:
    import altair as alt

    # An explicit 24-hour time axis (Vega's default shows 12-hour times without AM/PM).
    chart = alt.Chart(hist[["started", "pass_rate"]]).mark_line(point=True).encode(
        x=alt.X("started:T", title=None, axis=alt.Axis(format="%d %b %H:%M", labelAngle=0)),
        y=alt.Y("pass_rate:Q", title="pass rate", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
    ).properties(height=220)
    st.altair_chart(chart, width="stretch")
st.dataframe(hist.sort_values("started", ascending=False), hide_index=True, width="stretch",
             column_config={"pass_rate": st.column_config.NumberColumn("pass rate", format="percent")})

ids = [r["run_id"] for r in reversed(runs)]
if ss.get("eval_shown") in ids and ss.get("eval_pick") != ss.eval_shown and run:
    ss.eval_pick = ss.eval_shown
shown_id = st.selectbox("Results of run", ids, key="eval_pick")
report = next(r for r in runs if r["run_id"] == shown_id)
s = report["summary"]

st.subheader("Results", anchor=False)
m = st.columns(4)
m[0].metric("Pass rate", f"{s['pass_rate']:.0%}")
m[1].metric("Turns passed", f"{s['passed']} / {s['turns']}")
m[2].metric("Changed", s["changed"])
m[3].metric("Not answered", s["errors"])
# The gate's words (chatcore.staff.evaluate.OUTCOMES); reports saved before them have none.
if "held" in s:
    w = st.columns(5)
    for col, (word, label) in zip(w, [("fixed", "Fixed"), ("still_failing", "Still failing"), ("broke", "Broke"),
                                      ("held", "Held"), ("unjudged", "Unjudged")]):
        col.metric(label, s[word], help=ev.OUTCOMES[word])
if report.get("baseline_run"):
    st.caption(f"Since run {report['baseline_run']}: {s['worse']} worse, {s['better']} better.")
gate = report.get("gate")
if gate:
    (st.success if gate == "pass" else st.error)(
        f"Gate {gate}: {ev.summary_words(s)} · {s['pass_rate']:.1%} of turns pass against "
        f"{report.get('min_pass', 1.0):.0%} needed · Space {report.get('space')}"
        + (f" · judge {report['judge']['url']}" if report.get("judge") else ""))
if s["errors"]:
    st.warning(f"{s['errors']} turn(s) were not answered by the Space (down, timed out or refused): "
               "counted as failed.", icon=":material/warning:")

_DEL = '<del style="background:#fee4e2;color:#b42318;text-decoration:line-through">'
_INS = '<ins style="background:#dcfae6;color:#067647;text-decoration:none">'
_BOX = '<div class="eval-diff" style="white-space:pre-wrap;font-size:0.95rem;line-height:1.5">{}</div>'
# Streamlit's bundled Material icons: no emoji font needed.
ICON = {"pass": ":material/check_circle:", "fail": ":material/cancel:", "error": ":material/warning:",
        "judge_error": ":material/warning:"}
#: What a turn's reference is, by how the turn was scored.
EXPECT = {"bad": ("known-bad", "Rated down (known-bad reply)"), "good": ("known-good", "Logged reply (known-good)"),
          "handoff": ("asked for a person: hand off again", "Logged reply (hand-off notice)"),
          "answer": ("asked for a person: answer now", "Logged reply (hand-off notice)")}

only_failing = st.toggle("Only conversations with failing turns", value=True, key="eval_only_failing")
for conv in report["conversations"]:
    bad = sum(not t["passed"] for t in conv["turns"])
    if only_failing and not bad:
        continue
    label = f"{conv['conversation_id']} · " + (f"{bad} of {len(conv['turns'])} turn(s) failing" if bad
                                               else "all turns pass")
    with st.expander(label, expanded=bool(bad)):
        if conv.get("context_error"):
            st.warning(f"Staff context: {conv['context_error']}", icon=":material/warning:")
        for t in conv["turns"]:
            with st.container(border=True):
                move = f" · {t['movement']}" if t.get("movement") else ""
                kind, ref_label = EXPECT.get(t.get("expect"), ("", "Logged reply (reference)"))
                word = str(t.get("outcome") or t["status"]).replace("_", " ")
                st.caption(f"Turn {t['turn']} · {ICON.get(t['status'], '')} {word}{move}"
                           + (f" · {kind}" if kind else ""))
                st.text(t["user_text"])
                if t.get("reason"):
                    st.markdown(f"**Reason:** {escape_markdown(t['reason'])}")
                if t["status"] == "error":
                    continue
                left, right = diff_html(t["reference"] or "", t["reply"] or "")
                paint = lambda h: _BOX.format(h.replace("<del>", _DEL).replace("<ins>", _INS))  # noqa: E731
                lc, rc = st.columns(2)
                with lc:
                    st.caption(ref_label)
                    st.html(paint(left))
                with rc:
                    st.caption("Reply now")
                    st.html(paint(right))
                if t.get("ideal"):
                    st.caption("Ideal answer")
                    st.text(t["ideal"])
