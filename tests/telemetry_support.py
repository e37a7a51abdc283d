"""OpenTelemetry SDK providers for the telemetry tests: in-memory span exporter and
metric reader, installed once per process (the API accepts one global provider)."""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_PROVIDERS: list[Any] = []


class Otel:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        trace.set_tracer_provider(self.tracer_provider)
        metrics.set_meter_provider(self.meter_provider)
        self.tracer = trace.get_tracer("tests.app")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def redis_spans(self) -> list[ReadableSpan]:
        """Spans of Redis commands: ours and opentelemetry-instrumentation-redis's."""
        return [
            s
            for s in self.spans()
            if s.instrumentation_scope is not None
            and s.instrumentation_scope.name
            in ("pyramid_redisx", "opentelemetry.instrumentation.redis")
        ]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of metric ``name`` now (observables are read)."""
        found = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
        return found

    def value(self, name: str, **attributes: Any) -> float:
        """Sum (counters, gauges) or count (histograms) of the points matching ``attributes``."""
        total = 0.0
        for attrs, point in self.points(name):
            if all(attrs.get(k.replace("__", ".")) == v for k, v in attributes.items()):
                total += point.count if hasattr(point, "count") else point.value
        return total


def otel() -> Otel:
    if not _PROVIDERS:
        _PROVIDERS.append(Otel())
    otel: Otel = _PROVIDERS[0]
    otel.exporter.clear()
    return otel
