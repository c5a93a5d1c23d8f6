"""The one client for OpenAI-compatible chat completions servers (llama.cpp, vLLM, TGI, OpenAI).

Built on the official ``openai`` SDK, which brings the base URL, the key, timeouts, retries of
failed connections and 429/5xx answers (before any byte of a reply arrived), and typed errors.
The ``openai`` responder (:mod:`chatcore.llm.responders`) and the eval judge
(:mod:`chatcore.staff.evaluate`) both talk through it.

Streams ask for usage (``stream_options={"include_usage": true}``): a server that supports it
sends the token counts in its last chunk, and :class:`ChatStream` keeps them. A server that
does not simply sends none; nothing is estimated.

Errors are :class:`ModelServerError` whose message names what failed (a status code, a
timeout, the type of a connection error) and never the URL's credentials or the key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import openai

#: The SDK insists on a key: without one this placeholder is given, and every request leaves
#: the ``Authorization`` header out (see :func:`_headers`).
NO_KEY = "no-key"
#: Seconds to wait for a connection (the whole request has its own timeout).
CONNECT_TIMEOUT = 5.0


class ModelServerError(RuntimeError):
    """The model server failed or answered something that is not chat completions.
    The message is safe to show and to log."""


@dataclass(frozen=True)
class Usage:
    """Token counts as the model server reported them for one request."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    def as_log(self) -> dict:
        """The ``usage`` object of a logged turn: only what was reported."""
        out = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        if self.cached_tokens is not None:
            out["cached_tokens"] = self.cached_tokens
        if self.reasoning_tokens is not None:
            out["reasoning_tokens"] = self.reasoning_tokens
        return out


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        return None
    return value


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def usage_from(obj: Any) -> Usage | None:
    """:class:`Usage` from a chat completions ``usage`` object (the SDK's, huggingface_hub's
    or a plain dict), or None when it does not hold both counts."""
    if obj is None:
        return None
    prompt, completion = _count(_get(obj, "prompt_tokens")), _count(_get(obj, "completion_tokens"))
    if prompt is None or completion is None:
        return None
    cached = _count(_get(_get(obj, "prompt_tokens_details"), "cached_tokens"))
    reasoning = _count(_get(_get(obj, "completion_tokens_details"), "reasoning_tokens"))
    return Usage(prompt, completion, cached or None, reasoning or None)


def make_client(base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                max_retries: int = 2) -> openai.OpenAI:
    """An SDK client for ``base_url`` (``http://host:port/v1``).

    The key is passed explicitly (empty: no ``Authorization`` header) so that the SDK never
    falls back to the ``OPENAI_API_KEY`` of the environment: the judge's server must not
    receive the responder's key."""
    return openai.OpenAI(
        base_url=base_url.rstrip("/"),
        api_key=api_key or NO_KEY,
        max_retries=max(0, int(max_retries)),
        timeout=openai.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
    )


def _headers(client: openai.OpenAI) -> dict:
    return {"Authorization": openai.omit} if client.api_key == NO_KEY else {}


def describe_failure(exc: BaseException, who: str) -> str:
    """What went wrong talking to ``who`` ("the model server"), fit to show: status codes and
    type names only (SDK messages can carry the URL and the server's words)."""
    if isinstance(exc, openai.APITimeoutError):
        return f"{who} timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"{who} answered HTTP {exc.status_code}"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return f"could not reach {who} ({type(cause).__name__ if cause else type(exc).__name__})"
    return f"{who} sent a malformed stream"


@dataclass
class ToolCall:
    name: str
    arguments: str = ""


class ChatStream:
    """One streamed chat completion: iterate for the pieces of the reply; afterwards
    :attr:`usage` holds what the server reported (or None) and :attr:`tool_calls` the tools
    the model called."""

    def __init__(self, client: openai.OpenAI, *, model: str, messages: list[dict],
                 tools: list[dict] | None = None, who: str = "the model server", **params: Any):
        self.client, self.model, self.messages, self.tools = client, model, messages, tools
        self.who = who
        self.params = params
        self.usage: Usage | None = None
        self.tool_calls: list[ToolCall] = []

    def __iter__(self) -> Iterator[str]:
        calls: dict[int, ToolCall] = {}
        extra = {"tools": self.tools} if self.tools else {}
        try:
            stream = self.client.chat.completions.create(
                model=self.model, messages=self.messages, stream=True,
                stream_options={"include_usage": True}, extra_headers=_headers(self.client),
                **extra, **self.params)
            with stream:
                for chunk in stream:
                    usage = usage_from(getattr(chunk, "usage", None))
                    if usage is not None:
                        self.usage = usage
                    for choice in chunk.choices or ():
                        delta = choice.delta
                        if delta is None:
                            continue
                        if delta.content:
                            yield delta.content
                        for call in delta.tool_calls or ():
                            entry = calls.setdefault(call.index, ToolCall(""))
                            fn = call.function
                            if fn is not None:
                                entry.name += fn.name or ""
                                entry.arguments += fn.arguments or ""
        except openai.OpenAIError as exc:
            raise ModelServerError(describe_failure(exc, self.who)) from None
        except (ValueError, TypeError, AttributeError):  # not JSON, or not chat completions
            raise ModelServerError(f"{self.who} sent a malformed stream") from None
        finally:
            self.tool_calls = [calls[i] for i in sorted(calls)]


def complete(client: openai.OpenAI, *, model: str, messages: list[dict], who: str = "the model server",
             **params: Any) -> tuple[str, Usage | None]:
    """One chat completion without streaming: (the reply's text, usage or None)."""
    try:
        answer = client.chat.completions.create(model=model, messages=messages, stream=False,
                                                extra_headers=_headers(client), **params)
        choices = answer.choices
        if not choices:
            raise ValueError("no choices")
        content = choices[0].message.content or ""
    except openai.OpenAIError as exc:
        raise ModelServerError(describe_failure(exc, who)) from None
    except (ValueError, TypeError, AttributeError, IndexError, json.JSONDecodeError):
        raise ModelServerError(f"{who}'s answer is not chat completions JSON") from None
    return content, usage_from(getattr(answer, "usage", None))
