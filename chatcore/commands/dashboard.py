"""``python -m chatcore dashboard``: the Streamlit operator dashboard (and a local Space).

Starts, as child processes in their own process groups:

* a local Space (``python -m chatcore space``) unless ``--no-space`` is given, the
  Space URL points at another machine, or a Space already answers there;
* ``streamlit run dashboard.py`` bound to ``--host`` (loopback by default; any other
  address only when a login is configured, see :mod:`chatcore.auth`),
  headless and without usage statistics, with ``CHAT_LOG_PATH`` and
  ``CHAT_SPACE_URL`` in its environment;
* with ``--demo``, simulated visitors when the log is still empty.

Ctrl-C (or SIGTERM) stops every child and waits for it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent.parent
ENTRY = ROOT / "dashboard.py"


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="run the operator dashboard (Streamlit) and a local Space")
    p.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="dashboard address to bind (default 127.0.0.1)")
    p.add_argument("--log", metavar="PATH",
                   help="JSONL log file or folder of shards (default: $CHAT_LOG_PATH or ./data/chat_logs.jsonl)")
    p.add_argument("--space-url", metavar="URL", default=None,
                   help="the Space to talk to (default: $CHAT_SPACE_URL or http://127.0.0.1:7860)")
    p.add_argument("--no-space", action="store_true", help="do not start a local Space")
    p.add_argument("--demo", action="store_true",
                   help="when the log is empty, run simulated visitors against the Space")
    p.set_defaults(func=run)


def _log_is_empty(path: Path) -> bool:
    if path.is_dir():
        return not any(p.stat().st_size for p in path.glob("*.jsonl"))
    return not path.exists() or path.stat().st_size == 0


def _stop(proc: subprocess.Popen | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop in 10 s; killing it", file=sys.stderr)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    from ..client import space_health

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if space_health(url, timeout=1.0).get("status") == "ok":
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
    from ..auth import check_bind_address, login_config

    try:
        config = login_config(env=env, secrets=read_secrets() if secrets is None else secrets)
    except ValueError as exc:
        raise PermissionError(f"the dashboard login is misconfigured: {exc}") from None
    check_bind_address(host, config)


def run(args) -> int:
    from ..cli import UsageError

    try:
        check_access(args.host)
    except PermissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from ..client import space_health
    from ..dashboard import is_local_url
    from ..settings import Settings

    settings = Settings.from_env(log_path=args.log)
    space_url = (args.space_url or settings.space_url).rstrip("/")
    parsed = urlparse(space_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--space-url must be an http(s) URL, got {space_url!r}")
    log_path = settings.log_path.resolve()
    env = {**os.environ, "CHAT_LOG_PATH": str(log_path), "CHAT_SPACE_URL": space_url,
           "PYTHONUNBUFFERED": "1"}
    children: list[tuple[str, subprocess.Popen]] = []
    stopping = threading.Event()

    def on_signal(signum, frame):  # SIGTERM behaves like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        space_proc = None
        start_space = not args.no_space and is_local_url(space_url)
        if start_space and space_health(space_url, timeout=1.0).get("status") == "ok":
            print(f"a Space already answers at {space_url}; using it", flush=True)
            start_space = False
        if start_space:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            host = parsed.hostname if parsed.hostname not in ("localhost", "0.0.0.0") else "127.0.0.1"
            space_proc = subprocess.Popen(
                [sys.executable, "-m", "chatcore", "space", "--host", host, "--port", str(port),
                 "--log", str(log_path)],
                cwd=ROOT, env=env, start_new_session=True,
            )
            children.append(("Space", space_proc))
            print(f"starting the Space on {space_url} (log {log_path})", flush=True)
            if not _wait_healthy(space_url, space_proc):
                raise UsageError(f"the Space did not start on {space_url} (is the port in use?)")
        elif args.no_space:
            print(f"not starting a Space; the dashboard talks to {space_url}", flush=True)

        dash = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ENTRY),
             "--server.address", args.host, "--server.port", str(args.port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, start_new_session=True,
        )
        children.append(("dashboard", dash))
        print(f"dashboard on http://{args.host}:{args.port}  (Ctrl-C stops everything)", flush=True)

        if args.demo:
            if _log_is_empty(log_path) and space_health(space_url, timeout=2.0).get("status") == "ok":
                from ..simulate import simulate

                def demo():
                    print("demo: the log is empty; simulating 6 visitors", flush=True)
                    result = simulate(space_url, visitors=6, turns=4, delay=1.5)
                    if not stopping.is_set():
                        print("demo: " + result.summary(), flush=True)

                threading.Thread(target=demo, name="demo", daemon=True).start()
            else:
                print("demo: the log already has turns (or no Space); not simulating", flush=True)

        while True:
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping", file=sys.stderr)
                    return proc.returncode or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        stopping.set()
        signal.signal(signal.SIGTERM, previous)
        for name, proc in reversed(children):
            _stop(proc, name)
