"""Routes for the website widget, registered on the Space's FastAPI app before Gradio.

* ``GET /widget.js``    the widget, ``text/javascript``, cached for an hour and
  revalidated with an ETag (a new deploy is picked up within the hour, or at once
  with ``/widget.js?v=<anything>``).
* ``GET /widget/demo``  a sample company page with the widget on it.

Cross-origin access (the widget on a customer's site calling ``/gradio_api/call/chat``)
is governed by the Space's CORS middleware: localhost origins always, plus
``CHAT_ALLOWED_ORIGINS`` / ``--allow-origin`` (``*`` for any).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

HERE = Path(__file__).resolve().parent
JS_TYPE = "text/javascript; charset=utf-8"
CACHE = "public, max-age=3600, stale-while-revalidate=86400"


@lru_cache(maxsize=None)
def _asset(name: str) -> tuple[bytes, str]:
    body = (HERE / name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _etag_matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match", "")
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(",")) or header.strip() == "*"


def register(app: FastAPI, settings) -> None:
    @app.api_route("/widget.js", methods=["GET", "HEAD"], include_in_schema=False)
    def widget_js(request: Request) -> Response:
        body, etag = _asset("widget.js")
        headers = {"Cache-Control": CACHE, "ETag": etag, "X-Content-Type-Options": "nosniff"}
        if _etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=JS_TYPE, headers=headers)

    @app.api_route("/widget/demo", methods=["GET", "HEAD"], include_in_schema=False)
    def widget_demo() -> HTMLResponse:
        body, _ = _asset("demo.html")
        return HTMLResponse(body.decode("utf-8"), headers={"Cache-Control": "no-cache"})
