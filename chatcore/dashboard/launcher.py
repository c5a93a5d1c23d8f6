"""``python -m chatcore dashboard``: the Streamlit operator dashboard (and a local Space).

Starts, as child processes in their own process groups:

* a local Space (``python -m chatcore space``) unless ``--no-space`` is given, the
  Space URL points at another machine, or a Space already answers there (then
  the launcher asks that Space which log it writes and refuses to go on when it
  is not the dashboard's log, unless ``--allow-other-log``);
* ``streamlit run dashboard_app.py`` (``dashboard.py`` in Streamlit's ``st.App`` behind the login
  gate of :mod:`chatcore.dashboard.gate`) bound to ``--host`` (loopback by default; any other
  address only when a login is configured, see :mod:`chatcore.dashboard.auth`),
  headless and without usage statistics, with ``CHAT_LOG_PATH`` and
  ``CHAT_SPACE_URL`` in its environment;
* with ``--demo``, simulated visitors when the log is still empty.

Each child gets only the environment it needs (:func:`child_env`): the Space
never sees the dashboard's password, the dashboard never sees the responder's
API keys. URLs are printed through :func:`chatcore.config.display_url`.

Ctrl-C, SIGTERM or SIGHUP stops every child and waits for it (a second signal meanwhile
does not cut that short); output to a pipe whose reader left (``| head``) is dropped.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent.parent
ENTRY = ROOT / "dashboard_app.py"

# ------------------------------------------------------------------ child environments

#: What any Python child needs to run here: paths, locale, certificates, proxies.
_SYSTEM_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "NO_COLOR",
    "TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR",
    "PYTHONPATH", "PYTHONHOME", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV",
    "COVERAGE_PROCESS_START",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
})
_SYSTEM_PREFIXES = ("LC_",)

#: The Space: its settings (``CHAT_*``), the responders' configuration and keys, Gradio's own.
_SPACE_PREFIXES = ("CHAT_", "OPENAI_", "HF_", "HUGGINGFACE_", "GRADIO_")
#: ... but never the dashboard's login.
_SPACE_NEVER = ("CHAT_DASHBOARD_", "CHAT_STAFF_ACCOUNTS")

#: The dashboard: its settings (``CHAT_*``) and Streamlit's configuration; no responder keys.
_DASHBOARD_PREFIXES = ("CHAT_", "STREAMLIT_")
#: A plain password is hashed by the launcher; only the hash goes on.
_DASHBOARD_NEVER = ("CHAT_DASHBOARD_PASSWORD",)


def _allowed(name: str, prefixes: tuple[str, ...], never: tuple[str, ...], exact_never: bool = False) -> bool:
    if name in _SYSTEM_NAMES or name.startswith(_SYSTEM_PREFIXES):
        return True
    if exact_never:
        if name in never:
            return False
    elif name.startswith(never):
        return False
    return name.startswith(prefixes)


def child_env(kind: str, environ: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for one child process, built from an allow-list (never a copy of ours).

    ``kind`` is ``space`` or ``dashboard``. The only secret both get is
    ``CHAT_OPERATOR_TOKEN`` (when it is set). ``extra`` is added last.
    """
    environ = os.environ if environ is None else environ
    if kind == "space":
        env = {k: v for k, v in environ.items() if _allowed(k, _SPACE_PREFIXES, _SPACE_NEVER)}
    elif kind == "dashboard":
        env = {k: v for k, v in environ.items() if _allowed(k, _DASHBOARD_PREFIXES, _DASHBOARD_NEVER, exact_never=True)}
        # Streamlit's uvicorn believes X-Forwarded-For from loopback peers unless told otherwise;
        # like the Space, believe it only from CHAT_TRUSTED_PROXIES (the login throttle counts by address).
        env["FORWARDED_ALLOW_IPS"] = environ.get("CHAT_TRUSTED_PROXIES", "").strip()
        plain = environ.get("CHAT_DASHBOARD_PASSWORD")
        if plain and not environ.get("CHAT_DASHBOARD_PASSWORD_HASH"):
            from chatcore.dashboard.auth import hash_password

            env["CHAT_DASHBOARD_PASSWORD_HASH"] = hash_password(plain)
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown child {kind!r}")
    env.update({k: v for k, v in extra.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ------------------------------------------------------------------------ ports


def port_in_use(host: str, port: int) -> bool:
    """True when nothing can listen on ``host:port`` (another program has it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _port_taken_message(what: str, host: str, port: int, flag: str) -> str:
    return (f"port {port} on {host} is already in use, so the {what} cannot start there. "
            f"Stop the program using it, or choose another port with {flag} "
            f"(for example `python -m chatcore dashboard {flag} {port + 1}` or `./run.sh {flag} {port + 1}`).")


# ------------------------------------------------------------------------ arguments


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="run the operator dashboard (Streamlit) and a local Space")
    p.add_argument("--port", type=int, default=8501,
                   help="dashboard port (default 8501); it is an error when the port is taken")
    p.add_argument("--host", default="127.0.0.1", help="dashboard address to bind (default 127.0.0.1)")
    p.add_argument("--log", metavar="PATH",
                   help="JSONL log file or folder of shards, or a Space's https:// URL (with $CHAT_OPERATOR_TOKEN) "
                        "(default: $CHAT_LOG_URL, $CHAT_LOG_PATH or ./data/chat_logs.jsonl)")
    p.add_argument("--space-url", metavar="URL", default=None,
                   help="the Space to talk to (default: $CHAT_SPACE_URL or http://127.0.0.1:7860)")
    p.add_argument("--space-port", type=int, default=None, metavar="PORT",
                   help="start the local Space on this port (the Space URL becomes http://127.0.0.1:PORT)")
    p.add_argument("--no-space", action="store_true", help="do not start a local Space")
    p.add_argument("--allow-other-log", action="store_true",
                   help="use a Space that already answers even when it writes another log than the dashboard "
                        "reads (or cannot say which); the Chat page then shows a warning")
    p.add_argument("--demo", action="store_true",
                   help="when the log is empty, run simulated visitors against the Space")
    p.set_defaults(func=run)


def _log_is_empty(path: Path) -> bool:
    from chatcore.log.shards import shard_paths

    def size(shard: Path) -> int:
        try:
            return shard.stat().st_size
        except OSError:
            return 0

    return not any(size(p) for p in shard_paths(path))


def _say(*args, file=None, stopping: bool = False, **kwargs) -> None:
    """``print``, for a launcher whose output may be a pipe nobody reads any more (``| head``).

    Like any program in a pipeline whose reader left, the launcher then stops (BrokenPipeError,
    handled like Ctrl-C), and what it says while stopping (``stopping=True``) goes nowhere
    instead of cutting the stopping short."""
    stream = file or sys.stdout
    kwargs.pop("flush", None)
    try:
        print(*args, file=stream, flush=True, **kwargs)
    except (BrokenPipeError, ValueError):  # the reader left / the stream is closed
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())  # also what Python flushes at exit
            os.close(devnull)
        except (OSError, ValueError):
            pass
        if not stopping:
            raise BrokenPipeError(f"nobody reads the launcher's {'errors' if stream is sys.stderr else 'output'}")


#: Signals that stop the launcher and its children, like Ctrl-C (SIGINT) does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _stop_all(children: list[tuple[str, subprocess.Popen]], grace: float = 10.0) -> None:
    """SIGTERM to every child's process group at once, then wait for them; what still runs
    after ``grace`` seconds is killed."""
    for _name, proc in children:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for name, proc in children:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{name} did not stop in {grace:g} s; killing it", file=sys.stderr, stopping=True)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)


def _answers(health: dict) -> bool:
    """A Space answers (``degraded`` is a Space whose log writes fail: still a Space)."""
    return health.get("status") in ("ok", "degraded")


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    from chatcore.remote.client import space_health

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _answers(space_health(url, timeout=1.0)):
            return True
        time.sleep(0.3)
    return False


def read_secrets(paths=None) -> dict:
    """The secrets Streamlit would see (``.streamlit/secrets.toml`` here and in $HOME), merged."""
    import tomllib

    paths = paths if paths is not None else [Path.home() / ".streamlit" / "secrets.toml",
                                             ROOT / ".streamlit" / "secrets.toml"]
    merged: dict = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                merged.update(tomllib.load(f))
        except FileNotFoundError:
            continue
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PermissionError(f"cannot read {path}: {exc}") from None
    return merged


def check_access(host: str, env=None, secrets: dict | None = None) -> None:
    """Raise PermissionError (with how to configure a login) for an unprotected non-loopback bind."""
    from chatcore.dashboard.auth import check_bind_address, login_config

    try:
        config = login_config(env=env, secrets=read_secrets() if secrets is None else secrets)
    except ValueError as exc:
        raise PermissionError(f"the dashboard login is misconfigured: {exc}") from None
    check_bind_address(host, config)


def _space_url(args, settings) -> str:
    from chatcore.cli.main import UsageError
    from chatcore.config import display_url

    if args.space_port is not None:
        if not 0 < args.space_port < 65536:
            raise UsageError(f"--space-port must be a port number (1-65535), got {args.space_port}")
        if args.space_url:
            given = urlparse(args.space_url)
            if given.port != args.space_port:
                raise UsageError(f"--space-url {display_url(args.space_url)} and --space-port {args.space_port} "
                                 "disagree; give one of them")
            return args.space_url.rstrip("/")
        return f"http://127.0.0.1:{args.space_port}"
    return (args.space_url or settings.space_url).rstrip("/")


def run(args) -> int:
    from chatcore.cli.main import UsageError

    try:
        check_access(args.host)
    except PermissionError as exc:
        _say(f"error: {exc}", file=sys.stderr)
        return 2

    from chatcore.remote.client import space_health
    from chatcore.dashboard.views import check_space_log, is_local_url
    from chatcore.config import display_url
    from chatcore.remote.log_settings import load_settings

    settings = load_settings(log_path=args.log)
    space_url = _space_url(args, settings)
    shown_url = display_url(space_url)
    parsed = urlparse(space_url)
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"--space-url must be an http(s) URL, got {shown_url}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--space-url must be an http(s) URL, got {shown_url}")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be a port number (1-65535), got {args.port}")
    log_path = settings.log_path.resolve()
    remote = settings.log_url is not None
    if remote:  # the first copy is made (with progress here); the dashboard process follows the Space
        from chatcore.remote.mirror import close_all

        close_all()
        _say(f"reading the log of {settings.log_url} (copy in {log_path})", flush=True)

    # The dashboard's port first: nothing is started when it is taken.
    if port_in_use(args.host, args.port):
        _say(f"error: {_port_taken_message('dashboard', args.host, args.port, '--port')}", file=sys.stderr)
        return 2

    children: list[tuple[str, subprocess.Popen]] = []
    stopping = threading.Event()

    def on_signal(signum, frame):  # SIGTERM and SIGHUP behave like Ctrl-C
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    try:
        space_proc = None
        local = is_local_url(space_url) and not remote  # a remote log's Space is not started here
        space_port = parsed.port or (443 if parsed.scheme == "https" else 80)
        space_host = parsed.hostname if parsed.hostname not in ("localhost", "0.0.0.0") else "127.0.0.1"
        answering = local and _answers(space_health(space_url, timeout=1.0))
        start_space = not args.no_space and local and not answering

        if answering:
            check = check_space_log(space_url, log_path)
            if check.status == "same":
                _say(f"a Space already answers at {shown_url} and writes this log ({check.space_log}); using it",
                      flush=True)
            elif check.status == "different":
                if not args.allow_other_log:
                    _say(f"error: {check.reason}. Prompts sent from the Chat page would not appear on Live or "
                          f"Conversations. Start the dashboard with --log {check.space_log}, or start a new Space "
                          "with --space-port PORT, or pass --allow-other-log to use that Space anyway.",
                          file=sys.stderr)
                    return 2
                _say(f"warning: {check.reason}; going on because of --allow-other-log. Prompts sent from the "
                      "Chat page will not appear on Live or Conversations.", flush=True)
            else:
                if not args.allow_other_log:
                    _say(f"error: a Space already answers at {shown_url}, but its log could not be compared with "
                          f"this dashboard's log ({log_path}): {check.reason}. If it writes another log, prompts "
                          "sent from the Chat page will not appear on Live or Conversations. Set the same "
                          "CHAT_OPERATOR_TOKEN for both, or start a new Space with --space-port PORT, or pass "
                          "--allow-other-log to use it anyway.", file=sys.stderr)
                    return 2
                _say(f"warning: the logs could not be compared ({check.reason}); going on because of "
                      "--allow-other-log", flush=True)
        elif start_space:
            if port_in_use(space_host, space_port):
                _say(f"error: {_port_taken_message('Space', space_host, space_port, '--space-port')} "
                      f"(what answers there is not a Space.)", file=sys.stderr)
                return 2
            space_proc = subprocess.Popen(
                [sys.executable, "-m", "chatcore", "space", "--host", space_host, "--port", str(space_port),
                 "--log", str(log_path)],
                cwd=ROOT, env=child_env("space", CHAT_LOG_PATH=str(log_path)), start_new_session=True,
            )
            children.append(("Space", space_proc))
            _say(f"starting the Space on {shown_url} (log {log_path})", flush=True)
            if not _wait_healthy(space_url, space_proc):
                raise UsageError(f"the Space did not start on {shown_url} (is port {space_port} in use? "
                                 "choose another with --space-port)")
            check = check_space_log(space_url, log_path)
            if check.status != "same":
                _say(f"warning: the Space just started, but {check.reason}", flush=True)
        elif not local:
            _say(f"the Space at {shown_url} runs elsewhere; the dashboard reads {log_path} "
                  "(a copy or a synced folder of that Space's log)", flush=True)
        elif args.no_space:
            _say(f"not starting a Space; the dashboard talks to {shown_url} (no Space answers there yet)", flush=True)

        dash = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ENTRY),
             "--server.address", args.host, "--server.port", str(args.port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.maxUploadSize", "1"],  # MB; the dashboard takes no uploads
            cwd=ROOT, env=child_env("dashboard", CHAT_SPACE_URL=space_url,
                          **({"CHAT_LOG_URL": settings.log_url} if remote else {"CHAT_LOG_PATH": str(log_path)})),
            start_new_session=True,
        )
        children.append(("dashboard", dash))
        _say(f"dashboard on http://{args.host}:{args.port}  (Ctrl-C stops everything)", flush=True)

        if args.demo:
            if _log_is_empty(log_path) and space_health(space_url, timeout=2.0).get("status") == "ok":
                from chatcore.staff.simulate import simulate

                def demo():
                    _say("demo: the log is empty; simulating 6 visitors", flush=True)
                    result = simulate(space_url, visitors=6, turns=4, delay=1.5)
                    if not stopping.is_set():
                        _say("demo: " + result.summary(), flush=True)

                threading.Thread(target=demo, name="demo", daemon=True).start()
            else:
                _say("demo: the log already has turns (or no Space); not simulating", flush=True)

        while True:
            for name, proc in children:
                if proc.poll() is not None:
                    hint = ""
                    if name == "dashboard" and port_in_use(args.host, args.port):
                        hint = f" ({_port_taken_message('dashboard', args.host, args.port, '--port')})"
                    _say(f"{name} exited with code {proc.returncode}; stopping{hint}", file=sys.stderr)
                    return proc.returncode or 1
            time.sleep(0.5)
    except (KeyboardInterrupt, BrokenPipeError):
        _say("\nstopping…", stopping=True)
        return 0
    finally:
        # Stopping is not to be cut short by a second signal (a second Ctrl-C, a supervisor
        # that asks twice): that would leave the children running.
        stopping.set()
        held = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (*STOP_SIGNALS, signal.SIGINT)}
        try:
            _stop_all(list(reversed(children)))
        finally:
            for signum, handler in {**held, **previous}.items():
                signal.signal(signum, handler)
