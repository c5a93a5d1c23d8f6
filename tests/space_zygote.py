"""A fork server for the tests' Spaces: one process per test worker that has imported the
Space's third-party libraries once, and forks a fresh ``python -m chatcore space …`` from
that state for each test.

Most of a Space's start is importing Gradio and its dependencies (about 3 s of CPU each
time); a suite starts well over a hundred Spaces on two cores. The child runs the real
command line (``runpy`` on ``chatcore``, as ``python -m chatcore`` does) with the test's
arguments, environment, working folder and output file, in its own session so the test
stops its process group as before. Nothing of chatcore is imported before the fork, so every
setting is read from the test's environment in the child, as in a new process.

Protocol (one JSON line each way over a Unix socket): ``{"argv", "env", "cwd", "output"}``
→ ``{"pid"}``. The exit status of each child is written to ``<status_dir>/<pid>``.
The server exits (stopping every child it started) when its parent test worker is gone.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

PRELOAD = ("gradio", "fastapi", "uvicorn", "starlette", "httpx", "openai", "orjson", "pyarrow", "pandas",
           "limits", "tenacity", "pydantic", "pydantic_settings", "watchdog.observers", "multipart")


def _run_child(request: dict, listener: socket.socket, conn: socket.socket) -> None:
    """In the forked child: become ``python -m chatcore ARGS`` and never return."""
    code = 1
    try:
        listener.close()
        conn.close()
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        out = os.open(request["output"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        import io

        # As with PYTHONUNBUFFERED: what the Space printed is in the file even if it is killed.
        sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0, closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False), write_through=True)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = request["cwd"]
        sys.argv = ["-m", *request["argv"][1:]]
        import runpy

        try:
            runpy.run_module(request["argv"][0], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap(status_dir: str, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        tmp = os.path.join(status_dir, f".{pid}")
        with open(tmp, "w") as f:
            f.write(str(code))
        os.replace(tmp, os.path.join(status_dir, str(pid)))


def serve(socket_path: str, status_dir: str) -> None:
    parent = os.getppid()
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)
    listener.settimeout(0.2)
    print("ready", flush=True)
    children: set[int] = set()
    try:
        while os.getppid() == parent:
            _reap(status_dir, children)
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(10)
                request = json.loads(conn.makefile("rb").readline())
                pid = os.fork()
                if pid == 0:
                    _run_child(request, listener, conn)
                children.add(pid)
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    finally:
        for pid in list(children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.1)
        _reap(status_dir, children)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
