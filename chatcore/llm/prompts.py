"""Which system prompt wrote a reply, and drafts of a prompt tried before it goes live.

A turn's ``prompt_version`` is ``CHAT_PROMPT_VERSION`` when set, else a short hash of the
system prompt, so every change of the prompt is a new version even when nobody names it.

A draft is a system prompt staff try on the Space without changing its settings: the Chat
page and ``eval NAME --prompt FILE`` send it in the :data:`DRAFT_HEADER` header (base64url
of its UTF-8 text) together with the staff token. The Space uses it for that request only
and logs the turn with the draft's version, ``draft-<hash>``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib

#: Characters of the hash that names a prompt without CHAT_PROMPT_VERSION.
VERSION_HASH_LENGTH = 10
MAX_VERSION_LENGTH = 64
#: The header carrying a draft system prompt (staff only).
DRAFT_HEADER = "X-Chat-Draft-Prompt"
#: The longest draft, in bytes of UTF-8: encoded, it must fit the Space's request headers (16 KB).
MAX_DRAFT_BYTES = 8192


def prompt_version(system_prompt: str | None, named: str | None = None) -> str | None:
    """``named`` (CHAT_PROMPT_VERSION) if given, else a short hash of the system prompt, else None
    (a reply written without a system prompt)."""
    if named and named.strip():
        return named.strip()[:MAX_VERSION_LENGTH]
    if not system_prompt:
        return None
    return hashlib.sha256(system_prompt.encode("utf-8", "replace")).hexdigest()[:VERSION_HASH_LENGTH]


def draft_version(system_prompt: str) -> str:
    """The version a draft is logged with (never the live prompt's name: the draft is not it)."""
    return "draft-" + prompt_version(system_prompt)


def encode_draft(system_prompt: str) -> str:
    """The header value for a draft; ValueError when it is empty or too long."""
    raw = system_prompt.encode("utf-8")
    if not raw.strip():
        raise ValueError("the draft system prompt is empty")
    if len(raw) > MAX_DRAFT_BYTES:
        raise ValueError(f"the draft system prompt is longer than {MAX_DRAFT_BYTES // 1024} KB: shorten it")
    return base64.urlsafe_b64encode(raw).decode("ascii")


def decode_draft(value: str) -> str:
    """The draft a header value carries; ValueError (safe to show) when it is not one."""
    if len(value) > 4 * (MAX_DRAFT_BYTES // 3 + 1):
        raise ValueError(f"the draft system prompt is longer than {MAX_DRAFT_BYTES // 1024} KB")
    try:
        text = base64.urlsafe_b64decode(value.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise ValueError(f"{DRAFT_HEADER} must be base64url of UTF-8 text") from None
    if not text.strip():
        raise ValueError("the draft system prompt is empty")
    return text
