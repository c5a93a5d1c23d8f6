"""Shared fixtures: real servers on 127.0.0.1, started by the test and stopped at the end."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_group(proc, grace: float = 20) -> None:
    """Stop a server started in its own session: SIGTERM to its process group, SIGKILL after ``grace`` s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class _ForkedProcess:
    """The part of ``subprocess.Popen`` the tests use, for a Space forked by the zygote."""

    def __init__(self, pid: int, status_dir: Path):
        self.pid = pid
        self._status = status_dir / str(pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._status.exists():
            self.returncode = int(self._status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"space {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode


class _Zygote:
    """One fork server per test worker (see tests/space_zygote.py); CHAT_TEST_ZYGOTE=0 turns it off."""

    def __init__(self):
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="space-zygote-"))
        self.socket = self.dir / "s"
        self.status = self.dir / "status"
        self.status.mkdir()
        self.proc = subprocess.Popen([PYTHON, str(Path(__file__).with_name("space_zygote.py")),
                                      str(self.socket), str(self.status)],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT)
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the Space fork server did not start")

    def spawn(self, argv: list[str], env: dict, cwd: Path, output: Path) -> _ForkedProcess:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.socket))
            s.sendall(json.dumps({"argv": argv, "env": env, "cwd": str(cwd), "output": str(output)}).encode() + b"\n")
            pid = json.loads(s.makefile("rb").readline())["pid"]
        return _ForkedProcess(pid, self.status)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


_zygote: _Zygote | None = None


def _fork_server(env: dict) -> _Zygote | None:
    """The worker's fork server, when this Space can come from it: Gradio reads some of its
    GRADIO_* variables as it is imported, so a Space with its own GRADIO_* gets a new process."""
    global _zygote
    if os.environ.get("CHAT_TEST_ZYGOTE", "1") == "0":
        return None
    if any(env.get(k) != os.environ.get(k) for k in set(env) | set(os.environ) if k.startswith("GRADIO_")):
        return None
    if _zygote is None or _zygote.proc.poll() is not None:
        _zygote = _Zygote()
        import atexit

        atexit.register(_zygote.close)
    return _zygote


class SpaceProcess:
    """``python -m chatcore space`` in a subprocess on a free loopback port."""

    def __init__(self, log_path: Path, port: int | None = None, env: dict | None = None,
                 args: list[str] | None = None, preexec=None):
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHAT_SHUTDOWN_GRACE": "0.5", **(env or {})}
        self.args = args or []
        self.preexec = preexec  # run in the child before exec, e.g. to set resource limits
        self.proc: subprocess.Popen | None = None
        self.output = self.log_path.parent / f"space-{self.port}.out"

    def start(self, timeout: float = 60.0) -> "SpaceProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = ["chatcore", "space", "--host", "127.0.0.1", "--port", str(self.port),
                "--log", str(self.log_path), *self.args]
        zygote = _fork_server(self.env) if self.preexec is None else None
        if zygote is not None:
            self.proc = zygote.spawn(argv, self.env, ROOT, self.output)
        else:
            out = open(self.output, "ab")
            self.proc = subprocess.Popen(
                [PYTHON, "-m", *argv], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=self.preexec,
            )
            out.close()
        try:
            wait_http(self.url + "/healthz", timeout=timeout, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"Space did not start:\n{self.output.read_text(errors='replace')[-3000:]}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop_group(self.proc, 10)

    def token(self) -> str | None:
        """The staff token this Space uses (the env, else the file it created beside the log)."""
        from chatcore.config import operator_token_path

        if self.env.get("CHAT_OPERATOR_TOKEN"):
            return self.env["CHAT_OPERATOR_TOKEN"]
        try:
            return operator_token_path(self.log_path).read_text().strip() or None
        except OSError:
            return None

    def health(self, staff: bool = True) -> dict:
        """``/healthz``; with the staff token by default (details), ``staff=False`` for the public view."""
        token = self.token() if staff else None
        headers = {"X-Chat-Operator-Token": token} if token else {}
        return httpx.get(self.url + "/healthz", timeout=5, headers=headers).json()

    def records(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def space_factory(tmp_path):
    """Start Spaces on demand; all are stopped at the end of the test."""
    started: list[SpaceProcess] = []

    def make(log_path: Path | None = None, **kwargs) -> SpaceProcess:
        sp = SpaceProcess(log_path or tmp_path / "logs" / "chat_logs.jsonl", **kwargs)
        started.append(sp)
        return sp.start()

    yield make
    for sp in started:
        sp.stop()


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """One echo Space for a whole test module."""
    log_path = tmp_path_factory.mktemp("space") / "chat_logs.jsonl"
    sp = SpaceProcess(log_path).start()
    yield sp
    sp.stop()


def apptest_knows_the_entry_navigates(monkeypatch) -> None:
    """AppTest forgets before every run that the entry uses st.navigation, so each run
    would start in the old pages/-folder mode and pages/_shared.through_entry() would
    rerun it (dropping a click). A real server learns it once; do the same."""
    from streamlit.runtime.pages_manager import PagesManager

    original_init = PagesManager.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
