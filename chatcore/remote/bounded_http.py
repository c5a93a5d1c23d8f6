"""HTTP to a Space that may be hostile or broken: every request ends by a deadline, and no
answer is read past its cap.

httpx's timeouts bound each network operation, not a whole request: a Space that sends one
byte every few seconds (of its headers or of its body) never trips them. So requests run on
an event loop of their own thread, where ``asyncio.timeout`` bounds each one whole, headers
and body included, and cancelling it closes its connection. Bodies are read as they come and
refused past a cap, so a giant answer never sits in memory.

Event streams (server-sent events, parsed by ``httpx-sse``) are endless by design, so they get
no deadline; one event that grows past a cap is refused instead.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
from httpx_sse import EventSource, ServerSentEvent

#: Bytes of an answer other than 200 that are read (an error message); the rest is dropped.
ERROR_BODY_BYTES = 64 * 1024


class Deadline(TimeoutError):
    """A request did not finish in time."""


class TooLarge(ValueError):
    """An answer or an event was larger than its cap."""


class BoundedHttp:
    """Requests that end within ``timeout`` seconds; ``close()`` when done."""

    def __init__(self, timeout: float, connect_timeout: float = 5.0):
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bounded-http", daemon=True)
        self._thread.start()
        # Each network operation is bounded as well, so a dead host is told apart from a slow one.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)), follow_redirects=False)

    def request(self, method: str, url: str, *, cap: int, **kwargs) -> tuple[int, httpx.Headers, bytes]:
        """``(status, headers, body)`` of one request. Raises :class:`Deadline` when it does not
        finish within the deadline, :class:`TooLarge` when a 200 answer passes ``cap`` bytes
        (another answer is cut at :data:`ERROR_BODY_BYTES`), ``httpx.HTTPError`` when the
        connection fails."""
        future = asyncio.run_coroutine_threadsafe(self._request(method, url, cap, kwargs), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C: the request is not left running
            raise

    async def _request(self, method: str, url: str, cap: int, kwargs: dict):
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client.stream(method, url, **kwargs) as resp:
                    limit = cap if resp.status_code == 200 else ERROR_BODY_BYTES
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > limit:
                            if resp.status_code == 200:
                                raise TooLarge(f"more than {cap} bytes")
                            del body[limit:]
                            break
                    return resp.status_code, resp.headers, bytes(body)
        except TimeoutError:
            raise Deadline(f"no complete answer within {self.timeout:g} s") from None
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise
            raise Deadline(f"no complete answer within {self.timeout:g} s") from None

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(5)
        except Exception:  # closing anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


def events(response: httpx.Response, cap: int) -> Iterator[ServerSentEvent]:
    """The server-sent events of an open ``text/event-stream`` response; raises :class:`TooLarge`
    as soon as one event (its lines up to the blank line that ends it) passes ``cap`` bytes."""
    capped = httpx.Response(response.status_code, headers={"content-type": response.headers.get("content-type", "")},
                            content=_capped_events(response.iter_bytes(), cap))
    return EventSource(capped).iter_sse()


def _capped_events(chunks: Iterator[bytes], cap: int) -> Iterator[bytes]:
    pending = 0  # bytes since the end of the last event
    tail = b""
    for chunk in chunks:
        seen = tail + chunk
        ends = [seen.rfind(sep) + len(sep) for sep in (b"\n\n", b"\r\r", b"\r\n\r\n") if sep in seen]
        pending = len(seen) - max(ends) if ends else pending + len(chunk)
        if pending > cap:
            raise TooLarge(f"an event longer than {cap} bytes")
        tail = seen[-3:]
        yield chunk
