"""Talk to the Space through ``gradio_client`` — used by the chat page, the CLI and tests.

Errors come out as :class:`SpaceError` with a message meant for a person
(``kind`` is ``unreachable``, ``timeout`` or ``rejected``); the client reconnects
by itself on the next call after the Space comes back.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

import httpx

from chatcore.config import display_url


class SpaceError(RuntimeError):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class TurnResult:
    conversation_id: str
    reply: str
    latency_ms: float


def _reply_text(output) -> str:
    """The reply from one streamed output (a string, or a message dict/list from other Spaces)."""
    if isinstance(output, (list, tuple)):
        if output and all(isinstance(x, str) for x in output):
            return "\n".join(output)
        return _reply_text(output[-1]) if output else ""
    if isinstance(output, dict):
        return str(output.get("content") or output.get("text") or "")
    return "" if output is None else str(output)


class SpaceClient:
    """``token`` is a Hugging Face token (private Spaces). ``operator_token`` is the staff token
    sent as ``X-Chat-Operator-Token`` (needed for the staff sources ``operator`` and ``replay``);
    when not given it is read with :func:`chatcore.config.operator_token` for ``log_path``
    (default: ``CHAT_LOG_PATH``), i.e. ``CHAT_OPERATOR_TOKEN`` or the token file beside the log.
    ``system_prompt`` is a draft the Space uses instead of its own for every reply to this client
    (staff only: see :mod:`chatcore.llm.prompts`)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0,
                 connect_timeout: float = 5.0, operator_token: str | None = None,
                 log_path=None, system_prompt: str | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.operator_token = operator_token
        self.log_path = log_path
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.system_prompt = system_prompt or None
        if self.system_prompt is not None:
            from chatcore.llm.prompts import encode_draft

            encode_draft(self.system_prompt)  # ValueError now, not at the first message
        self._client = None
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------------------

    def _staff_headers(self) -> dict[str, str]:
        from chatcore.config import OPERATOR_TOKEN_HEADER, Settings, operator_token

        token = self.operator_token
        if token is None:
            token = operator_token(self.log_path if self.log_path is not None else Settings.from_env().log_path)
        headers = {OPERATOR_TOKEN_HEADER: token} if token else {}
        if self.system_prompt is not None:
            from chatcore.llm.prompts import DRAFT_HEADER, encode_draft

            headers[DRAFT_HEADER] = encode_draft(self.system_prompt)
        return headers

    def _connect(self):
        from gradio_client import Client

        with self._lock:
            if self._client is None:
                try:
                    self._client = Client(
                        self.url, token=self.token, verbose=False, headers=self._staff_headers() or None,
                        httpx_kwargs={"timeout": httpx.Timeout(self.timeout, connect=self.connect_timeout)},
                    )
                except Exception as exc:
                    raise self._as_error(exc) from None
            return self._client

    def _drop(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def _as_error(self, exc: BaseException) -> SpaceError:
        from gradio_client.exceptions import AppError, ValidationError

        if isinstance(exc, SpaceError):
            return exc
        if isinstance(exc, AppError):
            return SpaceError("rejected", str(exc) or "The Space refused the message.")
        if isinstance(exc, ValidationError):  # refused at the Space's door (e.g. a file not uploaded)
            return SpaceError("rejected", str(exc).splitlines()[-1].lstrip("- ") or "The Space refused the message.")
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (413, 429):
            busy = exc.response.status_code == 429
            return SpaceError("rejected", "The Space is busy with other calls from here: try again in a moment."
                              if busy else "The message is too large for the Space.")
        if isinstance(exc, concurrent.futures.CancelledError):  # the event stream ended mid-reply
            return SpaceError("unreachable", f"The Space at {display_url(self.url)} stopped answering in the middle "
                              "of the reply. Check that it is running, then try again.")
        if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
            return SpaceError("timeout", f"The Space at {display_url(self.url)} did not answer in time. Try again.")
        return SpaceError(
            "unreachable",
            f"Cannot reach the Space at {display_url(self.url)} ({type(exc).__name__}). "
            "Check that it is running at that address.",
        )

    def reset(self) -> None:
        """Start the server-side history afresh (a new conversation)."""
        if self._client is not None:
            try:
                self._client.reset_session()
            except Exception:
                self._drop()

    def close(self) -> None:
        self._drop()

    # -- chat ---------------------------------------------------------------------------

    def stream(self, text: str, conversation_id: str, source: str = "operator",
               files: list | None = None) -> Iterator[str]:
        """Yield the reply as it grows (each item is the new part only)."""
        client = self._connect()
        try:
            job = client.submit(
                message={"text": text, "files": files or []},
                conversation_id=conversation_id,
                source=source,
                api_name="/chat",
            )
        except Exception as exc:
            self._drop()
            raise self._as_error(exc) from None
        shown = ""
        deadline = time.monotonic() + self.timeout
        try:
            for output in self._iterate(job, deadline):
                text_now = _reply_text(output)
                if text_now.startswith(shown) and len(text_now) > len(shown):
                    yield text_now[len(shown):]
                    shown = text_now
            final = job.result(timeout=max(0.1, deadline - time.monotonic()))
            text_now = _reply_text(final)
            if text_now.startswith(shown) and len(text_now) > len(shown):
                yield text_now[len(shown):]
        except SpaceError:
            raise
        except Exception as exc:
            err = self._as_error(exc)
            if err.kind != "rejected":
                self._drop()
            raise err from None

    @staticmethod
    def _iterate(job, deadline: float):
        """The Job's outputs as they arrive, until it is done (the caller then reads its result
        or error), giving up at ``deadline`` (a hung Space).

        Outputs are polled rather than read with the Job's own iterator: when the Space goes
        away mid-reply the job ends with an error but never reaches "finished", and that
        iterator then waits forever (spinning a thread)."""
        seen = 0
        while True:
            done = job.done()  # read before the outputs: nothing added after it is missed
            outputs = job.outputs()
            while seen < len(outputs):
                yield outputs[seen]
                seen += 1
            if done:
                return
            if time.monotonic() >= deadline:
                try:
                    job.cancel()
                except Exception:
                    pass
                raise TimeoutError("the Space did not finish the reply in time")
            time.sleep(0.01)

    def send(self, text: str, conversation_id: str | None = None, source: str = "api") -> TurnResult:
        conversation_id = conversation_id or str(uuid.uuid4())
        started = time.perf_counter()
        reply = "".join(self.stream(text, conversation_id, source))
        return TurnResult(conversation_id, reply, (time.perf_counter() - started) * 1000)


def space_health(url: str, timeout: float = 3.0, operator_token: str | None = None, log_path=None) -> dict:
    """``GET /healthz`` of the Space: its JSON, or ``{"status": "down", "error": ...}``.

    ``status`` is ``ok`` or ``degraded`` (log writes failing) when the Space answers. With the
    staff token (``operator_token``, else :func:`chatcore.config.operator_token` for
    ``log_path`` / ``CHAT_LOG_PATH``) the Space adds its details (log path, responder, last error).
    """
    from chatcore.config import OPERATOR_TOKEN_HEADER, Settings
    from chatcore.config import operator_token as find_token

    if operator_token is None:
        operator_token = find_token(log_path if log_path is not None else Settings.from_env().log_path)
    headers = {OPERATOR_TOKEN_HEADER: operator_token} if operator_token else {}
    try:
        resp = httpx.get(url.rstrip("/") + "/healthz", timeout=timeout, headers=headers)
        if resp.status_code == 200:
            return resp.json()
        return {"status": "down", "error": f"HTTP {resp.status_code} from /healthz"}
    except httpx.HTTPError as exc:
        return {"status": "down", "error": f"cannot reach {display_url(url)} ({type(exc).__name__})"}
    except ValueError:
        return {"status": "down", "error": "the Space's /healthz did not return JSON"}


def staff_call(space_url: str, token: str | None, route: str, body: dict, timeout: float = 10.0) -> tuple[bool, str]:
    """``POST /handoff/<route>`` with the staff token: (ok, a message to show)."""
    import httpx

    from chatcore.config import OPERATOR_TOKEN_HEADER

    if not token:
        return False, "No staff token: set CHAT_OPERATOR_TOKEN, or point the dashboard at the Space's log folder."
    try:
        res = httpx.post(space_url.rstrip("/") + "/handoff/" + route, json=body,
                         headers={OPERATOR_TOKEN_HEADER: token}, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"Cannot reach the Space ({type(exc).__name__})."
    try:
        data = res.json()
    except ValueError:
        data = {}
    if res.status_code == 200:
        return True, data.get("status", "ok")
    return False, str(data.get("error") or f"HTTP {res.status_code}")

