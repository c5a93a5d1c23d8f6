"""An OpenAI-compatible chat completions server on loopback, for tests.

It streams (SSE) or answers in one JSON, records every request (body and Authorization
header), and behaves as ``mode`` says:

* ``ok``       — streams the reply; with ``usage`` set, the last chunk carries it (as OpenAI and
  vLLM do when the request asks ``stream_options.include_usage``);
* ``tool``     — the model calls the ``request_human`` tool instead of answering;
* ``500``      — answers HTTP 500;
* ``garbage``  — breaks the stream with a line that is not JSON.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CompletionsServer:
    def __init__(self, mode: str = "ok", usage: dict | None = None):
        self.mode = mode
        self.usage = usage
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"body": body, "auth": self.headers.get("Authorization"),
                                       "path": self.path})
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                if outer.mode == "500":
                    return self._send(500, b'{"error": {"message": "boom"}}')
                last = body["messages"][-1]["content"]
                pieces = ["Model ", "reply ", "to: ", last, f" ({len(body['messages'])} msgs)"]
                usage = outer.usage
                if not body.get("stream"):
                    answer = {"id": "c1", "object": "chat.completion", "model": body["model"], "created": 0,
                              "choices": [{"index": 0, "finish_reason": "stop",
                                           "message": {"role": "assistant", "content": "".join(pieces)}}]}
                    if usage:
                        answer["usage"] = usage
                    return self._send(200, json.dumps(answer).encode())
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()

                def chunk(delta=None, finish=None, with_usage=None, choices=True):
                    c = {"id": "c1", "object": "chat.completion.chunk", "model": body["model"], "created": 0,
                         "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
                    if with_usage is not None:
                        c["usage"] = with_usage
                    self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                    self.wfile.flush()

                if outer.mode == "tool" and body.get("tools"):
                    chunk({"role": "assistant", "tool_calls": [
                        {"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "request_human", "arguments": ""}}]})
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"reason": "wants a person"}'}}]})
                    chunk(finish="tool_calls")
                else:
                    for i, piece in enumerate(pieces):
                        if outer.mode == "garbage" and i == 2:
                            self.wfile.write(b"data: {not json\n\n")
                            self.wfile.flush()
                            self.close_connection = True
                            return
                        chunk({"content": piece})
                    chunk(finish="stop")
                wants = (body.get("stream_options") or {}).get("include_usage")
                if usage and wants:
                    chunk(choices=False, with_usage=usage)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
