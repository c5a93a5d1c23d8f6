"""A raw Streamlit websocket client (the browser's protocol: protobuf BackMsg/ForwardMsg on
``/_stcore/stream``), for tests that act as a hostile or scripted browser session.

The websocket is opened on first use, with the session cookie when :meth:`StreamlitSession.login`
got one from the dashboard's ``/login`` form (as a browser does); without one, a dashboard with a
password refuses it (``websockets.exceptions.InvalidStatus``, 403)."""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import httpx
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

_request_ids = itertools.count(1)


@dataclass
class Run:
    """What one script run sent: alerts, widgets by label, metrics, download buttons."""

    alerts: list[str] = field(default_factory=list)
    widgets: dict[str, object] = field(default_factory=dict)  # label -> element proto (text_input, button, …)
    metrics: dict[str, str] = field(default_factory=dict)
    downloads: dict[str, object] = field(default_factory=dict)  # label -> DownloadButton proto
    markdown: list[str] = field(default_factory=list)
    status: str = ""


SESSION_COOKIE = "chat_operator_session"


class LoginRefused(Exception):
    """The /login form did not log in: ``status`` and the page's ``alert`` say why."""

    def __init__(self, status: int, alert: str):
        super().__init__(f"{status}: {alert}")
        self.status, self.alert = status, alert


async def http_login(url: str, password: str, name: str = "", headers: dict | None = None) -> str:
    """Post the dashboard's login form as a browser does; the session cookie's value."""
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(url.rstrip("/") + "/login", data={"name": name, "password": password, "next": "/"},
                              headers=headers or {})
    if r.status_code != 303 or SESSION_COOKIE not in r.cookies:
        raise LoginRefused(r.status_code, page_alert(r.text))
    return r.cookies[SESSION_COOKIE]


def page_alert(text: str) -> str:
    import re

    m = re.search(r'role="alert">([^<]*)<', text)
    return m.group(1) if m else ""


class StreamlitSession:
    def __init__(self, url: str, headers: dict | None = None, cookie: str | None = None):
        self.url = url.rstrip("/")
        self.ws_url = url.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"
        self.headers = headers or {}
        self.cookie = cookie
        self.ws = None
        self.session_id: str | None = None
        self.pages: dict[str, str] = {}  # url path name ("", "live", …) -> page_script_hash
        self.backend_responses: list = []

    async def connect(self) -> None:
        headers = dict(self.headers)
        if self.cookie:
            headers["Cookie"] = f"{SESSION_COOKIE}={self.cookie}"
        self.ws = await websockets.connect(self.ws_url, subprotocols=["streamlit"],
                                           additional_headers=headers, max_size=2**24)

    async def __aenter__(self) -> "StreamlitSession":
        return self

    async def __aexit__(self, *exc) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def send(self, msg: BackMsg) -> None:
        if self.ws is None:
            await self.connect()
        await self.ws.send(msg.SerializeToString())

    async def run(self, widgets: list[WidgetState] | None = None, page: str = "", timeout: float = 60.0) -> Run:
        """Ask for a script run (with these widget values) and collect what it sends until it finishes.

        Runs that end early for a rerun (``st.rerun``) are followed into the next run.
        """
        msg = BackMsg()
        msg.rerun_script.query_string = ""
        msg.rerun_script.page_script_hash = self.pages.get(page, "")
        if widgets:
            msg.rerun_script.widget_states.widgets.extend(widgets)
        await self.send(msg)
        return await self.collect(timeout)

    async def collect(self, timeout: float = 60.0) -> Run:
        run = Run()
        async with asyncio.timeout(timeout):
            while True:
                fwd = ForwardMsg()
                fwd.ParseFromString(await self.ws.recv())
                kind = fwd.WhichOneof("type")
                if kind == "new_session":
                    self.session_id = fwd.new_session.initialize.session_id or self.session_id
                    run = Run()  # a fresh run: earlier elements were replaced
                elif kind == "navigation":
                    for p in fwd.navigation.app_pages:
                        self.pages[p.url_pathname] = p.page_script_hash
                elif kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                    el = fwd.delta.new_element
                    which = el.WhichOneof("type")
                    inner = getattr(el, which) if which else None
                    if which == "alert":
                        run.alerts.append(inner.body)
                    elif which == "metric":
                        run.metrics[inner.label] = inner.body
                    elif which == "markdown":
                        run.markdown.append(inner.body)
                    elif which == "code":
                        run.markdown.append(inner.code_text)
                    elif which == "html":
                        run.markdown.append(inner.body)
                    elif which == "download_button":
                        run.downloads[inner.label] = inner
                    elif inner is not None and hasattr(inner, "label") and hasattr(inner, "id"):
                        run.widgets[inner.label] = inner
                elif kind == "backend_operation_response":
                    self.backend_responses.append(fwd.backend_operation_response)
                elif kind == "script_finished":
                    status = ForwardMsg.ScriptFinishedStatus.Name(fwd.script_finished)
                    if status != "FINISHED_EARLY_FOR_RERUN":
                        run.status = status
                        return run

    async def login(self, password: str, name: str = "") -> Run:
        """Log in on the /login page, as the browser does, then open the websocket with the
        session cookie; the first script run."""
        self.cookie = await http_login(self.url, password, name, headers=self.headers)
        if self.ws is not None:
            await self.ws.close()
            self.ws = None
        return await self.run()

    async def clear_cache(self) -> None:
        msg = BackMsg()
        msg.clear_cache = True
        await self.send(msg)

    async def deferred_download(self, file_id: str, timeout: float = 30.0):
        """Ask for a deferred download's file (as a click on the button does); the response."""
        request_id = f"req-{next(_request_ids)}"
        msg = BackMsg()
        msg.backend_operation_request.request_id = request_id
        msg.backend_operation_request.session_id = self.session_id or ""
        msg.backend_operation_request.deferred_file.file_id = file_id
        await self.send(msg)
        async with asyncio.timeout(timeout):
            while True:
                for resp in self.backend_responses:
                    if resp.request_id == request_id:
                        return resp
                fwd = ForwardMsg()
                fwd.ParseFromString(await self.ws.recv())
                if fwd.WhichOneof("type") == "backend_operation_response":
                    self.backend_responses.append(fwd.backend_operation_response)
