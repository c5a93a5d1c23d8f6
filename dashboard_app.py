"""The dashboard server: ``dashboard.py`` served by Streamlit's ``st.App`` behind the login gate.

Run with ``python -m chatcore dashboard`` (the launcher runs ``streamlit run dashboard_app.py``),
or ``streamlit run dashboard_app.py`` with ``CHAT_LOG_PATH`` / ``CHAT_SPACE_URL`` set. The gate
(``chatcore/dashboard/gate.py``) adds ``/login`` and ``/logout`` and refuses the websocket, media,
uploads and downloads to a browser without a session; see docs/security.md.
"""
from __future__ import annotations

import streamlit as st
from starlette.middleware import Middleware
from streamlit.proto.BackMsg_pb2 import BackMsg

from chatcore.dashboard.gate import GateMiddleware, build_gate
from chatcore.dashboard.launcher import read_secrets

#: What a browser that has not signed in (st.login) may ask over the websocket: script runs.
BEFORE_LOGIN = frozenset({"rerun_script", "app_heartbeat"})


def login_messages_only(data: bytes | None, text: str | None) -> bool:
    if data is None:
        return False
    try:
        return BackMsg.FromString(data).WhichOneof("type") in BEFORE_LOGIN
    except Exception:  # not a message of the protocol
        return False


gate = build_gate(read_secrets(), messages_before_login=login_messages_only)

app = st.App("dashboard.py", routes=gate.routes(), middleware=[Middleware(GateMiddleware, gate=gate)])
