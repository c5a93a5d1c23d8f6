"""Evaluation runs: replay a suite against a Space, score each turn, keep a report.

A run replays every conversation of a suite (:mod:`chatcore.staff.suites`) against a Space as
``source=replay`` (a staff source: the staff token is sent), several conversations at once
(bounded by ``parallel``) and the turns of one conversation in order. What people said in the
conversation (a take-over, staff messages, the visitor's messages to staff, the hand-back) is
replayed in its place through the Space's staff routes: context for the bot's later turns,
never a bot turn. Each turn is scored by what its reference is (:meth:`Suite.expectation`):

* **known-bad** (rated down, or the visitor asked for a person right after it): the same answer
  again *still fails*. A different answer is *fixed* when it matches the staff's ideal answer
  (word similarity) or when the judge says it fixes the problem (the judge sees the known-bad
  reply, the ideal answer and the staff's notes); without either it is *unjudged* and does
  not pass.
* **known-good** (rated up, a golden suite, or unrated): unchanged *holds*; a changed reply holds
  when the judge accepts it, or without a judge when it is alike to the reference or the
  ideal answer; otherwise it *broke*.
* **a request for a person**: as the suite says, it holds when the Space hands off again (the
  reply is the logged notice), or it is scored like a known-bad turn when the bot should now
  answer (handing off again is then *still failing*).

A turn the Space did not answer (down, timed out, refused) is *not answered*: failed, never
changed. A turn passes when it is fixed or held; the pass rate is the share of turns that
pass. ``worse``/``better`` compare each turn with the previous run of the suite (none in a
first run).

Reports are JSON files in ``<log folder>/annotations/eval-runs/<run id>.json``.

A little over 500 lines: the run, the scoring rules and the report belong together; the judge's transport is in :mod:`chatcore.llm.openai_chat`.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from chatcore.log.annotations import annotations_dir
from chatcore.staff.replay import _TOKEN, replay_conversation, strip_controls
from chatcore.config import Settings, display_url, reveal
from chatcore.staff.suites import Suite

JUDGE_PROMPT_FILE = Path(__file__).with_name("eval_judge_prompt.md")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
DEFAULT_SIMILARITY = 0.85
#: The judge's rubric for each kind of turn (``{rubric}`` in the prompt): what the reference is
#: and what makes the new reply pass.
RUBRICS = {
    "bad": ("The reference reply was rated down, or the visitor asked for a person right after it: it is a "
            "counter-example, a known-bad answer. Pass the new reply only if it fixes what was wrong with the "
            "reference: it answers the visitor correctly, agrees in substance with the ideal answer when one is "
            "given, and does what the staff's notes ask. A reply that repeats the reference's mistake, refuses, "
            "stalls or invents facts fails."),
    "good": ("The reference reply is a known-good answer. Pass the new reply if it is at least as good: the same "
             "substance (the wording may differ), correct and polite, in agreement with the ideal answer when one "
             "is given. A reply that drops what the reference said, refuses, stalls or invents facts fails."),
    "answer": ("The visitor asked for a person here, and the bot handed the conversation to staff (the reference is "
               "the hand-off notice). The team now wants the bot to answer instead. Pass the new reply only if it "
               "answers what the visitor needed, correctly, in agreement with the ideal answer when one is given "
               "and as the staff's notes ask."),
}
#: What each outcome means, for a person (the CLI, the JSON report's ``outcomes``, the Evaluate page).
OUTCOMES = {
    "fixed": "a known-bad answer is now answered well",
    "still_failing": "the known-bad answer (or the hand-off) is still given, or the judge says it is not fixed",
    "broke": "a known-good answer changed for the worse",
    "held": "a known-good answer is unchanged or still good (or the Space handed off again, as expected)",
    "unjudged": "the reply changed, and neither an ideal answer nor a judge could tell whether it is fixed",
    "not_answered": "the Space did not answer (down, timed out, refused)",
}
PASSING_OUTCOMES = frozenset({"fixed", "held"})
DEFAULT_PARALLEL = 8
MAX_PARALLEL = 32


def runs_dir(log_path) -> Path:
    return annotations_dir(log_path) / "eval-runs"


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, _TOKEN.findall(a or ""), _TOKEN.findall(b or ""), autojunk=False).ratio()


# ------------------------------------------------------------------------------- judge


class JudgeError(RuntimeError):
    """The judge failed or answered something that is not a verdict (message safe to show)."""


@dataclass
class Judge:
    """An OpenAI-compatible chat completions server used as a judge.

    ``url`` is the API base (``http://127.0.0.1:8080/v1``) or the full
    ``…/chat/completions`` address. ``api_key`` is sent as a bearer token and never shown.
    """

    url: str
    model: str = "default"
    api_key: str | None = None
    stream: bool = False
    timeout: float = 60.0
    prompt: str | None = None
    max_retries: int = 2

    def __post_init__(self):
        if not re.match(r"^https?://", self.url or ""):
            raise ValueError("the judge URL must start with http:// or https://")
        base = self.url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        if self.prompt is None:
            self.prompt = JUDGE_PROMPT_FILE.read_text(encoding="utf-8")
        from chatcore.llm import openai_chat

        self._client = openai_chat.make_client(self.endpoint.removesuffix("/chat/completions"), self.api_key,
                                               timeout=self.timeout, max_retries=self.max_retries)

    def close(self) -> None:
        self._client.close()

    def render(self, user_text: str, reference: str, ideal: str | None, reply: str, expect: str = "good",
               note: str | None = None) -> str:
        """The prompt for one turn. ``expect`` (see :meth:`Suite.expectation`) picks the rubric:
        what the reference is and what the new reply must do to pass; ``note`` is the staff's."""
        values = {"user_text": user_text, "reference": reference, "ideal": ideal or "(none)", "reply": reply,
                  "rubric": RUBRICS.get(expect, RUBRICS["good"]), "note": (note or "").strip() or "(none)"}
        return re.sub(r"\{(user_text|reference|ideal|reply|rubric|note)\}", lambda m: values[m.group(1)],
                      self.prompt)

    def verdict(self, user_text: str, reference: str, ideal: str | None, reply: str, expect: str = "good",
                note: str | None = None) -> tuple[bool, str]:
        """Ask the judge (through :mod:`chatcore.llm.openai_chat`, streamed or not) for its verdict."""
        from chatcore.llm import openai_chat

        messages = [{"role": "user", "content": self.render(user_text, reference, ideal, reply, expect, note)}]
        who = f"the judge at {display_url(self.endpoint)}"
        try:
            if self.stream:
                content = "".join(openai_chat.ChatStream(self._client, model=self.model, messages=messages,
                                                         who=who, temperature=0))
            else:
                content, _ = openai_chat.complete(self._client, model=self.model, messages=messages, who=who,
                                                  temperature=0)
        except openai_chat.ModelServerError as exc:
            raise JudgeError(str(exc)) from None
        return parse_verdict(content)


def judge_from_env(url: str, **kwargs) -> Judge:
    """A :class:`Judge` at ``url`` with ``CHAT_JUDGE_MODEL`` and ``CHAT_JUDGE_API_KEY`` (a secret)."""
    settings = Settings.from_env()
    kwargs.setdefault("model", settings.judge_model)
    kwargs.setdefault("api_key", reveal(settings.judge_api_key))
    return Judge(url, **kwargs)


def parse_verdict(content: str) -> tuple[bool, str]:
    """``{"pass": bool, "reason": str}`` somewhere in ``content``; else a leading PASS/FAIL."""
    text = (content or "").strip()
    for match in re.finditer(r"\{.*?\}", text, re.S):
        try:
            obj = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("pass"), bool):
            return obj["pass"], _one_line(str(obj.get("reason") or ""))
    head = re.match(r"^\W*(pass|fail)\w*\W*(.*)", text, re.I | re.S)
    if head:
        return head.group(1).lower() == "pass", _one_line(head.group(2))
    raise JudgeError("the judge's answer has no verdict ({\"pass\": …, \"reason\": …})")


def _one_line(text: str) -> str:
    text = " ".join(strip_controls(text).split())
    return text[:200] + ("…" if len(text) > 200 else "")


# --------------------------------------------------------------------------------- run


def new_run_id(suite: str) -> str:
    return f"{suite}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def _score(turn, expect: str, ideal: str | None, note: str | None, judge: Judge | None,
           threshold: float) -> dict:
    """One replayed turn scored against its reference as ``expect`` says (see the module docs)."""
    row = {"turn": turn.turn, "user_text": turn.user_text, "reference": turn.old, "ideal": ideal,
           "reply": turn.new, "error": turn.error, "expect": expect, "status": "error", "outcome": "not_answered",
           "passed": False, "reason": "", "same": False, "similarity_reference": None, "similarity_ideal": None}
    if turn.error is not None:
        row["reason"] = f"not answered: {turn.error}"
        return row
    same = row["same"] = turn.old.strip() == turn.new.strip()
    to_reference = row["similarity_reference"] = round(similarity(turn.old, turn.new), 4)
    to_ideal = None
    if ideal:
        to_ideal = row["similarity_ideal"] = round(similarity(ideal, turn.new), 4)

    def done(outcome: str, reason: str, status: str | None = None) -> dict:
        passed = outcome in PASSING_OUTCOMES
        row.update(outcome=outcome, reason=reason, passed=passed, status=status or ("pass" if passed else "fail"))
        return row

    def judged(if_pass: str, if_fail: str) -> dict:
        try:
            passed, reason = judge.verdict(turn.user_text, turn.old, ideal, turn.new, expect, note)
        except JudgeError as exc:
            return done("unjudged", str(exc), status="judge_error")
        return done(if_pass if passed else if_fail, reason)

    if expect == "handoff":
        if same or to_reference >= threshold:
            return done("held", "handed to a person again, as the suite expects")
        return done("broke", "answered instead of handing to a person (the suite expects a hand-off)")
    if expect == "good":
        if same:
            return done("held", "unchanged")
        if judge is not None:
            return judged("held", "broke")
        best = max(to_reference, to_ideal or 0.0)
        which = "ideal answer" if (to_ideal or 0.0) > to_reference else "reference"
        return done("held" if best >= threshold else "broke", f"changed: {best:.0%} alike to the {which}")
    # known-bad, or a request for a person the bot should now answer
    was = "the answer that was rated down" if expect == "bad" else "the hand-off to a person"
    if same:
        return done("still_failing", f"still {was}")
    if to_ideal is not None and to_ideal >= threshold and to_ideal > to_reference:
        return done("fixed", f"matches the staff's ideal answer ({to_ideal:.0%} alike)")
    if to_reference >= threshold:
        return done("still_failing", f"still {was} ({to_reference:.0%} alike)")
    if judge is not None:
        return judged("fixed", "still_failing")
    return done("unjudged", "changed, unjudged: it matches no ideal answer and no judge was asked "
                            "(write the ideal answer, or run with --judge URL)")


def run_suite(suite: Suite, space_url: str, *, judge: Judge | None = None, parallel: int = DEFAULT_PARALLEL,
              threshold: float = DEFAULT_SIMILARITY, timeout: float = 60.0, operator_token: str | None = None,
              token_log_path=None, previous: dict | None = None,
              on_conversation: Callable[[int, int, dict], None] | None = None,
              client_factory: Callable[[], object] | None = None) -> dict:
    """Replay ``suite`` against ``space_url`` and return the report (a JSON-ready dict).

    ``previous`` is an earlier report of the same suite: the baseline for worse/better.
    ``on_conversation(done, total, conversation_report)`` is called as each one finishes
    (from worker threads, one call at a time).
    """
    from chatcore.remote.client import SpaceClient

    parallel = max(1, min(int(parallel), MAX_PARALLEL))
    started = datetime.now(timezone.utc)
    run_id = new_run_id(suite.name)
    local = threading.local()
    clients: list = []
    lock = threading.Lock()
    done = [0]
    convs = list(suite.conversations.values())
    before = _turn_index(previous) if previous else {}

    def client():
        if getattr(local, "client", None) is None:
            local.client = (client_factory() if client_factory else
                            SpaceClient(space_url, timeout=timeout, operator_token=operator_token,
                                        log_path=token_log_path))
            with lock:
                clients.append(local.client)
        return local.client

    def one(conv) -> dict:
        frame = pd.DataFrame({
            "ts": range(len(conv.turns)), "conversation_id": conv.conversation_id,
            "user_text": [t.user_text for t in conv.turns], "response": [t.reference for t in conv.turns],
        })
        staff = _StaffReplay(space_url, conv.context, operator_token, token_log_path, timeout)
        result = replay_conversation(frame, client(), before_turn=staff.before_turn)
        turns = []
        for st, rt in zip(conv.turns, result.turns):
            rt.turn = st.turn
            row = _score(rt, suite.expectation(st), st.ideal, conv.note, judge, threshold)
            row["baseline_passed"] = base = before.get((conv.conversation_id, st.turn))
            row["movement"] = None
            if base is not None and row["status"] in ("pass", "fail") and row["passed"] != base:
                row["movement"] = "better" if row["passed"] else "worse"
            turns.append(row)
        report = {"conversation_id": conv.conversation_id, "replay_id": result.replay_id if result.answered else None,
                  "turns": turns, "context_error": staff.error}
        with lock:
            done[0] += 1
            if on_conversation:
                on_conversation(done[0], len(convs), report)
        return report

    try:
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="eval") as pool:
            conversations = list(pool.map(one, convs))
    finally:
        for c in clients:
            c.close()
    finished = datetime.now(timezone.utc)
    report = {
        "v": 1, "run_id": run_id, "suite": suite.name, "space": display_url(space_url),
        "judge": ({"url": display_url(judge.endpoint), "model": judge.model, "stream": judge.stream}
                  if judge else None),
        "similarity_threshold": threshold, "parallel": parallel,
        "started": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "finished": finished.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "seconds": round((finished - started).total_seconds(), 3),
        "baseline_run": previous.get("run_id") if previous else None,
        "golden": suite.golden, "handoff": suite.handoff,
        "conversations": conversations,
    }
    report["summary"] = summarise(report)
    return report


class _StaffReplay:
    """What people said and did in a conversation, replayed in its place on the replay's
    conversation through the Space's staff routes (take over, say, hand back) and, for the
    visitor's messages to staff, through ``/chat`` while staff hold it (the Space keeps those
    from the bot). The first failure stops the rest and is kept in ``error``."""

    STAFF_NAME = "replay"

    def __init__(self, space_url: str, context: list[dict], operator_token: str | None, token_log_path,
                 timeout: float):
        self.space_url = space_url
        self.context = context
        self.token = operator_token
        self.token_log_path = token_log_path
        self.timeout = timeout
        self.error: str | None = None

    def before_turn(self, index: int, replay_id: str, client) -> None:
        for item in self.context:
            if item["before"] != index or self.error:
                continue
            kind = item["kind"]
            if kind == "visitor_message":
                try:
                    "".join(client.stream(item["text"], replay_id, source="replay"))
                except Exception as exc:  # SpaceError and friends: the turns still run, without this context
                    self.error = f"a visitor's message to staff was not replayed: {exc}"
                continue
            from chatcore.remote.client import staff_call

            route = {"handoff_taken": "take", "staff_message": "say", "handoff_returned": "handback"}[kind]
            body = {"conversation_id": replay_id, "staff": self.STAFF_NAME}
            if kind == "staff_message":
                body["text"] = item["text"]
            ok, message = staff_call(self.space_url, self._token(), route, body, timeout=min(self.timeout, 30.0))
            if not ok:
                self.error = f"the staff's {route} was not replayed: {message}"

    def _token(self) -> str | None:
        if self.token is None:
            from chatcore.config import operator_token

            self.token = operator_token(self.token_log_path if self.token_log_path is not None
                                        else Settings.from_env().log_path)
        return self.token


def _turn_index(report: dict) -> dict[tuple[str, int], bool]:
    out = {}
    for conv in report.get("conversations") or []:
        for t in conv.get("turns") or []:
            if t.get("status") in ("pass", "fail"):
                out[(conv["conversation_id"], t["turn"])] = bool(t["passed"])
    return out


def summarise(report: dict) -> dict:
    turns = [t for c in report["conversations"] for t in c["turns"]]
    total = len(turns)
    passed = sum(bool(t["passed"]) for t in turns)
    outcomes = {word: sum(t.get("outcome") == word for t in turns) for word in OUTCOMES}
    return {
        "conversations": len(report["conversations"]),
        "conversations_passed": sum(all(t["passed"] for t in c["turns"]) for c in report["conversations"]),
        "turns": total, "passed": passed,
        "failed": total - passed,  # everything not passed: still failing, broke, unjudged, not answered
        **outcomes,
        "known_bad": sum(t.get("expect") in ("bad", "answer") for t in turns),
        "known_good": sum(t.get("expect") in ("good", "handoff") for t in turns),
        "errors": outcomes["not_answered"], "judge_errors": sum(t["status"] == "judge_error" for t in turns),
        "changed": sum(t["status"] != "error" and not t["same"] for t in turns),
        "worse": sum(t.get("movement") == "worse" for t in turns),
        "better": sum(t.get("movement") == "better" for t in turns),
        "pass_rate": round(passed / total, 4) if total else 0.0,
    }


def apply_gate(report: dict, min_pass: float) -> dict:
    """Set the report's ``min_pass`` and ``gate`` (``pass`` when the share of turns that pass
    reaches ``min_pass``) and its ``outcomes`` (what each word of the summary means)."""
    report["min_pass"] = float(min_pass)
    report["gate"] = "pass" if report["summary"]["pass_rate"] >= float(min_pass) else "fail"
    report["outcomes"] = dict(OUTCOMES)
    return report


def summary_words(summary: dict) -> str:
    """``2 fixed, 1 still failing, 0 broke, 3 held, 1 unjudged`` (and ``, 1 not answered`` when any)."""
    words = [f"{summary.get(w, 0)} {w.replace('_', ' ')}" for w in ("fixed", "still_failing", "broke", "held",
                                                                    "unjudged")]
    if summary.get("not_answered"):
        words.append(f"{summary['not_answered']} not answered")
    return ", ".join(words)


# ------------------------------------------------------------------------------ storing


def save_report(log_path, report: dict) -> Path:
    folder = runs_dir(log_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report['run_id']}.json"
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def list_runs(log_path, suite: str | None = None) -> list[dict]:
    """Saved reports (oldest first), optionally of one suite only."""
    out = []
    folder = runs_dir(log_path)
    if not folder.is_dir():
        return out
    for path in folder.glob("*.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict) or "summary" not in report:
            continue
        if suite is None or report.get("suite") == suite:
            out.append(report)
    out.sort(key=lambda r: str(r.get("started") or ""))
    return out


def latest_run(log_path, suite: str) -> dict | None:
    runs = list_runs(log_path, suite)
    return runs[-1] if runs else None


def load_run(log_path, run: str) -> dict:
    """A report by run id (in the runs folder) or by the path of a report file."""
    if RUN_ID_PATTERN.match(run or "") and (runs_dir(log_path) / f"{run}.json").is_file():
        path = runs_dir(log_path) / f"{run}.json"
    else:
        path = Path(run)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyError(run) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the report {run!r}: {exc}") from None
    if not isinstance(report, dict) or "conversations" not in report:
        raise ValueError(f"{run!r} is not a run report")
    return report


def compare_runs(a: dict, b: dict) -> dict:
    """Turn by turn, what changed from run ``a`` to run ``b`` (matched by conversation and turn)."""
    def index(report):
        return {(c["conversation_id"], t["turn"]): t for c in report["conversations"] for t in c["turns"]}

    ia, ib = index(a), index(b)
    rows = []
    for key in sorted(set(ia) | set(ib)):
        ta, tb = ia.get(key), ib.get(key)
        sa, sb = (ta or {}).get("status", "absent"), (tb or {}).get("status", "absent")
        pa, pb = bool(ta and ta["passed"]), bool(tb and tb["passed"])
        movement = None if pa == pb or "absent" in (sa, sb) else ("better" if pb else "worse")
        reply_changed = bool(ta and tb and sa != "error" and sb != "error" and
                             (ta.get("reply") or "").strip() != (tb.get("reply") or "").strip())
        rows.append({"conversation_id": key[0], "turn": key[1], "a": sa, "b": sb, "movement": movement,
                     "outcome_a": (ta or {}).get("outcome"), "outcome_b": (tb or {}).get("outcome"),
                     "reply_changed": reply_changed, "reply_a": (ta or {}).get("reply"),
                     "reply_b": (tb or {}).get("reply"), "reason_b": (tb or {}).get("reason")})
    return {
        "a": a.get("run_id"), "b": b.get("run_id"),
        "pass_rate_a": a["summary"]["pass_rate"], "pass_rate_b": b["summary"]["pass_rate"],
        "worse": sum(r["movement"] == "worse" for r in rows), "better": sum(r["movement"] == "better" for r in rows),
        "reply_changed": sum(r["reply_changed"] for r in rows), "turns": rows,
    }


def history_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per run: started, run id, Space, pass rate, turns, failed, errors (for a chart)."""
    rows = [{"started": pd.to_datetime(r.get("started"), utc=True, errors="coerce"), "run_id": r.get("run_id"),
             "suite": r.get("suite"), "space": r.get("space"), "pass_rate": r["summary"].get("pass_rate"),
             "turns": r["summary"].get("turns"), "failed": r["summary"].get("failed"),
             "errors": r["summary"].get("errors"), "judge": bool(r.get("judge"))} for r in runs]
    return pd.DataFrame(rows, columns=["started", "run_id", "suite", "space", "pass_rate", "turns", "failed",
                                       "errors", "judge"])
