"""Configuration read from the environment (and overridden by CLI flags).

Every setting has a sane embedded default so that ``python -m chatcore space``
runs with no configuration at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from chatcore.urls import display_url  # noqa: F401  (where most callers look for it)

DEFAULT_LOG_PATH = "./data/chat_logs.jsonl"
DEFAULT_SPACE_URL = "http://127.0.0.1:7860"


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


def _is_url(value) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def remote_log_spec(override=None) -> str | None:
    """The Space URL(s) whose log to read, or None for a local log.

    ``--log URL`` (``override``), else ``CHAT_LOG_URL``, else ``CHAT_LOG_PATH`` when it is a
    URL, else ``CHAT_SPACE_URL`` of another machine when ``CHAT_OPERATOR_TOKEN`` is set and
    no local log is named. Several URLs (replicas) are separated by commas.
    """
    if override is not None:
        return str(override) if _is_url(str(override)) else None
    url = os.environ.get("CHAT_LOG_URL", "").strip()
    if url:
        return url
    path = os.environ.get("CHAT_LOG_PATH", "").strip()
    if path:
        return path if _is_url(path) else None
    space = os.environ.get("CHAT_SPACE_URL", "").strip()
    if space and os.environ.get("CHAT_OPERATOR_TOKEN", "").strip():
        from urllib.parse import urlsplit

        try:
            host = urlsplit(space).hostname or ""
        except ValueError:
            return None
        if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):  # a local Space: read its file
            return space
    return None


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
    #: Most files one message may carry.
    max_files: int = 5
    #: Largest upload, in bytes; a bigger body is refused while it is being received.
    max_upload_bytes: int = 10 * 1024 * 1024
    #: Memory for conversation context (recent messages per conversation), in MB.
    context_mb: int = 256
    #: Calls one client may have queued or running at once (per address and per session).
    client_concurrency: int = 32
    #: Proxies whose X-Forwarded-For is believed (addresses); from anyone else it is ignored.
    trusted_proxies: list[str] = field(default_factory=list)
    #: Ratings one client may send to /feedback per minute.
    feedback_per_minute: int = 60
    #: ``daily``: write one shard per UTC day (``<stem>.<YYYY-MM-DD>[.<replica>].jsonl``).
    rotate: str = ""
    #: Delete shards older than this many days (0: keep everything); see ``retention``.
    retention_days: int = 0
    #: The Space(s) whose log ``log_path`` mirrors (shown without credentials); None for a local log.
    log_url: str | None = None

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Settings from the environment and ``overrides``. Reading them has no side effect: a
        log that is a URL is mirrored by :func:`chatcore.remote.log_settings.load_settings`."""
        values = dict(
            log_path=Path(os.environ.get("CHAT_LOG_PATH") or DEFAULT_LOG_PATH),
            responder=os.environ.get("CHAT_RESPONDER") or "echo",
            max_message_bytes=_env_int("CHAT_MAX_MESSAGE_BYTES", 32 * 1024),
            concurrency=_env_int("CHAT_CONCURRENCY", 128),
            allowed_origins=_env_list("CHAT_ALLOWED_ORIGINS", []),
            replica=os.environ.get("CHAT_REPLICA_ID") or None,
            space_url=os.environ.get("CHAT_SPACE_URL") or DEFAULT_SPACE_URL,
            redact_pii=os.environ.get("CHAT_REDACT_PII", "").strip().lower() in ("1", "true", "yes", "on"),
            max_files=_env_int("CHAT_MAX_FILES", 5),
            max_upload_bytes=_env_int("CHAT_MAX_UPLOAD_BYTES", 10 * 1024 * 1024),
            context_mb=_env_int("CHAT_CONTEXT_MB", 256),
            client_concurrency=_env_int("CHAT_CLIENT_CONCURRENCY", 32),
            trusted_proxies=_env_list("CHAT_TRUSTED_PROXIES", []),
            feedback_per_minute=_env_int("CHAT_FEEDBACK_PER_MINUTE", 60),
            rotate=(os.environ.get("CHAT_ROTATE") or "").strip().lower(),
            retention_days=_env_int("CHAT_RETENTION_DAYS", 0),
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

    def shard_path_on(self, day) -> Path:
        """The daily shard for ``day`` (a date): ``<stem>.<YYYY-MM-DD>[.<replica>].jsonl``;
        for a log path that is a folder, ``chat_logs.<YYYY-MM-DD>[.<replica>].jsonl`` in it."""
        p = self.log_path
        if p.is_dir() or not p.suffix:
            p = p / Path(DEFAULT_LOG_PATH).name
        replica = f".{self.replica}" if self.replica else ""
        return p.with_name(f"{p.stem}.{day.isoformat()}{replica}{p.suffix or '.jsonl'}")

    def current_shard_path(self) -> Path:
        """The file to write now: today's (UTC) shard with ``rotate=daily``, else :attr:`shard_path`."""
        if self.rotate != "daily":
            return self.shard_path
        from datetime import datetime, timezone

        return self.shard_path_on(datetime.now(timezone.utc).date())


# ------------------------------------------------------------------------ staff token

OPERATOR_TOKEN_ENV = "CHAT_OPERATOR_TOKEN"
OPERATOR_TOKEN_HEADER = "X-Chat-Operator-Token"
OPERATOR_TOKEN_FILE = ".chatcore-operator-token"


def log_folder(log_path: str | os.PathLike) -> Path:
    """The folder holding the log: the path itself when it is a folder of shards."""
    p = Path(log_path)
    return p if p.is_dir() or not p.suffix else p.parent


def operator_token_path(log_path: str | os.PathLike) -> Path:
    return log_folder(log_path) / OPERATOR_TOKEN_FILE


def operator_token(log_path: str | os.PathLike | None) -> str | None:
    """The staff token: ``CHAT_OPERATOR_TOKEN``, else the token file beside the log, else None."""
    env = os.environ.get(OPERATOR_TOKEN_ENV, "").strip()
    if env:
        return env
    if log_path is None:
        return None
    try:
        token = operator_token_path(log_path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def ensure_operator_token(log_path: str | os.PathLike) -> str:
    """The staff token for a Space writing ``log_path``; creates the token file (0600) when
    ``CHAT_OPERATOR_TOKEN`` is unset and no file exists yet. Atomic: concurrent starts agree."""
    existing = operator_token(log_path)
    if existing:
        return existing
    import secrets

    path = operator_token_path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (secrets.token_urlsafe(32) + "\n").encode("ascii")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # whole file or nothing; fails if another process was first: theirs wins
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: create-exclusive instead
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
    finally:
        os.unlink(tmp)
    token = operator_token(log_path)
    if not token:
        raise OSError(f"could not read the staff token file {path}")
    return token


def token_matches(given: str | None, expected: str | None) -> bool:
    import hmac

    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))
