"""Each bot turn as an OpenTelemetry span, sent over OTLP/HTTP to the tools a team already runs
(Langfuse, Phoenix, any OpenTelemetry collector). Off unless ``CHAT_OTLP_ENDPOINT`` is set.

The span follows the GenAI semantic conventions: ``gen_ai.operation.name`` ``chat``,
``gen_ai.provider.name`` (the responder), ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``
/ ``output_tokens`` (and ``cache_read.input_tokens``, ``reasoning.output_tokens`` when
reported), ``gen_ai.conversation.id`` and ``session.id`` (the conversation id, which is how
Langfuse and Phoenix group a session), plus ``chat.turn``, ``chat.source``,
``chat.prompt_version`` and ``chat.cost_usd``. Visitor text is not sent.

Spans are queued and exported by the SDK's batch processor on its own thread: a turn only
builds a span (a few microseconds, see bench/usage_logging.py) and never waits for the
collector. A collector that is down or refuses spans is counted (``/healthz``:
``trace_export_errors``), never raised.

Env: ``CHAT_OTLP_ENDPOINT`` (``http://host:4318``, or the full ``…/v1/traces``),
``CHAT_OTLP_HEADERS`` (``key=value,key2=value2``, e.g. a Langfuse ``Authorization``; never
shown), ``CHAT_OTLP_TIMEOUT`` (seconds per export, default 3); the SDK's own
``OTEL_BSP_*`` and ``OTEL_SERVICE_NAME`` apply.
"""
from __future__ import annotations

import os
import threading
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from chatcore.config import Settings, display_url, reveal

#: What each responder is called as ``gen_ai.provider.name``.
PROVIDERS = {"openai": "openai", "hf": "huggingface"}


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting what reached the collector and what did not."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def export(self, spans) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
            error = None if result == SpanExportResult.SUCCESS else "the collector refused the spans"
        except Exception as exc:  # a dead collector must never reach a chat turn
            result, error = SpanExportResult.FAILURE, type(exc).__name__
        with self._lock:
            if error is None:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
                self.last_error = error
        return result

    def note_failure(self, error: str) -> None:
        with self._lock:
            self.failed += 1
            self.last_error = error

    def counts(self) -> tuple[int, int, str | None]:
        with self._lock:
            return self.exported, self.failed, self.last_error

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _headers(raw: str | None) -> dict[str, str]:
    out = {}
    for part in (raw or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def traces_endpoint(base: str) -> str:
    base = base.strip().rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


class TurnTracer:
    """Turns the Space's logged turns into spans for one OTLP endpoint."""

    def __init__(self, endpoint: str, headers: dict[str, str] | None = None, timeout: float = 3.0):
        self.endpoint = traces_endpoint(endpoint)
        self.exporter = _CountingExporter(OTLPSpanExporter(endpoint=self.endpoint, headers=headers or None,
                                                           timeout=timeout))
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "chat-operator-space"})
        # its own provider, not the global one: the Space's spans never mix with a host app's
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("chatcore.llm.traces")

    @classmethod
    def from_env(cls) -> "TurnTracer | None":
        settings = Settings.from_env()
        if not settings.otlp_endpoint:
            return None
        return cls(settings.otlp_endpoint, _headers(reveal(settings.otlp_headers)), settings.otlp_timeout)

    def turn(self, record: dict, usage: dict | None = None) -> None:
        """One logged bot turn (a record of :func:`chatcore.log.records.make_record`) as a span.
        ``usage`` is the turn's ``usage`` object. Never raises."""
        try:
            self._span(record, usage if usage is not None else record.get("usage"))
        except Exception:  # tracing is never worth a failed turn
            self.exporter.note_failure("could not build the span")

    def _span(self, record: dict, usage: dict | None) -> None:
        backend, model = record.get("backend") or "unknown", record.get("model")
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDERS.get(backend, backend),
            "gen_ai.conversation.id": record["conversation_id"],
            "session.id": record["conversation_id"],
            "chat.turn": int(record["turn"]),
            "chat.source": record.get("source") or "",
        }
        if model:
            attrs["gen_ai.request.model"] = model
        if usage:
            for key, name in (("input_tokens", "gen_ai.usage.input_tokens"),
                              ("output_tokens", "gen_ai.usage.output_tokens"),
                              ("cached_tokens", "gen_ai.usage.cache_read.input_tokens"),
                              ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens")):
                if isinstance(usage.get(key), int):
                    attrs[name] = usage[key]
        if record.get("prompt_version"):
            attrs["chat.prompt_version"] = record["prompt_version"]
        if record.get("cost_usd") is not None:
            attrs["chat.cost_usd"] = float(record["cost_usd"])
        end = time.time_ns()
        start = end - int(float(record.get("latency_ms") or 0.0) * 1e6)
        span = self.tracer.start_span(f"chat {model}" if model else "chat", kind=SpanKind.CLIENT,
                                      start_time=start, attributes=attrs)
        if record.get("error"):
            span.set_attribute("error.type", "responder_error")
            span.set_status(Status(StatusCode.ERROR, str(record["error"])[:200]))
        span.end(end_time=end)

    def health(self) -> dict:
        exported, failed, last_error = self.exporter.counts()
        return {"endpoint": display_url(self.endpoint), "exported": exported, "failed": failed,
                "last_error": last_error}

    def shutdown(self) -> None:
        self.provider.shutdown()
