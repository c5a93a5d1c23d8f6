"""Responders: what writes the bot's reply.

Each responder is a callable ``stream(user_text, history) -> Iterator[str]`` that
yields pieces of the reply as they arrive (the Space accumulates them).
``history`` is a list of ``{"role": "user"|"assistant", "content": str}``.

* ``echo``   — deterministic, no network; streams word by word. The default.
* ``openai`` — any OpenAI-compatible ``/v1/chat/completions`` server (llama.cpp server, vLLM,
  TGI, OpenAI) through :mod:`chatcore.llm.openai_chat`, streaming and asking for usage.
  Env: ``OPENAI_BASE_URL`` (default ``http://127.0.0.1:8080/v1``), ``OPENAI_MODEL``,
  ``OPENAI_API_KEY`` (optional), ``OPENAI_TIMEOUT`` (s, default 60), ``OPENAI_MAX_RETRIES``
  (default 2), ``CHAT_SYSTEM_PROMPT`` (optional), ``CHAT_HANDOFF_TOOL=on`` (offer the
  ``request_human`` tool).
* ``hf``     — ``huggingface_hub.InferenceClient.chat_completion(stream=True)``.
  Env: ``HF_MODEL`` (default ``HuggingFaceH4/zephyr-7b-beta``), ``HF_TOKEN``, or
  ``HF_BASE_URL`` for an Inference Endpoint / TGI server of your own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

from chatcore.config import Settings, reveal
from chatcore.llm import openai_chat
from chatcore.llm.openai_chat import Usage


class ResponderError(RuntimeError):
    """The backend failed. The message is safe to show and to log (no secrets)."""


@dataclass
class TurnReport:
    """What a responder tells the Space about one reply, beside its text (filled as it streams)."""

    #: Token counts as the model server reported them (None: it reported none).
    usage: Usage | None = None
    #: The model called the ``request_human`` tool (CHAT_HANDOFF_TOOL=on).
    wants_human: bool = False


@dataclass
class Responder:
    """``stream(user_text, history)`` yields the reply's pieces. A responder that talks to a
    model also has ``reply(user_text, history, report, system)``: the same stream, filling a
    :class:`TurnReport`, with ``system`` (a draft) in place of its own system prompt."""

    name: str
    model: str | None
    stream: Callable[[str, list[dict]], Iterator[str]] | None = None
    reply: Callable[..., Iterator[str]] | None = None
    #: The system prompt it sends (CHAT_SYSTEM_PROMPT), for the turn's ``prompt_version``.
    system_prompt: str | None = None

    def __post_init__(self):
        if self.stream is None and self.reply is not None:
            self.stream = lambda text, history: self.reply(text, history, TurnReport())
        if self.stream is None:
            raise ValueError("a responder needs stream or reply")

    def answer(self, user_text: str, history: list[dict], report: TurnReport,
               system: str | None = None) -> Iterator[str]:
        """The reply's pieces, filling ``report`` when the responder can."""
        if self.reply is None:
            return self.stream(user_text, history)
        return self.reply(user_text, history, report, system)


# ------------------------------------------------------------------------------ echo


def echo_stream(user_text: str, history: list[dict], delay: float = 0.0) -> Iterator[str]:
    """Reply ``You said: <text>`` word by word (history length included, so it is testable)."""
    turns = sum(1 for m in history if m.get("role") == "user")
    reply = f"You said: {user_text}" if user_text else "You sent no text."
    if turns:
        reply += f" (message {turns + 1} in this conversation)"
    words = reply.split(" ")
    for i, word in enumerate(words):
        if delay:
            time.sleep(delay)
        yield word if i == 0 else " " + word


def make_echo() -> Responder:
    delay = Settings.from_env().echo_delay
    return Responder("echo", None, lambda text, hist: echo_stream(text, hist, delay))


# ---------------------------------------------------------------------------- openai


#: The tool offered with CHAT_HANDOFF_TOOL=on: the model calls it to hand the visitor to a person.
REQUEST_HUMAN_TOOL = {
    "type": "function",
    "function": {
        "name": "request_human",
        "description": "Hand this conversation to a human support agent. Call it when the visitor asks "
                       "for a person, or when you cannot help them.",
        "parameters": {"type": "object", "properties": {
            "reason": {"type": "string", "description": "Why a person is needed, in a few words."}}},
    },
}


def _messages(user_text: str, history: list[dict], system: str | None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": m["role"], "content": m["content"]} for m in history]
    msgs.append({"role": "user", "content": user_text})
    return msgs


def handoff_tool_enabled() -> bool:
    return Settings.from_env().handoff_tool


def make_openai() -> Responder:
    settings = Settings.from_env()
    model = settings.openai_model
    client = openai_chat.make_client(
        settings.openai_base_url,
        reveal(settings.openai_api_key),
        timeout=settings.openai_timeout,
        max_retries=settings.openai_max_retries,
    )
    tools = [REQUEST_HUMAN_TOOL] if settings.handoff_tool else None
    system_prompt = settings.system_prompt or None

    def reply(user_text: str, history: list[dict], report: TurnReport, system: str | None = None) -> Iterator[str]:
        chat = openai_chat.ChatStream(client, model=model, messages=_messages(
            user_text, history, system if system is not None else system_prompt), tools=tools)
        try:
            yield from chat
        except openai_chat.ModelServerError as exc:
            raise ResponderError(str(exc)) from None
        finally:
            report.usage = chat.usage
            report.wants_human = any(c.name == REQUEST_HUMAN_TOOL["function"]["name"] for c in chat.tool_calls)

    return Responder("openai", model, None, reply=reply, system_prompt=system_prompt)


# -------------------------------------------------------------------------------- hf


def make_hf() -> Responder:
    from huggingface_hub import InferenceClient

    settings = Settings.from_env()
    model = settings.hf_model
    base_url = settings.hf_base_url  # a dedicated Inference Endpoint or a TGI server
    token = reveal(settings.hf_token)
    timeout = settings.hf_timeout
    if base_url:
        client = InferenceClient(base_url=base_url, token=token, timeout=timeout)
    else:
        client = InferenceClient(model, token=token, timeout=timeout)
    max_tokens = settings.hf_max_tokens
    system_prompt = settings.system_prompt or None

    def reply(user_text: str, history: list[dict], report: TurnReport, system: str | None = None) -> Iterator[str]:
        try:
            # The configured model goes in every request (without it, a client made with
            # base_url sends "dummy"); it is also what the Space logs as ``model``.
            # Usage is asked for as the openai responder does; TGI and the Hub's routers
            # send it in the last chunk when they support it.
            for chunk in client.chat_completion(
                _messages(user_text, history, system if system is not None else system_prompt),
                model=model, max_tokens=max_tokens, stream=True, stream_options={"include_usage": True},
            ):
                usage = openai_chat.usage_from(getattr(chunk, "usage", None))
                if usage is not None:
                    report.usage = usage
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    yield piece
        except Exception as exc:  # the hub raises many types; keep the name only
            raise ResponderError(f"Hugging Face inference failed ({type(exc).__name__})") from None

    return Responder("hf", model, None, reply=reply, system_prompt=system_prompt)


FACTORIES = {"echo": make_echo, "openai": make_openai, "hf": make_hf}


def make_responder(name: str) -> Responder:
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise SystemExit(
            f"unknown responder {name!r}: choose one of {', '.join(FACTORIES)}"
        ) from None
    return factory()
