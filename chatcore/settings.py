"""Configuration read from the environment (and overridden by CLI flags).

Every setting has a sane embedded default so that ``python -m chatcore space``
runs with no configuration at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DEFAULT_LOG_PATH = "./data/chat_logs.jsonl"
DEFAULT_SPACE_URL = "http://127.0.0.1:7860"


def display_url(url: str) -> str:
    """``url`` fit to show or log: without ``user:password@`` and without a query string."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "(invalid URL)"
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


def _env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


@dataclass(frozen=True)
class Settings:
    #: The JSONL log file (or a folder of ``*.jsonl`` shards, for readers).
    log_path: Path = Path(DEFAULT_LOG_PATH)
    #: ``echo`` | ``openai`` | ``hf``
    responder: str = "echo"
    host: str = "127.0.0.1"
    port: int = 7860
    #: Largest accepted message text, in bytes of UTF-8.
    max_message_bytes: int = 32 * 1024
    #: How many /chat calls run at once (Gradio queues the rest).
    concurrency: int = 128
    #: Origins allowed to call the Space from a browser (widget on another site).
    #: ``*`` allows any origin. Localhost origins are always allowed.
    allowed_origins: list[str] = field(default_factory=list)
    #: Replica id; when set, the Space writes its own shard ``<stem>.<replica>.jsonl``.
    replica: str | None = None
    #: Where the dashboard and the CLI reach the Space.
    space_url: str = DEFAULT_SPACE_URL
    #: Mask e-mails, phone and card numbers in user text and replies before they are logged.
    redact_pii: bool = False

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        values = dict(
            log_path=Path(os.environ.get("CHAT_LOG_PATH") or DEFAULT_LOG_PATH),
            responder=os.environ.get("CHAT_RESPONDER") or "echo",
            max_message_bytes=_env_int("CHAT_MAX_MESSAGE_BYTES", 32 * 1024),
            concurrency=_env_int("CHAT_CONCURRENCY", 128),
            allowed_origins=_env_list("CHAT_ALLOWED_ORIGINS", []),
            replica=os.environ.get("CHAT_REPLICA_ID") or None,
            space_url=os.environ.get("CHAT_SPACE_URL") or DEFAULT_SPACE_URL,
            redact_pii=os.environ.get("CHAT_REDACT_PII", "").strip().lower() in ("1", "true", "yes", "on"),
        )
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if k in known and v is not None})
        if "log_path" in overrides and overrides["log_path"] is not None:
            values["log_path"] = Path(overrides["log_path"])
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @property
    def shard_path(self) -> Path:
        """The file this process writes: the log path, or its replica shard."""
        if not self.replica:
            return self.log_path
        p = self.log_path
        return p.with_name(f"{p.stem}.{self.replica}{p.suffix or '.jsonl'}")
