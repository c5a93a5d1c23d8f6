"""The gate with OIDC (st.login): before sign-in the page and its websocket must work (the page
shows the st.login button), so the websocket is let in but carries only script runs; Streamlit's
sign-in callback gets the session cookie added, its sign-out takes it away.

Streamlit's OIDC routes need an identity provider; here a small Starlette app on 127.0.0.1 stands
in for them (the callback sets ``_streamlit_user`` as Streamlit's does after a sign-in, the
websocket answers with the type of each message it receives), behind the real gate and the real
message filter of ``dashboard_app.py``.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import httpx
import pytest
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg

from conftest import PYTHON, ROOT, free_port, wait_http

COOKIE = "chat_operator_session"

SERVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    import uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse, RedirectResponse
    from starlette.routing import Route, WebSocketRoute
    from streamlit.proto.BackMsg_pb2 import BackMsg

    from chatcore.dashboard.auth import LoginConfig, SessionCookies
    from chatcore.dashboard.gate import Gate, GateMiddleware
    from dashboard_app import login_messages_only

    async def callback(request):
        response = RedirectResponse("/", status_code=302)
        if request.query_params.get("ok") == "1":
            response.set_cookie("_streamlit_user", "2|signed-user-info", httponly=True)
        else:  # a failed sign-in: Streamlit clears its cookie
            response.delete_cookie("_streamlit_user")
        return response

    async def logout(request):
        response = RedirectResponse("/", status_code=302)
        response.delete_cookie("_streamlit_user")
        return response

    async def stream(ws):
        await ws.accept()
        while True:
            data = await ws.receive_bytes()
            try:
                await ws.send_text(BackMsg.FromString(data).WhichOneof("type"))
            except Exception:
                await ws.send_text("not a message")

    async def anything(request):
        return PlainTextResponse("served")

    gate = Gate(LoginConfig("oidc"), SessionCookies("x" * 40), messages_before_login=login_messages_only)
    app = Starlette(routes=[Route("/oauth2callback", callback), Route("/auth/logout", logout),
                            WebSocketRoute("/_stcore/stream", stream), Route("/{path:path}", anything)],
                    middleware=[Middleware(GateMiddleware, gate=gate)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
""")


@pytest.fixture
def server(tmp_path):
    script = tmp_path / "oidc_server.py"
    script.write_text(SERVER)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    out = open(tmp_path / "server.out", "wb")
    proc = subprocess.Popen([PYTHON, str(script), str(port), str(ROOT)], cwd=tmp_path, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def message(kind: str) -> bytes:
    msg = BackMsg()
    if kind == "rerun_script":
        msg.rerun_script.query_string = ""
    elif kind == "clear_cache":
        msg.clear_cache = True
    elif kind == "backend_operation_request":
        msg.backend_operation_request.request_id = "r1"
        msg.backend_operation_request.deferred_file.file_id = "f1"
    return msg.SerializeToString()


async def answered(url: str, kinds: list[str], cookie: str | None = None) -> list[str]:
    """Send these messages, then a script run; the types the server received, in order."""
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    async with websockets.connect(url.replace("http", "ws") + "/_stcore/stream", additional_headers=headers) as ws:
        for kind in kinds:
            await ws.send(message(kind))
        await ws.send(b"not a message")
        await ws.send(message("rerun_script"))
        got: list[str] = []
        while got.count("rerun_script") < kinds.count("rerun_script") + 1:
            got.append(await asyncio.wait_for(ws.recv(), 10))
        return got


def test_before_sign_in_only_script_runs_pass_and_media_is_refused(server):
    got = asyncio.run(answered(server, ["clear_cache", "backend_operation_request", "rerun_script"]))
    assert got == ["rerun_script", "rerun_script"]  # the cache clearing and the download were dropped
    assert httpx.get(server + "/", timeout=10).status_code == 200  # the page shell, with its st.login button
    assert httpx.get(server + "/media/abc.csv", timeout=10).status_code == 403
    failed = httpx.get(server + "/oauth2callback?ok=0", timeout=10)
    assert COOKIE not in failed.cookies  # a failed sign-in gets no session


def test_the_sign_in_callback_adds_the_session_and_sign_out_takes_it(server):
    signed_in = httpx.get(server + "/oauth2callback?ok=1", timeout=10)
    assert signed_in.status_code == 302 and "_streamlit_user" in signed_in.cookies
    cookie = signed_in.cookies[COOKIE]
    set_cookie = [v for k, v in signed_in.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE)][0]
    assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
    assert asyncio.run(answered(server, ["clear_cache"], cookie)) == ["clear_cache", "not a message", "rerun_script"]
    assert httpx.get(server + "/media/abc.csv", cookies={COOKIE: cookie}, timeout=10).text == "served"

    out = httpx.get(server + "/auth/logout", cookies={COOKIE: cookie}, timeout=10)
    assert any(v.startswith(f'{COOKIE}=""') or (v.startswith(COOKIE) and "max-age=0" in v.lower())
               for k, v in out.headers.multi_items() if k == "set-cookie")
    # revoked: the same cookie is a browser that has not signed in again
    assert asyncio.run(answered(server, ["clear_cache"], cookie)) == ["rerun_script"]
    assert httpx.get(server + "/media/abc.csv", cookies={COOKIE: cookie}, timeout=10).status_code == 403
