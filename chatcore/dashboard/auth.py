"""Who may open the dashboard.

Three modes, chosen from the environment and Streamlit's secrets (passed in as
a plain mapping: this package never imports streamlit):

* ``oidc``     — ``[auth]`` in ``.streamlit/secrets.toml`` with ``client_id`` and
  ``server_metadata_url``: the dashboard uses ``st.login()``.
* ``password`` — ``CHAT_DASHBOARD_PASSWORD_HASH`` (or ``[dashboard] password_hash``
  in secrets), made with ``python -m chatcore hash-password``; or, less good,
  a plain ``CHAT_DASHBOARD_PASSWORD`` (hashed in memory at once). Compared in
  constant time.
* ``none``     — the dashboard only listens on loopback and refuses any other address.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import os
import secrets as _secrets
import threading
import time
from dataclasses import dataclass
from typing import Mapping

from limits import RateLimitItemPerSecond
from limits.strategies import MovingWindowRateLimiter

from chatcore import rate_limits
from chatcore.config import Settings, reveal

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
HOW_TO_CONFIGURE = (
    "To serve the dashboard on another address, configure a login first: either set "
    "CHAT_DASHBOARD_PASSWORD_HASH to the output of `python -m chatcore hash-password`, or "
    "add an [auth] section (OIDC: client_id, client_secret, server_metadata_url, redirect_uri, "
    "cookie_secret) to .streamlit/secrets.toml."
)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$<salt>$<hash>`` (base64). Store this, never the password."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt or _secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt)}${b64(digest)}"


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the ``stored`` hash; constant-time comparison."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt((password or "").encode("utf-8"), salt=_unb64(salt), dklen=32,
                             n=int(n), r=int(r), p=int(p))
        return hmac.compare_digest(got, _unb64(digest))
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True)
class LoginConfig:
    mode: str  # "oidc" | "password" | "none"
    password_hash: str | None = None

    @property
    def configured(self) -> bool:
        return self.mode != "none"

    def __repr__(self) -> str:  # never print the hash
        return f"LoginConfig(mode={self.mode!r})"


def _section(secrets: Mapping | None, name: str) -> Mapping:
    try:
        value = secrets.get(name) if secrets is not None else None
    except Exception:  # st.secrets raises when no secrets file exists
        value = None
    return value if isinstance(value, Mapping) else {}


def login_config(env: Mapping[str, str] | None = None, secrets: Mapping | None = None) -> LoginConfig:
    settings = Settings.from_env(environ=env)
    auth = _section(secrets, "auth")
    if auth.get("client_id") and auth.get("server_metadata_url"):
        return LoginConfig("oidc")
    dash = _section(secrets, "dashboard")
    stored = reveal(settings.dashboard_password_hash) or dash.get("password_hash")
    if stored:
        if not str(stored).startswith("scrypt$"):
            raise ValueError("CHAT_DASHBOARD_PASSWORD_HASH is not a hash made by "
                             "`python -m chatcore hash-password`")
        return LoginConfig("password", str(stored))
    plain = reveal(settings.dashboard_password) or dash.get("password")
    if plain:
        return LoginConfig("password", hash_password(str(plain)))
    return LoginConfig("none")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_address(host: str, config: LoginConfig) -> None:
    """Refuse to serve an unprotected dashboard beyond this machine."""
    if not config.configured and not is_loopback(host):
        raise PermissionError(
            f"refusing to serve the dashboard on {host}: no login is configured. " + HOW_TO_CONFIGURE
        )


# ---------------------------------------------------------------------- guessing


class LoginThrottle:
    """Password attempts allowed per client address and overall, in moving windows of the
    ``limits`` library (this process's memory, or the store of ``CHAT_RATE_LIMIT_STORAGE``
    when several dashboards must share the allowance).

    Shared by every browser session of the process (a class instance at module
    level, not session state): parallel websockets from one address share its
    allowance, and many addresses together share the overall one. An attempt is
    counted when it starts (so parallel attempts cannot all slip through before
    the first one fails); a successful login takes that address's attempts back,
    from its own allowance and from the overall one (for the rest of the window).
    A refused attempt does not verify the password and is not counted.
    """

    #: Bounds what the overall windows keep; the overall allowance itself is ``overall``.
    _CEILING = 100_000

    def __init__(self, per_address: int = 5, overall: int = 20, window: float = 60.0, storage=None):
        self.per_address = max(1, int(per_address))
        self.overall = max(1, int(overall))
        self.window = max(1, math.ceil(window))  # whole seconds: the unit of a ``limits`` window
        self._storage = storage if storage is not None else rate_limits.storage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._address = RateLimitItemPerSecond(self.per_address, self.window, namespace="chatcore-login")
        self._all = RateLimitItemPerSecond(self._CEILING, self.window, namespace="chatcore-login-all")
        self._given_back = RateLimitItemPerSecond(self._CEILING, self.window, namespace="chatcore-login-back")
        self._lock = threading.Lock()
        self.refused = 0

    def _used(self, item, *key: str) -> tuple[int, float]:
        stats = self._limiter.get_window_stats(item, *key)
        return item.amount - stats.remaining, stats.reset_time

    def attempt(self, address: str | None) -> float:
        """Start one attempt from ``address``: 0 when it may go ahead, else the seconds to wait."""
        address = address or "local"
        with self._lock:
            if not self._limiter.test(self._address, address):
                self.refused += 1
                return max(0.1, self._used(self._address, address)[1] - time.time())
            used, reset = self._used(self._all)
            if used - self._used(self._given_back)[0] >= self.overall:
                self.refused += 1
                return max(0.1, reset - time.time())
            self._limiter.hit(self._all)
            self._limiter.hit(self._address, address)
            return 0.0

    def succeeded(self, address: str | None) -> None:
        """A right password from ``address``: its attempts no longer count."""
        address = address or "local"
        with self._lock:
            used = self._used(self._address, address)[0]
            if used:
                self._limiter.hit(self._given_back, cost=used)
            self._limiter.clear(self._address, address)

    def reset(self) -> None:
        """Forget every attempt (the whole store: meant for tests)."""
        with self._lock:
            self._storage.reset()
            self.refused = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "LoginThrottle":
        """``CHAT_LOGIN_PER_ADDRESS`` (5), ``CHAT_LOGIN_OVERALL`` (20), ``CHAT_LOGIN_WINDOW`` seconds (60)."""
        settings = Settings.from_env(environ=env)
        return cls(per_address=settings.login_per_address, overall=settings.login_overall,
                   window=settings.login_window)


#: The dashboard process's throttle (by default 5 attempts a minute per address, 20 overall).
LOGIN_THROTTLE = LoginThrottle.from_env()
