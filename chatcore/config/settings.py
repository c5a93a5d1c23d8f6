"""Every setting, defined once: its environment variable, type, default and meaning.

:meth:`Settings.from_env` reads the environment each time it is called (it is cheap, and it
has no side effect: no file, thread or network), so code that reads a setting when it needs
it sees the environment of that moment. A value that does not parse stops the program with a
:class:`SettingsError` naming the variable, the value and what is expected; a secret's value
is never shown (in a repr, a str or an error). docs/configuration.md is generated from the
fields below by ``python -m chatcore config-docs``.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from chatcore.config.fields import SettingsError, explain, field_env, setting

DEFAULT_LOG_PATH = "./data/chat_logs.jsonl"
DEFAULT_SPACE_URL = "http://127.0.0.1:7860"
DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8501"
DEFAULT_HANDOFF_PHRASES = (
    "talk to a person", "talk to a human", "speak to a person", "speak to a human",
    "speak to someone", "talk to someone", "real person", "human agent", "live agent",
    "customer service representative", "talk to an agent", "speak to an agent",
)
DEFAULT_HANDOFF_NOTICE = "I've asked a member of our team to join. Someone will be with you shortly."
DEFAULT_HANDOFF_FALLBACK = ("Sorry, nobody from our team is free right now. I'll keep helping you here, "
                            "and you can ask for a person again later.")
DEFAULT_ALERT_PERSON_PHRASES = (
    "talk to a person", "talk to a human", "speak to a person", "speak to a human", "speak to someone",
    "talk to someone", "real person", "human agent", "live agent", "talk to an agent", "speak to an agent",
)

#: The groups of the reference in docs/configuration.md: key -> (heading level, title, intro).
GROUPS: dict[str, tuple[int, str, str]] = {
    "log": (2, "The log and where things are", ""),
    "space": (2, "The Space", ""),
    "responders": (3, "Responders", "Read by [`chatcore/llm/responders.py`](../chatcore/llm/responders.py) "
                                    "when the Space starts."),
    "handoff": (3, "Staff take over", "Read by [`chatcore/space/handoff.py`](../chatcore/space/handoff.py)."),
    "llm": (3, "Tokens, cost, prompt versions and traces", "Read by the Space; details in [llm.md](llm.md)."),
    "dashboard": (2, "The dashboard", ""),
    "alerts": (2, "Alerts", "Read by the watcher, [`chatcore/staff/alerts.py`](../chatcore/staff/alerts.py) "
                            "([operations.md](operations.md#alerts))."),
    "tools": (2, "Tools and tests", ""),
}

_SIZE_UNITS = {"": 1, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4}


#: The environment :meth:`Settings.from_env` reads in this thread (None: ``os.environ``).
_environ: ContextVar[Mapping[str, str] | None] = ContextVar("chatcore_settings_environ", default=None)


def _raw(field, environ: Mapping[str, str]) -> str | None:
    """A field's variable, stripped; a blank value counts as unset unless the field keeps it."""
    env = field_env(field)
    raw = environ.get(env) if env else None
    if raw is not None:
        raw = raw.strip()
        if not raw and not (field.json_schema_extra or {}).get("keep_empty"):
            raw = None
    return raw


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{field name: raw value}`` of the fields set in ``environ`` (default: the environment
    :meth:`Settings.from_env` was given, else ``os.environ``)."""
    environ = environ if environ is not None else _environ.get()
    environ = os.environ if environ is None else environ
    values = {}
    for name, field in Settings.model_fields.items():
        raw = _raw(field, environ)
        if raw is not None:
            values[name] = raw
    return values


class _Environment(PydanticBaseSettingsSource):
    """Each field from its own variable (exact case) and nothing else; no ``.env`` file."""

    def get_field_value(self, field, field_name: str) -> tuple[Any, str, bool]:
        return read_environment().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return read_environment()


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _size(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    m = re.fullmatch(r"([0-9]{1,15}(?:\.[0-9]{1,6})?)\s*([KMGT]?)B?", value.strip().upper())
    size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2)]) if m else 0
    if size <= 0:
        raise ValueError("a size such as 10G or 500M")
    return size


G = "log"
S = "space"
R = "responders"
H = "handoff"
L = "llm"
D = "dashboard"
A = "alerts"
T = "tools"


class Settings(BaseSettings):
    """The configuration of every part (see the module docstring); frozen: use :meth:`with_`."""

    model_config = SettingsConfigDict(case_sensitive=True, frozen=True, extra="ignore", enable_decoding=False,
                                      hide_input_in_errors=True)

    # --- the log and where things are
    log_path: Path = setting(
        Path(DEFAULT_LOG_PATH), "the log the Space writes (the folder is created); readers also accept a folder "
        "of `*.jsonl` shards, or a Space's URL (see `CHAT_LOG_URL`). On Hugging Face Spaces (`app.py`): "
        "`/data/chat_logs.jsonl` when persistent storage is enabled", env="CHAT_LOG_PATH", group=G)
    remote_log_url: str | None = setting(
        None, "read the log from this Space URL (comma-separated for replicas) instead of a file; the same as "
        "`--log https://…`; needs `CHAT_OPERATOR_TOKEN`", env="CHAT_LOG_URL", group=G, kind="URL")
    space_url: str = setting(
        DEFAULT_SPACE_URL, "where the dashboard, the CLI and the alerts watcher reach the Space; with "
        "`CHAT_OPERATOR_TOKEN` and no `CHAT_LOG_PATH`, a Space on another machine is also the log",
        env="CHAT_SPACE_URL", group=G, kind="URL")
    mirror_dir: Path | None = setting(
        None, "where the dashboard and the CLI keep their copy of a remote log", env="CHAT_MIRROR_DIR", group=G,
        shown="`$XDG_CACHE_HOME/chatcore/mirrors`, else `~/.cache/chatcore/mirrors`")
    mirror_timeout: float = setting(
        60.0, "seconds one request of the mirror to a Space may take in all, headers and body",
        env="CHAT_MIRROR_TIMEOUT", group=G, kind="seconds", gt=0, lt=86_400)
    mirror_max_bytes: int = setting(
        10 * 1000 ** 3, "most a mirror folder may hold (bytes, or a number with `K`, `M`, `G`, `T`: powers of "
        "1000); past it the sync stops, keeping the whole lines that fit", env="CHAT_MIRROR_MAX_BYTES", group=G,
        kind="size", shown="`10G`")
    space_hf_token: SecretStr | None = setting(
        None, "Hugging Face token the dashboard and the CLI send (as `Authorization`, to `https://*.hf.space` "
        "only) to read the log of a private Space", env="CHAT_SPACE_HF_TOKEN", group=G, shown="`HF_TOKEN`")
    replica: str | None = setting(
        None, "replica id: this Space writes the shard `chat_logs.<id>.jsonl` (`--replica`)",
        env="CHAT_REPLICA_ID", group=G)
    rotate: Literal["", "daily"] = setting(
        "", "`daily`: one shard per UTC day, `<stem>.<YYYY-MM-DD>[.<replica>].jsonl`", env="CHAT_ROTATE",
        group=G, kind="`daily` or empty", shown="none")
    retention_days: int = setting(
        0, "the Space deletes daily shards older than this many days, at start and hourly "
        "([operations.md](operations.md))", env="CHAT_RETENTION_DAYS", group=G, shown="`0` (keep all)")
    redact_pii: bool = setting(
        False, "on masks e-mail addresses, phone and card numbers before a turn is logged",
        env="CHAT_REDACT_PII", group=G)

    # --- the Space
    responder: Literal["echo", "openai", "hf"] = setting(
        "echo", "who writes the replies: `echo` (deterministic, streams word by word), `openai`, `hf` "
        "(`--responder`)", env="CHAT_RESPONDER", group=S)
    title: str = setting("Chat", "title of the Space's own chat page", env="CHAT_TITLE", group=S)
    max_message_bytes: int = setting(
        32 * 1024, "largest accepted message, in bytes of UTF-8", env="CHAT_MAX_MESSAGE_BYTES", group=S)
    max_files: int = setting(5, "most files one message may carry", env="CHAT_MAX_FILES", group=S)
    max_upload_bytes: int = setting(
        10 * 1024 * 1024, "largest upload, in bytes; refused while it is being received",
        env="CHAT_MAX_UPLOAD_BYTES", group=S, shown="`10485760` (10 MB)")
    concurrency: int = setting(
        128, "`/chat` calls served at once (Gradio queues the rest)", env="CHAT_CONCURRENCY", group=S)
    client_concurrency: int = setting(
        32, "calls one client (address, and session) may have queued or running at once; more are refused "
        "with 429", env="CHAT_CLIENT_CONCURRENCY", group=S)
    feedback_per_minute: int = setting(
        60, "ratings one client may send to `/feedback` per minute (requests for a person: the same, at least "
        "10)", env="CHAT_FEEDBACK_PER_MINUTE", group=S)
    rate_limit_storage: SecretStr | None = setting(
        None, "where rate limits are counted (the Space's `/feedback` and `/handoff/request`, the dashboard's "
        "login throttle): a [`limits`](https://limits.readthedocs.io/) storage URI with moving windows, e.g. "
        "`redis://host:6379` (its client package must be installed), so several Spaces or dashboards share one "
        "allowance; secret, as the URI may carry a password", env="CHAT_RATE_LIMIT_STORAGE", group=S,
        kind="URI", shown="this process's memory")
    context_mb: int = setting(
        256, "memory for conversations' recent turns, in MB; the least recently used go cold and are rebuilt "
        "from the log", env="CHAT_CONTEXT_MB", group=S)
    allowed_origins: list[str] = setting(
        [], "browser origins allowed to call the Space (`*` for any); localhost origins are always allowed "
        "(`--allow-origin`)", env="CHAT_ALLOWED_ORIGINS", group=S, shown="localhost only")
    trusted_proxies: list[str] = setting(
        [], "proxy addresses/networks whose `X-Forwarded-For` names the client (the Space, and the dashboard's "
        "login throttle)", env="CHAT_TRUSTED_PROXIES", group=S)
    operator_token: SecretStr | None = setting(
        None, "staff token: required as `X-Chat-Operator-Token` for the sources `operator`/`replay`, the staff "
        "routes and `/healthz` details. `python -m chatcore dashboard` passes it to both the Space and the "
        "dashboard; only when it is set in the Space's environment (not the file) does the Space serve its log "
        "under `/staff/v1/`; the dashboard and the CLI send it to read a log by URL", env="CHAT_OPERATOR_TOKEN",
        group=S, shown="a random token in `<log folder>/.chatcore-operator-token`")
    shutdown_grace: float = setting(
        5.0, "seconds in-flight replies get to finish (and be logged) when the Space stops",
        env="CHAT_SHUTDOWN_GRACE", group=S, kind="seconds", ge=0)
    app_host: str = setting(
        "0.0.0.0", "address `app.py` (the Hugging Face Spaces entry point) binds; `python -m chatcore space` "
        "takes `--host` (default 127.0.0.1)", env="CHAT_HOST", group=S)
    app_port: int = setting(
        7860, "port of `app.py`; `python -m chatcore space` takes `--port` (default 7860)", env="PORT", group=S)
    # Given by the program (flags, the mirror), never read from the environment.
    host: str = "127.0.0.1"
    port: int = 7860
    #: The Space(s) whose log ``log_path`` mirrors (shown without credentials); None for a local log.
    log_url: str | None = None

    # --- responders
    echo_delay: float = setting(
        0.0, "seconds between streamed words of `echo` (to mimic a model)", env="CHAT_ECHO_DELAY", group=R,
        kind="seconds", ge=0)
    system_prompt: str | None = setting(None, "system message for `openai` and `hf`", env="CHAT_SYSTEM_PROMPT",
                                        group=R)
    openai_base_url: str = setting(
        "http://127.0.0.1:8080/v1", "any OpenAI-compatible server with streaming: llama.cpp server, vLLM, TGI, "
        "OpenAI", env="OPENAI_BASE_URL", group=R, kind="URL")
    openai_model: str = setting("default", "model name sent to it", env="OPENAI_MODEL", group=R)
    openai_api_key: SecretStr | None = setting(None, "its key", env="OPENAI_API_KEY", group=R)
    openai_timeout: float = setting(
        60.0, "seconds before the model server counts as timed out", env="OPENAI_TIMEOUT", group=R,
        kind="seconds", gt=0)
    openai_max_retries: int = setting(
        2, "retries of a request the model server failed or refused for now", env="OPENAI_MAX_RETRIES", group=R,
        ge=0)
    hf_model: str = setting("HuggingFaceH4/zephyr-7b-beta", "Hugging Face Inference model (`hf`)",
                            env="HF_MODEL", group=R)
    hf_base_url: str | None = setting(
        None, "`hf` against your own Inference Endpoint or TGI server instead of a Hub model", env="HF_BASE_URL",
        group=R, kind="URL")
    hf_token: SecretStr | None = setting(
        None, "Hugging Face token of the responder (stays with the Space)", env="HF_TOKEN", group=R)
    hf_timeout: float = setting(60.0, "seconds before the inference call counts as timed out", env="HF_TIMEOUT",
                                group=R, kind="seconds", gt=0)
    hf_max_tokens: int = setting(512, "most tokens in one reply", env="HF_MAX_TOKENS", group=R, gt=0)

    # --- staff take over
    handoff_timeout: float = setting(
        300.0, "seconds a request for a person waits before the fallback message", env="CHAT_HANDOFF_TIMEOUT",
        group=H, kind="seconds", gt=0)
    handoff_bot_while_waiting: bool = setting(
        True, "whether the bot answers a visitor who waits for a person (off: their messages wait for the "
        "person, as while staff hold the conversation); the widget and the Live page say which",
        env="CHAT_HANDOFF_BOT_WHILE_WAITING", group=H)
    handoff_phrases: tuple[str, ...] = setting(
        DEFAULT_HANDOFF_PHRASES, "phrases that ask for a person (matched without case inside a message); set "
        "but empty: none", env="CHAT_HANDOFF_PHRASES", group=H, keep_empty=True,
        shown='"talk to a person", "talk to a human", "speak to a person", "speak to a human", …')
    handoff_notice: str = setting(
        DEFAULT_HANDOFF_NOTICE, "what the visitor is told when they ask for a person", env="CHAT_HANDOFF_NOTICE",
        group=H, shown=f'"{DEFAULT_HANDOFF_NOTICE}"')
    handoff_fallback: str = setting(
        DEFAULT_HANDOFF_FALLBACK, "what the visitor is told when nobody took it in time",
        env="CHAT_HANDOFF_FALLBACK", group=H, shown='"Sorry, nobody from our team is free right now. …"')
    staff_display_name: str = setting(
        "", "the name visitors see when staff join and write", env="CHAT_STAFF_DISPLAY_NAME", group=H,
        shown="the staff member's own name")
    staff_name: str = setting(
        "", "default staff name for `takeover`/`say`/`handback` and the Live page", env="CHAT_STAFF_NAME",
        group=H, shown="the login name (CLI), empty (Live page)")

    # --- tokens, cost, prompt versions and traces
    prompt_version: str | None = setting(
        None, "the name of the live prompt's version, logged with each bot turn", env="CHAT_PROMPT_VERSION",
        group=L, shown="a hash of the system prompt")
    prices: str | None = setting(
        None, '`{"MODEL": {"input": USD, "output": USD}}` per million tokens (`"cached_input"` optional); a '
        "model without a price gets no cost", env="CHAT_PRICES", group=L, kind="JSON")
    handoff_tool: bool = setting(
        False, "on: the model is offered the `request_human` tool and may hand the visitor to a person",
        env="CHAT_HANDOFF_TOOL", group=L)
    otlp_endpoint: str | None = setting(
        None, "send each bot turn as an OpenTelemetry span (OTLP/HTTP, port 4318), e.g. to Phoenix or Langfuse",
        env="CHAT_OTLP_ENDPOINT", group=L, kind="URL", shown="off")
    otlp_headers: SecretStr | None = setting(
        None, "headers for the collector, e.g. `Authorization=Basic …` (comma-separated `name=value`)",
        env="CHAT_OTLP_HEADERS", group=L)
    otlp_timeout: float = setting(3.0, "seconds per export (exports never block a turn)",
                                  env="CHAT_OTLP_TIMEOUT", group=L, kind="seconds", gt=0)

    # --- the dashboard
    dashboard_password_hash: SecretStr | None = setting(
        None, "dashboard password, as printed by `python -m chatcore hash-password`",
        env="CHAT_DASHBOARD_PASSWORD_HASH", group=D)
    dashboard_password: SecretStr | None = setting(
        None, "a plain password instead; the launcher hashes it and passes only the hash on",
        env="CHAT_DASHBOARD_PASSWORD", group=D)
    staff_accounts: Path | None = setting(
        None, "a file of staff accounts (`name:hash` lines, written by `python -m chatcore staff-account add`); "
        "the login then asks for a name and a password, and the name is who speaks on the Live page",
        env="CHAT_STAFF_ACCOUNTS", group=D, kind="path")
    dashboard_cookie_secret: SecretStr | None = setting(
        None, "signs the dashboard's session cookie (at least 32 characters); unset, a random one is made at "
        "each start, so a restart logs everyone out", env="CHAT_DASHBOARD_COOKIE_SECRET", group=D,
        shown="random per start")
    login_per_address: int = setting(5, "password attempts allowed per client address, per window",
                                     env="CHAT_LOGIN_PER_ADDRESS", group=D, gt=0)
    login_overall: int = setting(20, "password attempts allowed in all, per window", env="CHAT_LOGIN_OVERALL",
                                 group=D, gt=0)
    login_window: float = setting(60.0, "the window of the login throttle", env="CHAT_LOGIN_WINDOW", group=D,
                                  kind="seconds", gt=0)
    timezone: str | None = setting(
        None, "the dashboard's time zone (IANA name) when the browser does not say", env="CHAT_TIMEZONE",
        group=D, shown="the browser's, else UTC")
    overview_refresh: float = setting(5.0, "seconds between refreshes of the Overview figures",
                                      env="CHAT_OVERVIEW_REFRESH", group=D, kind="seconds", gt=0)
    live_refresh: float = setting(0.5, "seconds between refreshes of the Live page", env="CHAT_LIVE_REFRESH",
                                  group=D, kind="seconds", gt=0)
    live_minutes: float = setting(15.0, "the Live page lists conversations with activity in this many minutes",
                                  env="CHAT_LIVE_MINUTES", group=D, gt=0)
    dashboard_timeout: float = setting(
        30.0, "seconds the Chat and Conversations pages wait for the Space", env="CHAT_DASHBOARD_TIMEOUT",
        group=D, kind="seconds", gt=0)
    judge_model: str = setting("default", "model of the judge of `eval --judge` and the Evaluate page",
                               env="CHAT_JUDGE_MODEL", group=D)
    judge_api_key: SecretStr | None = setting(None, "key of that judge", env="CHAT_JUDGE_API_KEY", group=D)

    # --- alerts
    alert_webhooks: list[SecretStr] = setting(
        [], "webhook URLs (`slack:URL` for Slack's format); `./run.sh` starts the watcher when it is set",
        env="CHAT_ALERT_WEBHOOKS", group=A)
    alert_keywords: list[str] = setting(
        [], "words (or `re:PATTERN`) in visitor text that raise an alert", env="CHAT_ALERT_KEYWORDS", group=A)
    alert_person_phrases: list[str] = setting(
        list(DEFAULT_ALERT_PERSON_PHRASES), 'phrases that mean "a person, please"',
        env="CHAT_ALERT_PERSON_PHRASES", group=A, shown='"talk to a person", "talk to a human", "live agent", …')
    alert_errors: tuple[int, float] = setting(
        (5, 10.0), "alert on N responder errors within M minutes", env="CHAT_ALERT_ERRORS", group=A, kind="N/M",
        shown="`5/10`")
    alert_queue: int = setting(1000, "alerts kept per webhook while it fails (the oldest dropped)",
                               env="CHAT_ALERT_QUEUE", group=A, gt=0)
    dashboard_url: str = setting(DEFAULT_DASHBOARD_URL, "the dashboard's address, for the links in alerts",
                                 env="CHAT_DASHBOARD_URL", group=A, kind="URL")
    alert_spend_usd: float | None = setting(
        None, "the `spend` alert: the day's model cost (UTC) passed this many USD", env="CHAT_ALERT_SPEND_USD",
        group=A, kind="USD", gt=0, allow_inf_nan=False)

    # --- tools and tests
    test_workers: int = setting(
        3, "pytest-xdist processes of `./run.sh test`; `0` runs the tests in one process (read by `run.sh`)",
        env="CHAT_TEST_WORKERS", group=T, ge=0)

    #: CHAT_LOG_PATH as given: a URL there names a remote log (a Path would fold its "//").
    _log_spec: str | None = PrivateAttr(default=None)

    # ------------------------------------------------------------------ parsing

    @field_validator("allowed_origins", "trusted_proxies", "alert_keywords", "alert_webhooks", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("handoff_phrases", mode="before")
    @classmethod
    def _phrases(cls, value: Any) -> Any:
        value = _split(value)
        return tuple(" ".join(str(p).lower().split()) for p in value) if isinstance(value, (list, tuple)) else value

    @field_validator("alert_person_phrases", mode="before")
    @classmethod
    def _person_phrases(cls, value: Any) -> Any:
        value = _split(value)
        if isinstance(value, (list, tuple)):
            return [str(p).lower() for p in value] or list(DEFAULT_ALERT_PERSON_PHRASES)
        return value

    @field_validator("staff_accounts")
    @classmethod
    def _expand_user(cls, value):
        return value.expanduser() if value is not None else None

    @field_validator("dashboard_cookie_secret")
    @classmethod
    def _long_enough(cls, value):
        if value is not None and 0 < len(value.get_secret_value()) < 32:
            raise ValueError("at least 32 random characters, e.g. the output of "
                             "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        return value

    @field_validator("rotate", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("mirror_max_bytes", mode="before")
    @classmethod
    def _mirror_size(cls, value: Any) -> Any:
        return _size(value)

    @field_validator("alert_errors", mode="before")
    @classmethod
    def _errors(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        m = re.fullmatch(r"(\d+)\s*/\s*(\d+(?:\.\d+)?)", value.strip())
        if not m or int(m.group(1)) < 1 or not math.isfinite(float(m.group(2))):
            raise ValueError("N/M (N errors in M minutes), e.g. 5/10")
        return int(m.group(1)), float(m.group(2))

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_url(cls, value: str | None) -> str | None:
        if value and not value.lower().startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL (OTLP/HTTP, port 4318)")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _keep_log_spec(cls, data: Any, handler) -> "Settings":
        made = handler(data)
        raw = data.get("log_path") if isinstance(data, Mapping) else None
        made._log_spec = str(raw).strip() if raw is not None else None
        return made

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # what the program passes, then the environment; no .env file, no secrets folder
        return init_settings, _Environment(settings_cls)

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Settings from the environment (``environ``, default ``os.environ``) and ``overrides``
        (field names; None and unknown names are ignored). Reading them has no side effect: a log
        that is a URL is mirrored by :func:`chatcore.remote.log_settings.load_settings`.
        Raises :class:`SettingsError` for a value that does not parse."""
        given = {k: v for k, v in overrides.items() if k in cls.model_fields and v is not None}
        token = _environ.set(environ)
        try:
            return cls(**given)
        except ValidationError as exc:
            environ = os.environ if environ is None else environ
            raise SettingsError(explain(exc, cls.model_fields, environ, given)) from None
        finally:
            _environ.reset(token)

    def with_(self, **changes) -> "Settings":
        """A copy with ``changes`` (field names), not validated again: the program's own values."""
        raw = changes.get("log_path")
        if raw is not None:
            changes["log_path"] = Path(raw)
        made = self.model_copy(update=changes)
        if "log_path" in changes:
            made._log_spec = str(raw) if raw is not None else None
        return made

    @property
    def log_spec(self) -> str | None:
        """The log location as given (``CHAT_LOG_PATH`` or ``log_path=``), URL or path; None when unset."""
        return self._log_spec

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
