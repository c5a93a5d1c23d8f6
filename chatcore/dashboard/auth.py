"""Who may open the dashboard.

Three modes, chosen from the environment and Streamlit's secrets (passed in as
a plain mapping: this package never imports streamlit):

* ``oidc``     — ``[auth]`` in ``.streamlit/secrets.toml`` with ``client_id`` and
  ``server_metadata_url``: the dashboard uses ``st.login()``.
* ``password`` — ``CHAT_DASHBOARD_PASSWORD_HASH`` (or ``[dashboard] password_hash``
  in secrets), made with ``python -m chatcore hash-password``; or, less good,
  a plain ``CHAT_DASHBOARD_PASSWORD`` (hashed in memory at once); and/or staff
  accounts (``CHAT_STAFF_ACCOUNTS``, a file of ``name:hash`` lines, or
  ``[staff_accounts]`` in secrets), which say who is logged in. Compared in
  constant time.
* ``none``     — the dashboard only listens on loopback and refuses any other address.

A password login is made by the dashboard's ``/login`` route (:mod:`chatcore.dashboard.gate`),
which hands the browser a signed session cookie (:class:`SessionCookies`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import secrets as _secrets
import re
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Mapping

from itsdangerous import BadSignature, URLSafeTimedSerializer

from chatcore.config import Settings, SettingsError, reveal

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
HOW_TO_CONFIGURE = (
    "To serve the dashboard on another address, configure a login first: either set "
    "CHAT_DASHBOARD_PASSWORD_HASH to the output of `python -m chatcore hash-password`, or "
    "add an [auth] section (OIDC: client_id, client_secret, server_metadata_url, redirect_uri, "
    "cookie_secret) to .streamlit/secrets.toml, or staff accounts with "
    "`python -m chatcore staff-account add NAME` and CHAT_STAFF_ACCOUNTS."
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


@cache
def _dummy_hash() -> str:
    """Checked against when a name has no account, so that both cost the same (made on the
    first login: a scrypt hash costs as much as a login, and most script runs check none)."""
    return hash_password("no such account", salt=b"\0" * 16)


@dataclass(frozen=True)
class LoginConfig:
    mode: str  # "oidc" | "password" | "none"
    password_hash: str | None = None
    #: staff account name -> stored hash; with accounts the login asks for a name
    accounts: Mapping[str, str] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return self.mode != "none"

    def __repr__(self) -> str:  # never print the hash
        return f"LoginConfig(mode={self.mode!r}, accounts={len(self.accounts)})"

    def check(self, name: str, password: str) -> str | None:
        """Who logs in with ``name`` and ``password``: the account's name, ``staff`` for the shared
        password (no name given), or None. The password is checked in constant time."""
        name = (name or "").strip()
        if name:
            stored = self.accounts.get(name)
            # an unknown name costs as much as a known one: the answer's timing tells no names
            ok = verify_password(password, stored or _dummy_hash()) and stored is not None
            return name if ok else None
        if self.password_hash and verify_password(password, self.password_hash):
            return "staff"
        return None


def _section(secrets: Mapping | None, name: str) -> Mapping:
    try:
        value = secrets.get(name) if secrets is not None else None
    except Exception:  # st.secrets raises when no secrets file exists
        value = None
    return value if isinstance(value, Mapping) else {}


#: What a staff account may be called: what the Space accepts as a staff name, without ``:``.
ACCOUNT_NAME = re.compile(r"[\w][\w .'@-]{0,63}")


def check_account_name(name: str) -> str:
    """``name`` as an account name, or ValueError saying what is allowed."""
    name = (name or "").strip()
    if not ACCOUNT_NAME.fullmatch(name) or name == "staff":
        raise ValueError(f"{name!r} cannot be a staff account name: use 1-64 letters, digits, spaces "
                         "and . ' @ - (and not the word staff, which means the shared password)")
    return name


def read_accounts_file(path: Path) -> dict[str, str]:
    """``name:hash`` lines (blank lines and ``#`` comments skipped); ValueError names a bad line."""
    accounts: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"CHAT_STAFF_ACCOUNTS names {path}, which does not exist; create it with "
                         "`python -m chatcore staff-account add NAME`") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.rpartition(":")
        if not sep or not stored.startswith("scrypt$"):
            raise ValueError(f"{path}, line {number}: not a `name:hash` line made by "
                             "`python -m chatcore staff-account add`")
        accounts[check_account_name(name)] = stored
    return accounts


def staff_accounts(env: Mapping[str, str] | None = None, secrets: Mapping | None = None) -> dict[str, str]:
    """Staff accounts from ``CHAT_STAFF_ACCOUNTS`` (a file) and ``[staff_accounts]`` in secrets."""
    settings = gate_settings(env)
    accounts: dict[str, str] = {}
    for name, stored in _section(secrets, "staff_accounts").items():
        if not str(stored).startswith("scrypt$"):
            raise ValueError(f"[staff_accounts] {name} is not a hash made by `python -m chatcore hash-password`")
        accounts[check_account_name(str(name))] = str(stored)
    if settings.accounts_file:
        accounts.update(read_accounts_file(settings.accounts_file))
    return accounts


def login_config(env: Mapping[str, str] | None = None, secrets: Mapping | None = None) -> LoginConfig:
    settings = Settings.from_env(environ=env)
    auth = _section(secrets, "auth")
    if auth.get("client_id") and auth.get("server_metadata_url"):
        return LoginConfig("oidc")
    dash = _section(secrets, "dashboard")
    accounts = staff_accounts(env, secrets)
    stored = reveal(settings.dashboard_password_hash) or dash.get("password_hash")
    if stored:
        if not str(stored).startswith("scrypt$"):
            raise ValueError("CHAT_DASHBOARD_PASSWORD_HASH is not a hash made by "
                             "`python -m chatcore hash-password`")
        return LoginConfig("password", str(stored), accounts)
    plain = reveal(settings.dashboard_password) or dash.get("password")
    if plain:
        return LoginConfig("password", hash_password(str(plain)), accounts)
    if accounts:
        return LoginConfig("password", None, accounts)
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
        from limits import RateLimitItemPerSecond
        from limits.strategies import MovingWindowRateLimiter

        from chatcore import rate_limits

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


_throttle_lock = threading.Lock()
_throttle: LoginThrottle | None = None


def login_throttle() -> LoginThrottle:
    """The dashboard process's throttle (by default 5 attempts a minute per address, 20 overall),
    made on the first login attempt: a script run that checks no password never needs it."""
    global _throttle
    with _throttle_lock:
        if _throttle is None:
            _throttle = LoginThrottle.from_env()
        return _throttle


def prepare_login() -> None:
    """Make what a password login needs before the server starts (not on import: a script run
    needs neither): the throttle, so a bad ``CHAT_RATE_LIMIT_STORAGE`` is raised at start, and
    the hash an unknown name is checked against, so the first login costs what any other does."""
    login_throttle()
    _dummy_hash()


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True)
class GateSettings:
    accounts_file: Path | None = None
    cookie_secret: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"GateSettings(accounts_file={self.accounts_file!r})"


def gate_settings(env: Mapping[str, str] | None = None) -> GateSettings:
    """The login's own settings: ``CHAT_STAFF_ACCOUNTS`` and ``CHAT_DASHBOARD_COOKIE_SECRET``.
    ValueError (naming the setting, never the secret) when one does not parse."""
    try:
        settings = Settings.from_env(environ=env)
    except SettingsError as exc:
        raise ValueError(str(exc)) from None
    return GateSettings(settings.staff_accounts, reveal(settings.dashboard_cookie_secret))


# ---------------------------------------------------------------------- session cookie


class SessionCookies:
    """The dashboard's session cookie: who logged in and when, signed (itsdangerous) with the
    cookie secret. A cookie older than ``max_age`` seconds, with a bad signature, or logged out
    (:meth:`revoke`, this process's memory) names nobody."""

    NAME = "chat_operator_session"

    def __init__(self, secret: str | bytes, max_age: int = 12 * 3600):
        self._serializer = URLSafeTimedSerializer(secret, salt="chat-operator-dashboard-session")
        self.max_age = int(max_age)
        self._revoked: dict[str, float] = {}  # session id -> when it would expire anyway
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never print the secret
        return f"SessionCookies(max_age={self.max_age})"

    def make(self, user: str, via: str) -> str:
        return self._serializer.dumps({"user": user, "via": via, "sid": _secrets.token_urlsafe(12)})

    def _payload(self, value: str | None) -> dict | None:
        if not value or len(value) > 4096:
            return None
        try:
            payload = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:  # also an expired one (SignatureExpired is a BadSignature)
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("user"), str):
            return None
        with self._lock:
            if payload.get("sid") in self._revoked:
                return None
        return payload

    def user(self, value: str | None) -> str | None:
        """The logged-in name the cookie ``value`` carries, or None."""
        payload = self._payload(value)
        return payload["user"] if payload else None

    def via(self, value: str | None) -> str | None:
        payload = self._payload(value)
        return payload.get("via") if payload else None

    def revoke(self, value: str | None) -> None:
        """Log this cookie out (for the rest of its life, in this process)."""
        payload = self._payload(value)
        if payload is None:
            return
        now = time.time()
        with self._lock:
            self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
            self._revoked[payload.get("sid")] = now + self.max_age


_cookies_lock = threading.Lock()
_cookies: SessionCookies | None = None


def session_cookies() -> SessionCookies:
    """This process's session cookies (the gate and the script share them): signed with
    ``CHAT_DASHBOARD_COOKIE_SECRET``, else with a random secret made once per process (then a
    restart logs everyone out)."""
    global _cookies
    with _cookies_lock:
        if _cookies is None:
            _cookies = SessionCookies(gate_settings().cookie_secret or _secrets.token_urlsafe(32))
        return _cookies
