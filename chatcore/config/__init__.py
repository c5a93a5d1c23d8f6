"""Configuration: the settings (:mod:`chatcore.config.settings`, every variable defined once) and
the staff token beside the log.

Every setting has a sane embedded default so that ``python -m chatcore space``
runs with no configuration at all.
"""
from __future__ import annotations

import os
from pathlib import Path

# the names callers import from chatcore.config
from chatcore.config.fields import SettingsError, reveal  # noqa: F401
from chatcore.config.settings import DEFAULT_DASHBOARD_URL, DEFAULT_LOG_PATH, DEFAULT_SPACE_URL, Settings  # noqa: F401
from chatcore.urls import display_url  # noqa: F401  (where most callers look for it)


def _is_url(value) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def remote_log_spec(override=None, settings: Settings | None = None) -> str | None:
    """The Space URL(s) whose log to read, or None for a local log.

    ``--log URL`` (``override``), else ``CHAT_LOG_URL``, else ``CHAT_LOG_PATH`` when it is a
    URL, else ``CHAT_SPACE_URL`` of another machine when ``CHAT_OPERATOR_TOKEN`` is set and
    no local log is named. Several URLs (replicas) are separated by commas.
    """
    if override is not None:
        return str(override) if _is_url(str(override)) else None
    settings = settings if settings is not None else Settings.from_env()
    if settings.remote_log_url:
        return settings.remote_log_url
    if settings.log_spec:
        return settings.log_spec if _is_url(settings.log_spec) else None
    if settings.space_url and reveal(settings.operator_token):
        from urllib.parse import urlsplit

        try:
            host = urlsplit(settings.space_url).hostname or ""
        except ValueError:
            return None
        if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):  # a local Space: read its file
            return settings.space_url
    return None


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
    env = reveal(Settings.from_env().operator_token)
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
