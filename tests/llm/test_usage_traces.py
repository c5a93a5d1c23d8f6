"""CHAT_OTLP_ENDPOINT: each bot turn reaches a real OTLP/HTTP receiver the test starts (the
protobuf decoded with opentelemetry-proto) as a span with the GenAI semantic-convention
attributes; a dead collector never fails or blocks a turn and is counted in /healthz."""
from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from gradio_client import Client
from openai_fake import CompletionsServer

from conftest import free_port

trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

USAGE = {"prompt_tokens": 321, "completion_tokens": 12, "prompt_tokens_details": {"cached_tokens": 100}}


class OTLPReceiver:
    """POST /v1/traces (application/x-protobuf): keeps every span with its attributes as a dict."""

    def __init__(self):
        self.spans: list[dict] = []
        self.headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = trace_service.ExportTraceServiceRequest()
                request.ParseFromString(body)
                outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                for rs in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            attrs = {}
                            for a in span.attributes:
                                kind = a.value.WhichOneof("value")
                                attrs[a.key] = getattr(a.value, kind)
                            outer.spans.append({"name": span.name, "kind": span.kind, "attrs": attrs,
                                                "resource": resource, "status": span.status.code,
                                                "duration_ns": span.end_time_unix_nano - span.start_time_unix_nano})
                reply = trace_service.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _wait(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _space(space_factory, tmp_path, server, endpoint, **env):
    return space_factory(tmp_path / "log" / "chat.jsonl",
                         env={"CHAT_RESPONDER": "openai", "OPENAI_BASE_URL": server.url, "OPENAI_MODEL": "m-traced",
                              "OPENAI_MAX_RETRIES": "0", "CHAT_PRICES": '{"m-traced": {"input": 1, "output": 2}}',
                              "CHAT_PROMPT_VERSION": "faq-v7", "CHAT_OTLP_ENDPOINT": endpoint,
                              "OTEL_BSP_SCHEDULE_DELAY": "100", **env})


def test_each_bot_turn_is_a_genai_span_at_the_collector(space_factory, tmp_path):
    receiver = OTLPReceiver()
    try:
        with CompletionsServer(usage=USAGE) as server:
            sp = _space(space_factory, tmp_path, server, receiver.url,
                        CHAT_OTLP_HEADERS="Authorization=Basic c2VjcmV0LWtleQ==")
            cid = str(uuid.uuid4())
            client = Client(sp.url, verbose=False)
            for text in ("first", "second"):
                client.predict(message={"text": text, "files": []}, conversation_id=cid, api_name="/chat")
            spans = _wait(lambda: receiver.spans if len(receiver.spans) >= 2 else None)
            # counted once the collector's answer is back on the exporter's thread
            health = _wait(lambda: (lambda h: h if h["traces"]["exported"] >= 2 else None)(sp.health()))
    finally:
        receiver.stop()
    first, second = sorted(spans[:2], key=lambda x: x["attrs"]["chat.turn"])
    assert first["name"] == "chat m-traced" and first["kind"] == 3  # SPAN_KIND_CLIENT
    a = first["attrs"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "m-traced"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (321, 12)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 100
    assert a["gen_ai.conversation.id"] == cid and a["session.id"] == cid
    assert (a["chat.turn"], second["attrs"]["chat.turn"]) == (0, 1)
    assert a["chat.prompt_version"] == "faq-v7" and a["chat.cost_usd"] == pytest.approx((321 + 24) / 1e6)
    assert "first" not in str(a)  # no visitor text
    assert first["resource"]["service.name"] == "chat-operator-space"
    assert first["duration_ns"] > 0
    assert receiver.headers[0].get("authorization") == "Basic c2VjcmV0LWtleQ=="
    assert health["trace_export_errors"] == 0 and health["traces"]["exported"] >= 2
    assert "c2VjcmV0" not in str(health)


def test_a_dead_collector_never_fails_a_turn_and_is_counted(space_factory, tmp_path):
    with CompletionsServer(usage=USAGE) as server:
        sp = _space(space_factory, tmp_path, server, f"http://127.0.0.1:{free_port()}", CHAT_OTLP_TIMEOUT="1")
        client = Client(sp.url, verbose=False)
        for i in range(3):
            assert client.predict(message={"text": f"q{i}", "files": []}, conversation_id="dead-collector",
                                  api_name="/chat").startswith("Model reply")
        assert all(r["error"] is None for r in sp.records())
        errors = _wait(lambda: sp.health(staff=False).get("trace_export_errors"))
        assert errors >= 1
        assert sp.health()["traces"]["last_error"]
