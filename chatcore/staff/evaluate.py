"""Evaluation runs: replay a suite against a Space, score each turn, keep a report.

A run replays every conversation of a suite (``chatcore.staff.suites``) against a Space as
``source=replay`` (a staff source: the staff token is sent), several conversations at
once (bounded by ``parallel``) and the turns of one conversation in order. Each turn is
scored:

* without a judge, by word similarity of the new reply to the reference reply and to
  the ideal answer: it passes when either is at least ``similarity`` alike;
* with a judge (any OpenAI-compatible ``/v1/chat/completions`` server), by the judge's
  ``{"pass": …, "reason": …}`` for the prompt in ``eval_judge_prompt.md``.

A turn the Space did not answer (down, timed out, refused) is ``error``: it counts as
failed, never as changed. ``changed`` counts answered turns whose reply differs from the
reference; ``worse``/``better`` compare each turn with its baseline — the previous run of
the suite, or for a first run the reference itself (which passes unless an ideal answer
exists that it is not alike to).

Reports are JSON files in ``<log folder>/annotations/eval-runs/<run id>.json``.
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
from chatcore.config import display_url
from chatcore.staff.suites import Suite

JUDGE_PROMPT_FILE = Path(__file__).with_name("eval_judge_prompt.md")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
DEFAULT_SIMILARITY = 0.85
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

    def render(self, user_text: str, reference: str, ideal: str | None, reply: str) -> str:
        values = {"user_text": user_text, "reference": reference, "ideal": ideal or "(none)", "reply": reply}
        return re.sub(r"\{(user_text|reference|ideal|reply)\}", lambda m: values[m.group(1)], self.prompt)

    def verdict(self, user_text: str, reference: str, ideal: str | None, reply: str) -> tuple[bool, str]:
        """Ask the judge (through :mod:`chatcore.llm.openai_chat`, streamed or not) for its verdict."""
        from chatcore.llm import openai_chat

        messages = [{"role": "user", "content": self.render(user_text, reference, ideal, reply)}]
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
    kwargs.setdefault("model", os.environ.get("CHAT_JUDGE_MODEL") or "default")
    kwargs.setdefault("api_key", os.environ.get("CHAT_JUDGE_API_KEY") or None)
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


def _baseline_pass(reference: str, ideal: str | None, threshold: float) -> bool:
    return ideal is None or similarity(reference, ideal) >= threshold


def _score(turn, ideal: str | None, judge: Judge | None, threshold: float) -> dict:
    row = {"turn": turn.turn, "user_text": turn.user_text, "reference": turn.old, "ideal": ideal,
           "reply": turn.new, "error": turn.error, "status": "error", "passed": False, "reason": "",
           "same": False, "similarity_reference": None, "similarity_ideal": None}
    if turn.error is not None:
        row["reason"] = f"not answered: {turn.error}"
        return row
    row["same"] = turn.old.strip() == turn.new.strip()
    row["similarity_reference"] = round(similarity(turn.old, turn.new), 4)
    if ideal:
        row["similarity_ideal"] = round(similarity(ideal, turn.new), 4)
    if judge is not None:
        try:
            passed, reason = judge.verdict(turn.user_text, turn.old, ideal, turn.new)
        except JudgeError as exc:
            row.update(status="judge_error", reason=str(exc))
            return row
    else:
        best = max(row["similarity_reference"], row["similarity_ideal"] or 0.0)
        passed = row["same"] or best >= threshold
        which = "ideal answer" if (row["similarity_ideal"] or 0) > row["similarity_reference"] else "reference"
        reason = f"{best:.0%} alike to the {which}"
    row.update(status="pass" if passed else "fail", passed=passed, reason=reason)
    return row


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
        result = replay_conversation(frame, client())
        turns = []
        for st, rt in zip(conv.turns, result.turns):
            rt.turn = st.turn
            row = _score(rt, st.ideal, judge, threshold)
            base = before.get((conv.conversation_id, st.turn))
            row["baseline_passed"] = base if base is not None else _baseline_pass(st.reference, st.ideal, threshold)
            row["movement"] = None
            if row["status"] in ("pass", "fail") and row["passed"] != row["baseline_passed"]:
                row["movement"] = "better" if row["passed"] else "worse"
            turns.append(row)
        report = {"conversation_id": conv.conversation_id, "replay_id": result.replay_id if result.answered else None,
                  "turns": turns}
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
        "conversations": conversations,
    }
    report["summary"] = summarise(report)
    return report


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
    passed = sum(t["status"] == "pass" for t in turns)
    errors = sum(t["status"] == "error" for t in turns)
    return {
        "conversations": len(report["conversations"]),
        "conversations_passed": sum(all(t["passed"] for t in c["turns"]) for c in report["conversations"]),
        "turns": total, "passed": passed,
        "failed": total - passed,  # everything not passed: judged failing, not answered, judge errors
        "errors": errors, "judge_errors": sum(t["status"] == "judge_error" for t in turns),
        "changed": sum(t["status"] != "error" and not t["same"] for t in turns),
        "worse": sum(t.get("movement") == "worse" for t in turns),
        "better": sum(t.get("movement") == "better" for t in turns),
        "pass_rate": round(passed / total, 4) if total else 0.0,
    }


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
