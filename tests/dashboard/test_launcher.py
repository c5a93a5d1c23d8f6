"""``python -m chatcore dashboard``: what each child process gets, which log the Space writes,
and what happens when a port is taken. Real processes on free loopback ports."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from chatcore.dashboard.auth import hash_password, verify_password
from chatcore.dashboard.launcher import child_env, port_in_use
from chatcore.dashboard.views import check_space_log, same_log
from chatcore.config import OPERATOR_TOKEN_FILE
from conftest import PYTHON, ROOT, free_port, wait_http, stop_group
from st_ws import StreamlitSession

PASSWORD = "launcher-test-password"
CREDS = "opsuser:s3cret-in-url"
TOKEN = "shared-operator-token-for-tests"


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHAT_DASHBOARD_", "CHAT_OPERATOR_TOKEN", "CHAT_SPACE_URL", "CHAT_LOG_PATH"))}
    return {**env, "PYTHONUNBUFFERED": "1", "CHAT_TIMEZONE": "UTC", "CHAT_SHUTDOWN_GRACE": "0.5", **extra}


class Launcher:
    """``python -m chatcore dashboard ARGS`` in its own process group; output in a file."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict):
        self.output = tmp_path / f"launcher-{time.monotonic_ns()}.out"
        out = open(self.output, "wb")
        self.proc = subprocess.Popen([PYTHON, "-m", "chatcore", "dashboard", *args], cwd=ROOT, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not in the launcher's output:\n{self.text()}")

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def children(self) -> dict[str, int]:
        """pid of the Space and of Streamlit, from /proc (their parent is the launcher)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            if ppid != self.proc.pid:
                continue
            if "chatcore space" in cmd:
                found["space"] = int(entry.name)
            elif "streamlit run" in cmd:
                found["dashboard"] = int(entry.name)
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_group(self.proc, 20)


@pytest.fixture
def launch(tmp_path):
    started: list[Launcher] = []

    def start(args: list[str], **env) -> Launcher:
        launcher = Launcher(tmp_path, args, base_env(**env))
        started.append(launcher)
        return launcher

    yield start
    for launcher in started:
        launcher.stop()


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def page_alerts(url: str, page: str, password: str | None = None) -> list[str]:
    """The alerts one page shows to a fresh browser session (logged in first when a password is given)."""

    async def go() -> list[str]:
        async with StreamlitSession(url) as s:
            if password:
                await s.login(password)
            else:
                await s.run()
            run = await s.run(page=page)
            return run.alerts

    return asyncio.run(go())


# ------------------------------------------------------------------------ environments


def test_child_environments_come_from_allow_lists():
    environ = {
        "PATH": "/usr/bin", "HOME": "/home/x", "LC_ALL": "C.UTF-8",
        "CHAT_LOG_PATH": "/logs/chat.jsonl", "CHAT_RESPONDER": "openai", "CHAT_MAX_FILES": "3",
        "OPENAI_API_KEY": "sk-openai", "HF_TOKEN": "hf-token", "GRADIO_ANALYTICS_ENABLED": "False",
        "CHAT_DASHBOARD_PASSWORD_HASH": hash_password(PASSWORD), "CHAT_OPERATOR_TOKEN": TOKEN,
        "STREAMLIT_SERVER_MAX_UPLOAD_SIZE": "5",
        "AWS_SECRET_ACCESS_KEY": "aws", "GITHUB_TOKEN": "gh", "DATABASE_URL": "postgres://u:p@db/x",
    }
    space = child_env("space", environ)
    dash = child_env("dashboard", environ, CHAT_SPACE_URL="http://127.0.0.1:7860")
    for name in ("OPENAI_API_KEY", "HF_TOKEN", "CHAT_RESPONDER", "CHAT_MAX_FILES", "GRADIO_ANALYTICS_ENABLED",
                 "CHAT_OPERATOR_TOKEN", "PATH", "LC_ALL"):
        assert space[name] == environ[name], name
    for name in ("CHAT_DASHBOARD_PASSWORD_HASH", "STREAMLIT_SERVER_MAX_UPLOAD_SIZE", "AWS_SECRET_ACCESS_KEY",
                 "GITHUB_TOKEN", "DATABASE_URL"):
        assert name not in space, name
    for name in ("CHAT_DASHBOARD_PASSWORD_HASH", "CHAT_OPERATOR_TOKEN", "STREAMLIT_SERVER_MAX_UPLOAD_SIZE", "PATH"):
        assert dash[name] == environ[name], name
    for name in ("OPENAI_API_KEY", "HF_TOKEN", "GRADIO_ANALYTICS_ENABLED", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN",
                 "DATABASE_URL"):
        assert name not in dash, name
    assert dash["CHAT_SPACE_URL"] == "http://127.0.0.1:7860"
    assert dash["FORWARDED_ALLOW_IPS"] == ""  # X-Forwarded-For believed from nobody ...
    assert child_env("dashboard", {**environ, "CHAT_TRUSTED_PROXIES": "10.0.0.0/8"})["FORWARDED_ALLOW_IPS"] == "10.0.0.0/8"

    # A plain password is hashed by the launcher: the dashboard gets only the hash, the Space nothing.
    plain = {"PATH": "/usr/bin", "CHAT_DASHBOARD_PASSWORD": PASSWORD}
    dash = child_env("dashboard", plain)
    assert "CHAT_DASHBOARD_PASSWORD" not in dash and verify_password(PASSWORD, dash["CHAT_DASHBOARD_PASSWORD_HASH"])
    assert not any(k.startswith("CHAT_DASHBOARD") for k in child_env("space", plain))


def test_each_process_gets_only_its_secrets_and_urls_are_shown_without_credentials(launch, tmp_path):
    """The launcher with a password hash, responder keys and a Space URL with user:password@:
    /proc/<pid>/environ of each child, the launcher's output and the pages."""
    port, space_port = free_port(), free_port()
    password_hash = hash_password(PASSWORD)
    log = tmp_path / "logs" / "chat.jsonl"
    launcher = launch(["--port", str(port), "--space-url", f"http://{CREDS}@127.0.0.1:{space_port}", "--log", str(log)],
                      CHAT_DASHBOARD_PASSWORD_HASH=password_hash, OPENAI_API_KEY="sk-never-in-the-dashboard",
                      HF_TOKEN="hf-never-in-the-dashboard", AWS_SECRET_ACCESS_KEY="never-in-any-child",
                      CHAT_OPERATOR_TOKEN=TOKEN)
    launcher.wait_for("dashboard on http")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_stcore/health", proc=launcher.proc)
    pids = launcher.children()
    assert set(pids) == {"space", "dashboard"}, pids
    space, dash = environ_of(pids["space"]), environ_of(pids["dashboard"])

    space_raw = Path(f"/proc/{pids['space']}/environ").read_bytes()
    assert password_hash.encode() not in space_raw and b"CHAT_DASHBOARD" not in space_raw
    assert space["OPENAI_API_KEY"] == "sk-never-in-the-dashboard"  # the responder's key is the Space's
    dash_raw = Path(f"/proc/{pids['dashboard']}/environ").read_bytes()
    assert b"sk-never-in-the-dashboard" not in dash_raw and b"hf-never-in-the-dashboard" not in dash_raw
    assert dash["CHAT_DASHBOARD_PASSWORD_HASH"] == password_hash
    for env in (space, dash):
        assert "AWS_SECRET_ACCESS_KEY" not in env
        assert env["CHAT_OPERATOR_TOKEN"] == TOKEN  # the one secret both share
    assert not (log.parent / OPERATOR_TOKEN_FILE).exists()  # with the variable set, no token file

    # Printed and shown: never the credentials.
    assert CREDS not in launcher.text() and "s3cret" not in launcher.text()
    assert f"http://127.0.0.1:{space_port}" in launcher.text()
    async def captions() -> str:
        async with StreamlitSession(url) as s:
            await s.login(PASSWORD)
            overview = await s.run(page="overview")
            chat = await s.run(page="chat")
            assert "Conversations today" in overview.metrics  # logged in, the page ran
            return "\n".join(overview.markdown + chat.markdown + overview.alerts + chat.alerts)

    text = asyncio.run(captions())
    assert f"http://127.0.0.1:{space_port}" in text
    assert "s3cret" not in text and CREDS not in text


# ------------------------------------------------------------------------ ports


def test_a_taken_dashboard_port_is_a_clear_error_naming_the_flag(launch, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        space_port = free_port()
        launcher = launch(["--port", str(port), "--space-port", str(space_port), "--log", str(tmp_path / "c.jsonl")])
        assert launcher.wait_exit() == 2
    text = launcher.text()
    assert f"port {port} on 127.0.0.1 is already in use" in text and "--port" in text
    assert "starting the Space" not in text and not port_in_use("127.0.0.1", space_port)  # nothing started


def test_a_space_port_taken_by_another_program_is_a_clear_error_naming_the_flag(launch, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        space_port = busy.getsockname()[1]
        launcher = launch(["--port", str(free_port()), "--space-port", str(space_port),
                           "--log", str(tmp_path / "c.jsonl")])
        assert launcher.wait_exit() == 2
    text = launcher.text()
    assert f"port {space_port} on 127.0.0.1 is already in use" in text and "--space-port" in text
    assert "dashboard on http" not in text


def test_space_port_flag_starts_the_space_there_with_its_token_file(launch, tmp_path):
    """--space-port moves the Space; it creates the staff token file beside the log (0600), the
    dashboard reads it from there and finds the same log: no warning on the Chat page."""
    port, space_port = free_port(), free_port()
    log = tmp_path / "logs" / "chat.jsonl"
    launcher = launch(["--port", str(port), "--space-port", str(space_port), "--log", str(log)])
    launcher.wait_for("dashboard on http")
    assert httpx.get(f"http://127.0.0.1:{space_port}/healthz", timeout=5).json()["status"] == "ok"
    token_file = log.parent / OPERATOR_TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert "warning" not in launcher.text()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_stcore/health", proc=launcher.proc)
    alerts = page_alerts(url, "chat")
    assert not any("log" in a for a in alerts), alerts
    assert check_space_log(f"http://127.0.0.1:{space_port}", log).status == "same"


def test_space_port_and_space_url_must_agree(launch, tmp_path):
    launcher = launch(["--space-port", "7999", "--space-url", f"http://{CREDS}@127.0.0.1:7998",
                       "--log", str(tmp_path / "c.jsonl")])
    assert launcher.wait_exit() == 2
    assert "disagree" in launcher.text() and CREDS not in launcher.text()


def test_run_sh_passes_flags_to_the_launcher(tmp_path):
    """`./run.sh --port N` is the launcher with --port N (here: a taken port, so it stops at once)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(["bash", str(ROOT / "run.sh"), "--port", str(port), "--no-space",
                               "--log", str(tmp_path / "c.jsonl")],
                              cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr


# ------------------------------------------------------------------------ which log


def test_same_log_rules(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "chat.jsonl").write_text("")
    assert same_log(folder / "chat.jsonl", folder / "chat.jsonl")
    assert same_log(folder, folder / "chat.a.jsonl")  # a folder of shards holds the Space's shard
    assert not same_log(folder / "chat.jsonl", tmp_path / "other" / "chat.jsonl")
    assert not same_log(folder / "chat.jsonl", folder / "chat.a.jsonl")
    link = tmp_path / "link"
    link.symlink_to(folder)
    assert same_log(link / "chat.jsonl", folder / "chat.jsonl")


def test_a_running_space_with_another_log_is_refused(launch, space_factory, tmp_path):
    """The reported case: a Space already answers at --space-url but writes another log."""
    theirs = space_factory(tmp_path / "theirs" / "chat.jsonl", env={"CHAT_OPERATOR_TOKEN": TOKEN})
    ours = tmp_path / "ours" / "chat.jsonl"
    port = free_port()
    launcher = launch(["--port", str(port), "--space-url", theirs.url, "--log", str(ours)], CHAT_OPERATOR_TOKEN=TOKEN)
    assert launcher.wait_exit() == 2
    text = launcher.text()
    assert str(theirs.log_path.resolve()) in text and str(ours.resolve()) in text
    assert "--allow-other-log" in text and "would not appear on Live or Conversations" in text
    assert not port_in_use("127.0.0.1", port)  # no dashboard started

    # Told to go on anyway: it starts, says so, and the Chat page says so too.
    launcher = launch(["--port", str(port), "--space-url", theirs.url, "--log", str(ours), "--allow-other-log"],
                      CHAT_OPERATOR_TOKEN=TOKEN)
    launcher.wait_for("dashboard on http")
    assert "warning:" in launcher.text() and "--allow-other-log" in launcher.text()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_stcore/health", proc=launcher.proc)
    alerts = page_alerts(url, "chat")
    assert any("The Space writes a different log" in a and str(theirs.log_path.resolve()) in a for a in alerts), alerts


def test_a_running_space_that_cannot_say_which_log_is_refused_plainly(launch, space_factory, tmp_path):
    """Without a shared token (the Space keeps its token file beside its own log) nothing can be compared."""
    theirs = space_factory(tmp_path / "theirs" / "chat.jsonl")
    ours = tmp_path / "ours" / "chat.jsonl"
    launcher = launch(["--port", str(free_port()), "--space-url", theirs.url, "--log", str(ours)])
    assert launcher.wait_exit() == 2
    text = launcher.text()
    assert "its log could not be compared" in text and "no staff token" in text and "--allow-other-log" in text

    port = free_port()
    launcher = launch(["--port", str(port), "--space-url", theirs.url, "--log", str(ours), "--allow-other-log"])
    launcher.wait_for("dashboard on http")
    assert "the logs could not be compared" in launcher.text()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_stcore/health", proc=launcher.proc)
    assert any("The logs could not be compared" in a for a in page_alerts(url, "chat"))


def test_a_running_space_with_the_same_log_is_used(launch, space_factory, tmp_path):
    """Same log folder: the launcher reads the Space's token file there, compares, and goes on."""
    theirs = space_factory(tmp_path / "shared" / "chat.jsonl")
    port = free_port()
    launcher = launch(["--port", str(port), "--space-url", theirs.url, "--log", str(theirs.log_path)])
    launcher.wait_for("dashboard on http")
    assert "writes this log" in launcher.text() and "using it" in launcher.text()
    assert "starting the Space" not in launcher.text()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_stcore/health", proc=launcher.proc)
    assert not any("log" in a for a in page_alerts(url, "chat"))


# ------------------------------------------------------------------------ stopping


def processes_with(*needles: str) -> list[tuple[int, str]]:
    """Live processes whose command line holds one of ``needles``: (pid, command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(n in cmd for n in needles):
            found.append((int(entry.name), cmd))
    return found


def wait_none_left(*needles: str, timeout: float = 30) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = processes_with(*needles)
        if not left:
            return []
        time.sleep(0.2)
    return processes_with(*needles)


def wait_none_left_of(pid: int, timeout: float = 30) -> list[tuple[int, str]]:
    """``[(pid, …)]`` while the process ``pid`` still runs after ``timeout`` seconds, else ``[]``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid not in [p for p, _ in processes_with("chatcore")]:
            return []
        time.sleep(0.2)
    return [(pid, "still running")]


def test_run_sh_piped_into_head_leaves_no_process(tmp_path):
    """`./run.sh … | head -1`: head leaves after one line; the launcher and both children go too."""
    log = tmp_path / "piped" / "chat_logs.jsonl"
    dash, space = free_port(), free_port()
    done = subprocess.run(["bash", "-c", f"./run.sh --port {dash} --space-port {space} --log {log} | head -1"],
                          cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=180)
    assert done.stdout.count("\n") == 1, done.stdout
    assert wait_none_left(str(log), f"--server.port {dash} ") == []
    assert not port_in_use("127.0.0.1", dash) and not port_in_use("127.0.0.1", space)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["TERM", "INT", "HUP"])
def test_a_stop_signal_with_its_output_gone_stops_both_children(tmp_path, signum):
    """The launcher's output is a pipe whose reader has gone (as `| head` leaves it), and it is
    told to stop twice in a row (as impatient supervisors and a second Ctrl-C do): the
    second signal must not cut the stopping short and leave a child running."""
    log = tmp_path / "signal" / "chat_logs.jsonl"
    dash, space = free_port(), free_port()
    proc = subprocess.Popen([PYTHON, "-m", "chatcore", "dashboard", "--port", str(dash), "--space-port", str(space),
                             "--log", str(log)], cwd=ROOT, env=base_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        lines = []
        while not any("dashboard on" in x for x in lines):
            line = proc.stdout.readline().decode(errors="replace")
            assert line, f"the launcher ended early: {lines}"
            lines.append(line)
        wait_http(f"http://127.0.0.1:{dash}/_stcore/health", timeout=90, proc=proc)
        children = [pid for pid, _ in processes_with(str(log), f"--server.port {dash} ") if pid != proc.pid]
        assert len(children) == 2, children
        proc.stdout.close()  # the reader goes away
        os.kill(proc.pid, signum)
        time.sleep(0.3)
        if proc.poll() is None:
            os.kill(proc.pid, signum)
        proc.wait(60)
        assert wait_none_left(str(log), f"--server.port {dash} ") == []
        assert not port_in_use("127.0.0.1", dash) and not port_in_use("127.0.0.1", space)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid, _ in processes_with(str(log), f"--server.port {dash} "):
            os.kill(pid, signal.SIGKILL)


def test_run_sh_with_the_alerts_watcher_stops_everything_on_sigterm(tmp_path):
    """With CHAT_ALERT_WEBHOOKS, run.sh runs the watcher beside the launcher: SIGTERM to run.sh
    reaches both, and the launcher's children go with it."""
    log = tmp_path / "alerts" / "chat_logs.jsonl"
    dash, space = free_port(), free_port()
    proc = subprocess.Popen(["bash", str(ROOT / "run.sh"), "--port", str(dash), "--space-port", str(space),
                             "--log", str(log)], cwd=ROOT,
                            env=base_env(CHAT_ALERT_WEBHOOKS="http://127.0.0.1:9/hook", CHAT_LOG_PATH=str(log)),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        lines = []
        while not any("dashboard on" in x for x in lines):
            line = proc.stdout.readline().decode(errors="replace")
            assert line, f"run.sh ended early: {lines}"
            lines.append(line)
        wait_http(f"http://127.0.0.1:{dash}/_stcore/health", timeout=90, proc=proc)
        watcher = [pid for pid, cmd in processes_with("chatcore alerts")
                   if Path(f"/proc/{pid}/environ").read_bytes().find(str(log).encode()) != -1]
        assert len(watcher) == 1, watcher
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
        assert wait_none_left(str(log), f"--server.port {dash} ") == []
        assert wait_none_left_of(watcher[0]) == []  # the watcher went too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid, _ in processes_with(str(log), f"--server.port {dash} "):
            os.kill(pid, signal.SIGKILL)
