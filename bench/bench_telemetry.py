"""Benchmark: the cost of telemetry (issue 28) per command and per request, beside the cost
of opentelemetry-instrumentation-redis alone on bare redis-py, in the same run.

    python bench/bench_telemetry.py [--rounds N] [--block N] [--warmup N] [--json PATH]

The harness of bench_request.py (in-process WSGI calls, variants taking turns in blocks,
a new random order each round, medians), the same app shape (a reified request property
and a NewResponse subscriber). OpenTelemetry's SDK is installed with a tracer provider
that keeps no span (no processor: spans are made, recorded and ended, nothing exported)
and a meter provider whose in-memory reader is never read: what is measured is what the
request path pays, not an exporter. The instrumentation is switched on and off between
blocks (outside the timing) for the variants that ask for it.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_request as harness  # noqa: E402

from pyramid_redisx.testing import RedisServer  # noqa: E402

INSTRUMENTOR = RedisInstrumentor()
TRACER_PROVIDER = TracerProvider()


class Variant(harness.Variant):
    def __init__(self, key: str, label: str, app: Any, instrumented: bool) -> None:
        super().__init__(key, label, app)
        self.instrumented = instrumented

    def prepare(self) -> None:
        super().prepare()
        if self.instrumented != INSTRUMENTOR.is_instrumented_by_opentelemetry:
            if self.instrumented:
                INSTRUMENTOR.instrument(tracer_provider=TRACER_PROVIDER)
            else:
                INSTRUMENTOR.uninstrument()


def build_variants(url: str, port: int) -> dict[str, Variant]:
    pool_args = {"host": "127.0.0.1", "port": port, "max_connections": 32, "timeout": 5,
                 "socket_timeout": 2, "socket_connect_timeout": 2}  # fmt: skip
    harness.BARE = harness.redis.Redis(
        connection_pool=harness.redis.BlockingConnectionPool(**pool_args)
    )  # type: ignore[arg-type]
    off = {"redis.url": url, "redis.stats": "false"}
    otel = {**off, "redis.tracing": "true", "redis.metrics": "true"}
    spans = {**off, "redis.tracing": "true"}
    prom = {**off, "redis.metrics_route": "/metrics"}
    one, ten = harness.redisx_get_view, harness.redisx_get10_view
    specs = [
        ("A", "bare GET", harness.bare_get_view, None, False),
        ("A10", "bare 10 GETs", harness.bare_get10_view, None, False),
        ("I", "bare GET + opentelemetry-instrumentation-redis", harness.bare_get_view, None, True),
        ("I10", "bare 10 GETs + the instrumentation", harness.bare_get10_view, None, True),
        ("B", "redisx GET, telemetry off", one, off, False),
        ("B_twin", "B's twin: same code, its own app", one, off, False),
        ("B10", "redisx 10 GETs, telemetry off", ten, off, False),
        ("S", "redisx GET, tracing only (our spans)", one, spans, False),
        ("S10", "redisx 10 GETs, tracing only", ten, spans, False),
        ("T", "redisx GET, tracing + OTel metrics", one, otel, False),
        ("T10", "redisx 10 GETs, tracing + OTel metrics", ten, otel, False),
        ("TI", "T + the instrumentation (its spans, our attributes)", one, otel, True),
        ("TI10", "T10 + the instrumentation", ten, otel, True),
        ("P", "redisx GET, Prometheus metrics", one, prom, False),
        ("P10", "redisx 10 GETs, Prometheus metrics", ten, prom, False),
    ]  # fmt: skip
    variants = {}
    for key, label, view, settings, instrumented in specs:
        app = harness.make_app(view, extras=True, redisx=settings)
        variants[key] = Variant(key, label, app, instrumented)
    return variants


UNITS = (
    ("A", "I", "B", "B_twin", "S", "T", "TI", "P"),
    ("A10", "I10", "B10", "S10", "T10", "TI10", "P10"),
)


def figures(variants: dict[str, Variant], cpu: bool = False) -> dict[str, Any]:
    """Costs from the wall-clock medians, or (``cpu``) from the thread's CPU time, which
    leaves out the waits for the server and the time other processes took the CPU."""

    def med(key: str) -> float:
        v = variants[key]
        return statistics.median(v.cpu_samples if cpu else v.samples) / 1000

    def rounds(key: str) -> list[float]:
        v = variants[key]
        return v.cpu_block_medians if cpu else v.block_medians

    def per_round(plus: list[str], minus: list[str], scale: float = 1.0) -> dict[str, float]:
        diffs = [
            (sum(values[: len(plus)]) - sum(values[len(plus) :])) / 1000 / scale
            for values in zip(*(rounds(k) for k in plus + minus), strict=True)
        ]
        q1, q2, q3 = statistics.quantiles(diffs, n=4)
        return {"median_us": q2, "p25_us": q1, "p75_us": q3}

    def cost(on: str, off: str) -> dict[str, Any]:
        """Per request (one GET) and per further command (ten GETs less one, over 9)."""
        return {
            "per_request_us": med(on) - med(off),
            "per_request_rounds": per_round([on], [off]),
            "per_command_us": ((med(on + "10") - med(on)) - (med(off + "10") - med(off))) / 9,
            "per_command_rounds": per_round([on + "10", off], [on, off + "10"], 9),
        }

    result = {
        "instrumentation alone (I - A)": cost("I", "A"),
        "pyramid_redisx tracing only (S - B)": cost("S", "B"),
        "pyramid_redisx tracing + metrics (T - B)": cost("T", "B"),
        "both (TI - B)": cost("TI", "B"),
        "Prometheus (P - B)": cost("P", "B"),
        "noise: B_twin - B": {
            "per_request_us": med("B_twin") - med("B"),
            "per_request_rounds": per_round(["B_twin"], ["B"]),
        },
        "telemetry off over bare (B - A)": {
            "per_request_us": med("B") - med("A"),
            "per_request_rounds": per_round(["B"], ["A"]),
        },
    }
    alone = result["instrumentation alone (I - A)"]
    result["target"] = {
        name: {
            "per_request_met": result[name]["per_request_us"] <= alone["per_request_us"],
            "per_command_met": result[name]["per_command_us"] <= alone["per_command_us"],
        }
        for name in (
            "pyramid_redisx tracing only (S - B)",
            "pyramid_redisx tracing + metrics (T - B)",
        )
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--block", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", default=str(HERE / "results_telemetry.json"))
    args = parser.parse_args(argv)
    trace.set_tracer_provider(TRACER_PROVIDER)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    server = RedisServer().start()
    try:
        with server.client() as client:
            client.set(harness.KEY, harness.VALUE)
        variants = build_variants(server.url, server.port)
        for variant in variants.values():  # every variant answers with the value
            variant.prepare()
            if variant.call_once() != harness.VALUE:
                raise SystemExit(f"variant {variant.key}: unexpected body")
        gc.collect()
        gc.freeze()
        about = harness.machine(server)
        started = time.perf_counter()
        units = [[variants[k] for k in unit] for unit in UNITS]
        rng = harness.random.Random()
        for _ in range(args.rounds):
            rng.shuffle(units)
            for unit in units:
                rng.shuffle(unit)
                for variant in unit:
                    variant.run_block(args.block, args.warmup)
        seconds = time.perf_counter() - started
    finally:
        INSTRUMENTOR.uninstrument()
        server.cleanup()
    result = figures(variants)
    cpu_result = figures(variants, cpu=True)
    print(f"\n{about['nproc']} CPUs, Python {about['python']}, redis-py {about['redis_py']}, "
          f"{about['server']} {about['server_version']}; {seconds:.0f} s")  # fmt: skip
    for key, variant in variants.items():
        print(f"  {key:<7}{variant.label:<54}{statistics.median(variant.samples) / 1000:>8.1f} µs")
    for title, table in (("wall clock", result), ("thread CPU time", cpu_result)):
        print(
            f"\n{title}: {'cost':<32}{'per request':>14}{'per command':>14}   (request: paired rounds p25..p75)"
        )
        for name, r in table.items():
            if name == "target":
                continue
            rounds = r["per_request_rounds"]
            command = f"{r['per_command_us']:>+12.2f}µs" if "per_command_us" in r else f"{'':>14}"
            print(f"{name:<44}{r['per_request_us']:>+12.2f}µs{command}   "
                  f"{rounds['p25_us']:+.1f}..{rounds['p75_us']:+.1f}")  # fmt: skip
        print(f"target (ours <= the instrumentation alone): {table['target']}")
    output = {
        "machine": about,
        "method": {"rounds": args.rounds, "block": args.block, "warmup_per_block": args.warmup,
                   "units": [list(u) for u in UNITS], "seconds": round(seconds, 1)},
        "variants": {k: {"label": v.label, **harness.summary(v.samples)} for k, v in variants.items()},
        "costs": result,
        "costs_cpu": cpu_result,
    }  # fmt: skip
    Path(args.json).write_text(json.dumps(output, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
