"""Responders: what writes the bot's reply.

Each responder is a callable ``stream(user_text, history) -> Iterator[str]`` that
yields pieces of the reply as they arrive (the Space accumulates them).
``history`` is a list of ``{"role": "user"|"assistant", "content": str}``.

* ``echo``   — deterministic, no network; streams word by word. The default.
* ``openai`` — any OpenAI-compatible ``/v1/chat/completions`` server with
  ``stream: true`` (llama.cpp server, vLLM, TGI, OpenAI).
  Env: ``OPENAI_BASE_URL`` (default ``http://127.0.0.1:8080/v1``), ``OPENAI_MODEL``,
  ``OPENAI_API_KEY`` (optional), ``CHAT_SYSTEM_PROMPT`` (optional).
* ``hf``     — ``huggingface_hub.InferenceClient.chat_completion(stream=True)``.
  Env: ``HF_MODEL`` (default ``HuggingFaceH4/zephyr-7b-beta``), ``HF_TOKEN``, or
  ``HF_BASE_URL`` for an Inference Endpoint / TGI server of your own.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import httpx


class ResponderError(RuntimeError):
    """The backend failed. The message is safe to show and to log (no secrets)."""


@dataclass
class Responder:
    name: str
    model: str | None
    stream: Callable[[str, list[dict]], Iterator[str]]


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
    delay = float(os.environ.get("CHAT_ECHO_DELAY", "0") or 0)
    return Responder("echo", None, lambda text, hist: echo_stream(text, hist, delay))


# ---------------------------------------------------------------------------- openai


def _messages(user_text: str, history: list[dict]) -> list[dict]:
    system = os.environ.get("CHAT_SYSTEM_PROMPT")
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": m["role"], "content": m["content"]} for m in history]
    msgs.append({"role": "user", "content": user_text})
    return msgs


def make_openai() -> Responder:
    base = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1").rstrip("/")
    model = os.environ.get("OPENAI_MODEL", "default")
    key = os.environ.get("OPENAI_API_KEY", "")
    timeout = float(os.environ.get("OPENAI_TIMEOUT", "60"))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0), headers=headers)

    def stream(user_text: str, history: list[dict]) -> Iterator[str]:
        body = {"model": model, "messages": _messages(user_text, history), "stream": True}
        try:
            with client.stream("POST", f"{base}/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise ResponderError(
                        f"the model server answered HTTP {resp.status_code}"
                    )
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        chunk = json.loads(data)
                        delta = chunk["choices"][0].get("delta") or {}
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise ResponderError("the model server sent a malformed stream") from None
                    piece = delta.get("content")
                    if piece:
                        yield piece
        except httpx.TimeoutException:
            raise ResponderError("the model server timed out") from None
        except httpx.HTTPError as exc:
            # Only the exception type: messages can carry URLs with credentials.
            raise ResponderError(f"could not reach the model server ({type(exc).__name__})") from None

    return Responder("openai", model, stream)


# -------------------------------------------------------------------------------- hf


def make_hf() -> Responder:
    from huggingface_hub import InferenceClient

    model = os.environ.get("HF_MODEL", "HuggingFaceH4/zephyr-7b-beta")
    base_url = os.environ.get("HF_BASE_URL")  # a dedicated Inference Endpoint or a TGI server
    token = os.environ.get("HF_TOKEN") or None
    timeout = float(os.environ.get("HF_TIMEOUT", "60"))
    if base_url:
        client = InferenceClient(base_url=base_url, token=token, timeout=timeout)
    else:
        client = InferenceClient(model, token=token, timeout=timeout)
    max_tokens = int(os.environ.get("HF_MAX_TOKENS", "512"))

    def stream(user_text: str, history: list[dict]) -> Iterator[str]:
        try:
            # The configured model goes in every request (without it, a client made with
            # base_url sends "dummy"); it is also what the Space logs as ``model``.
            for chunk in client.chat_completion(
                _messages(user_text, history), model=model, max_tokens=max_tokens, stream=True
            ):
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    yield piece
        except Exception as exc:  # the hub raises many types; keep the name only
            raise ResponderError(f"Hugging Face inference failed ({type(exc).__name__})") from None

    return Responder("hf", model, stream)


FACTORIES = {"echo": make_echo, "openai": make_openai, "hf": make_hf}


def make_responder(name: str) -> Responder:
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise SystemExit(
            f"unknown responder {name!r}: choose one of {', '.join(FACTORIES)}"
        ) from None
    return factory()
