"""What a browser session may do to the Streamlit server before it has logged in.

Streamlit acts on some messages from any websocket, logged in or not, and
serves ``/media/…`` to anyone holding the URL. :func:`install` (called by
``dashboard.py`` before anything is cached) narrows that down:

* ``clear_cache`` (Streamlit clears ``st.cache_data`` and ``st.cache_resource``
  for every session) is ignored from a session that has not logged in.
* A deferred download (``st.download_button`` with a callable) is generated only
  for the session that showed the button, and only once that session has logged in.
* Files uploaded (``/_stcore/upload_file``) by a session that has not logged in are refused.
* A download is served only right after the click that made it (Streamlit's page
  fetches it twice: a check, then the file; within a minute): a copied or leaked
  ``/media/…`` export link gives nothing afterwards.

The login gate calls :func:`set_authenticated` on every run. Patches are made
once per process and only on the classes and the storage object they name.
"""
from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("chatcore.dashboard.guard")

_lock = threading.Lock()
_authenticated: set[str] = set()
_installed: set[str] = set()

REFUSED_DOWNLOAD = "Failed to generate file for download"


def current_session_id() -> str | None:
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def _prune() -> None:
    """Drop sessions that are gone (caller holds the lock)."""
    try:
        from streamlit import runtime

        rt = runtime.get_instance()
        for sid in [s for s in _authenticated if not rt.is_active_session(s)]:
            _authenticated.discard(sid)
    except Exception:  # no runtime (AppTest): nothing to prune
        pass


def set_authenticated(yes: bool, session_id: str | None = None) -> None:
    """Record whether this browser session has passed the login gate."""
    sid = session_id or current_session_id()
    if sid is None:
        return
    with _lock:
        if yes:
            if sid not in _authenticated:
                _prune()
            _authenticated.add(sid)
        else:
            _authenticated.discard(sid)


def is_authenticated(session_id: str | None) -> bool:
    with _lock:
        return session_id is not None and session_id in _authenticated


def _once(name: str) -> bool:
    with _lock:
        if name in _installed:
            return False
        _installed.add(name)
        return True


def _guard_clear_cache() -> None:
    from streamlit.runtime.app_session import AppSession

    original = AppSession._handle_clear_cache_request

    def _handle_clear_cache_request(self) -> None:
        if not is_authenticated(getattr(self, "id", None)):
            log.warning("ignored clear_cache from a session that has not logged in")
            return
        original(self)

    AppSession._handle_clear_cache_request = _handle_clear_cache_request


def _deferred_owner(file_id: str) -> str | None:
    from streamlit import runtime

    entry = runtime.get_instance().media_file_mgr._deferred_callables.get(file_id)
    return entry.get("session_id") if entry else None


def _guard_deferred_downloads() -> None:
    from streamlit.proto.ForwardMsg_pb2 import BackendOperationResponse
    from streamlit.runtime.backend_operation_handler import DeferredFileHandler

    original = DeferredFileHandler.handle

    async def handle(self, request, session_id):
        try:
            owner = _deferred_owner(request.deferred_file.file_id)
        except Exception:  # another Streamlit layout: refuse rather than serve
            owner = None
        if owner is None or owner != session_id or not is_authenticated(session_id):
            log.warning("refused a download for a session that did not show it or has not logged in")
            return BackendOperationResponse(request_id=request.request_id, error_msg=REFUSED_DOWNLOAD)
        return await original(self, request, session_id)

    DeferredFileHandler.handle = handle


#: Streamlit's page fetches a download's URL twice (a check, then the download itself) ...
DOWNLOAD_FETCHES = 2
#: ... right after the click; a download link older than this is gone.
DOWNLOAD_SECONDS = 60.0


def _serve_downloads_once() -> None:
    import time

    from streamlit import runtime
    from streamlit.runtime.media_file_storage import MediaFileKind, MediaFileStorageError

    storage = runtime.get_instance().media_file_mgr._storage
    original_add, original_get_file, original_get_url = storage.load_and_get_id, storage.get_file, storage.get_url
    making_url = threading.local()  # get_url looks the file up too: that is not a download
    issued: dict[str, list] = {}  # file id -> [fetches so far, when it was made]
    lock = threading.Lock()

    def load_and_get_id(path_or_data, mimetype, kind, filename=None):
        file_id = original_add(path_or_data, mimetype, kind, filename)
        if kind == MediaFileKind.DOWNLOADABLE:
            with lock:
                issued[file_id] = [0, time.monotonic()]
        return file_id

    def get_file(filename: str):
        file = original_get_file(filename)
        if getattr(file, "kind", None) != MediaFileKind.DOWNLOADABLE or getattr(making_url, "on", False):
            return file
        file_id = os.path.splitext(filename)[0]
        with lock:
            entry = issued.get(file_id)
            fresh = entry is not None and time.monotonic() - entry[1] <= DOWNLOAD_SECONDS
            if fresh:
                entry[0] += 1
            if not fresh or entry[0] >= DOWNLOAD_FETCHES:
                issued.pop(file_id, None)
                storage.delete_file(file_id)
        if not fresh:
            raise MediaFileStorageError(f"download {file_id} has expired")
        return file

    def get_url(file_id: str) -> str:
        making_url.on = True
        try:
            return original_get_url(file_id)
        finally:
            making_url.on = False

    storage.load_and_get_id = load_and_get_id
    storage.get_file = get_file
    storage.get_url = get_url


def _guard_uploads() -> None:
    """The dashboard has no upload widgets; a session that has not logged in may not store files either."""
    from starlette.exceptions import HTTPException
    from streamlit import runtime

    manager = runtime.get_instance().uploaded_file_mgr
    original = manager.add_file

    def add_file(session_id, file):
        if not is_authenticated(session_id):
            log.warning("refused an upload from a session that has not logged in")
            raise HTTPException(status_code=403, detail="log in first")
        return original(session_id, file)

    manager.add_file = add_file


def install() -> None:
    """Apply the guards (idempotent). Needs a running Streamlit server for the download part."""
    if _once("clear_cache"):
        _guard_clear_cache()
    if _once("deferred"):
        _guard_deferred_downloads()
    try:
        from streamlit import runtime

        if not runtime.exists():
            return
    except Exception:  # pragma: no cover
        return
    if _once("media"):
        _serve_downloads_once()
    if _once("uploads"):
        _guard_uploads()
