"""Observability shared by router and tiers: a /metrics server, an OTel tracer, structured logs.

Everything here is set up from config in `__main__` (or by a test) and passed
down; nothing is read at import time. Tracing is off unless an OTLP endpoint
(or, in tests, a span exporter) is given: the telemetry objects then hold no
tracer and create no spans.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Literal

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, start_http_server
from pydantic import BaseModel, ConfigDict, Field

# Latency buckets (seconds) fit for a CPU tier and a GPU tier alike: 5 ms to 60 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)

LogFormat = Literal["auto", "json", "console"]


class ObservabilityConfig(BaseModel):
    """Router settings (the `observability:` block of mesh.yaml); tiers take the same as flags."""

    model_config = ConfigDict(extra="forbid")

    metrics_host: str = Field("127.0.0.1", description="address /metrics listens on")
    metrics_port: int | None = Field(None, ge=0, description="port of /metrics (0 = any free port; unset = off)")
    otlp_endpoint: str | None = Field(None, description="OTLP/gRPC collector, e.g. http://127.0.0.1:4317 (unset = no tracing)")
    log_prompts: bool = Field(False, description="put the prompt text in the per-request log line (debug only)")


# --- Metrics -----------------------------------------------------------------


def new_registry() -> CollectorRegistry:
    """A registry of one server's own (not the process-global one), with process/GC metrics."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@dataclass
class MetricsServer:
    """`/metrics` over HTTP in a daemon thread; `port` is the port it got."""

    port: int
    _httpd: object
    _thread: object

    def close(self) -> None:
        self._httpd.shutdown()  # type: ignore[attr-defined]
        self._httpd.server_close()  # type: ignore[attr-defined]


def start_metrics_server(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(port=httpd.server_port, _httpd=httpd, _thread=thread)


# --- Tracing -----------------------------------------------------------------


def tracer_provider(service_name: str, otlp_endpoint: str | None = None, exporter=None, **resource: str):
    """An SDK TracerProvider exporting to `otlp_endpoint` (OTLP/gRPC) or to `exporter`; None when neither.

    The provider is returned, not installed globally, so that several servers in
    one process (tests) each keep their own. Call `.shutdown()` on stop to flush.
    """
    if not otlp_endpoint and exporter is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name, **resource}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        otlp = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=not otlp_endpoint.startswith("https://"))
        provider.add_span_processor(BatchSpanProcessor(otlp))
    return provider


def _propagator():
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


class TraceContext:
    """W3C traceparent in gRPC metadata: inject on the way out, extract on the way in."""

    _propagator = None

    @classmethod
    def inject(cls, span) -> tuple[tuple[str, str], ...]:
        from opentelemetry import trace

        carrier: dict[str, str] = {}
        cls._get().inject(carrier, context=trace.set_span_in_context(span))
        return tuple(carrier.items())

    @classmethod
    def extract(cls, metadata: Iterable | None):
        """The parent context carried by incoming metadata (an empty context if none)."""
        carrier: Mapping[str, str] = {k: v for k, v in metadata or () if isinstance(v, str)}
        return cls._get().extract(carrier)

    @classmethod
    def _get(cls):
        if cls._propagator is None:
            cls._propagator = _propagator()
        return cls._propagator


# --- Logging -----------------------------------------------------------------

FIELDS_ATTR = "qarr"  # stdlib `extra={"qarr": {...}}` fields become top-level keys of the JSON line


def _add_extra_fields(logger, method_name, event_dict):
    record = event_dict.get("_record")
    fields = getattr(record, FIELDS_ATTR, None) if record is not None else None
    if fields:
        event_dict.update(fields)
    return event_dict


def configure_logging(
    fmt: LogFormat = "auto", level: str | int = "INFO", stream: IO[str] | None = None, fields: Mapping[str, object] | None = None
) -> logging.Handler:
    """Route all stdlib logging through structlog: one JSON object per line, or a readable console line.

    `auto` picks console on a TTY and JSON otherwise. `fields`: added to every line (a router
    worker's index). Returns the installed handler (tests remove it again).
    """
    import structlog

    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_extra_fields,
    ]
    if fields:
        shared.append(lambda logger, method_name, event_dict: {**event_dict, **fields})
    if fmt == "json":
        final = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        final = [structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", lambda: False)())]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[*shared[:3], structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return handler
