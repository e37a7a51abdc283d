"""A real run for the telemetry picture: gunicorn (4 workers, multiprocess Prometheus
metrics) under wrk, Redis stalled (SIGSTOP) for a few seconds in the middle, the add-on's
``/metrics`` scraped every half second; then what a dashboard would show, plotted.

    python bench/telemetry_outage.py [--seconds 30] [--outage-at 10] [--outage 5]
                                     [--json bench/results_outage.json]
                                     [--png docs/_static/telemetry-outage.png]

Needs Debian's ``wrk`` (scripts/system-deps.sh), gunicorn and matplotlib (the bench
extra). Panels: connections in use / idle / max (summed over the workers), threads
waiting for a connection and the requests' wait (p99), errors per second by kind,
command latency (p50/p99 from the histogram's buckets) and requests per second.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pyramid_redisx.testing import RedisServer, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP = "bench.telemetry_app:make_app()"


def scrape(port: int) -> list[Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Any], name: str, **labels: str) -> float:
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))  # fmt: skip


def buckets(samples: list[Any], name: str) -> dict[float, float]:
    found: dict[float, float] = {}
    for s in samples:
        if s.name == name + "_bucket":
            le = float(s.labels["le"])
            found[le] = found.get(le, 0.0) + s.value
    return found


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of the observations between two scrapes (upper bucket bound)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * total:
            return bound
    return bounds[-1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = RedisServer().start()
    directory = tempfile.mkdtemp(prefix="prometheus-")
    port = free_port()
    env = dict(os.environ, REDISX_BENCH_URL=server.url, PROMETHEUS_MULTIPROC_DIR=directory)
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "4", "--worker-class", "gthread",
         "--threads", "8", "--bind", f"127.0.0.1:{port}", "--chdir", str(ROOT),
         "--log-level", "warning", "--timeout", "60", APP],
        cwd=ROOT, env=env, start_new_session=True, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    series: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                scrape(port)
                break
            time.sleep(0.2)
        wrk = subprocess.Popen(
            ["wrk", "-t", "2", "-c", "32", "-d", f"{args.seconds}s", "--timeout", "10s",
             f"http://127.0.0.1:{port}/work"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        started = time.monotonic()
        stalled = threading.Event()

        def outage() -> None:
            time.sleep(args.outage_at)
            server.pause()
            stalled.set()
            time.sleep(args.outage)
            server.resume()
            stalled.clear()

        threading.Thread(target=outage, daemon=True).start()
        previous: dict[str, Any] | None = None
        while wrk.poll() is None:
            moment = time.monotonic() - started
            samples = scrape(port)
            point = {
                "t": round(moment, 2),
                "stalled": stalled.is_set(),
                "in_use": value(samples, "db_client_connection_count", db_client_connection_state="used"),
                "idle": value(samples, "db_client_connection_count", db_client_connection_state="idle"),
                "max": value(samples, "db_client_connection_max"),
                "pending": value(samples, "db_client_connection_pending_requests"),
                "requests": value(samples, "pyramid_redisx_request_commands_count"),
                "errors": {kind: value(samples, "pyramid_redisx_errors_total", pyramid_redisx_error_kind=kind)
                           for kind in ("timeout", "connection", "may_have_been_applied", "pool_exhausted", "error_reply")},
                "latency": buckets(samples, "db_client_operation_duration_seconds"),
                "wait": buckets(samples, "db_client_connection_wait_time_seconds"),
            }  # fmt: skip
            if previous is not None:
                dt = point["t"] - previous["t"]
                point["rps"] = (point["requests"] - previous["requests"]) / dt
                point["error_rate"] = {
                    k: (v - previous["errors"][k]) / dt for k, v in point["errors"].items()
                }
                point["p50"] = quantile(previous["latency"], point["latency"], 0.5)
                point["p99"] = quantile(previous["latency"], point["latency"], 0.99)
                point["wait_p99"] = quantile(previous["wait"], point["wait"], 0.99)  # fmt: skip
            series.append(point)
            previous = point
            time.sleep(args.interval)
        wrk_output = wrk.stdout.read() if wrk.stdout else ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(gunicorn.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            gunicorn.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(gunicorn.pid, signal.SIGKILL)
        server.resume()
        server.cleanup()
    for point in series:  # the raw buckets are not needed in the JSON
        point.pop("latency")
        point.pop("wait")
    return {
        "seconds": args.seconds, "outage_at": args.outage_at, "outage": args.outage,
        "outage_kind": "SIGSTOP of the Redis server", "wrk": wrk_output, "series": series,
        "setup": "gunicorn 4 gthread workers x 8 threads, max_connections 4 per worker, "
                 "socket_timeout 0.5 s, pool_timeout 1 s, retries 1; wrk -t2 -c32",
    }  # fmt: skip


def plot(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [p for p in result["series"] if "rps" in p]
    t = [p["t"] for p in series]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    start, end = result["outage_at"], result["outage_at"] + result["outage"]
    for ax in axes:
        ax.axvspan(start, end, color="tab:red", alpha=0.08, label="_outage")
        ax.grid(alpha=0.3)
    ax = axes[0]
    ax.plot(t, [p["in_use"] for p in series], label="in use")
    ax.plot(t, [p["idle"] for p in series], label="idle")
    ax.plot(t, [p["max"] for p in series], "--", color="grey", label="max (4 workers)")
    ax.set_ylabel("connections")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("pyramid_redisx under wrk, Redis stalled (SIGSTOP) in the shaded span")
    ax = axes[1]
    ax.plot(t, [p["pending"] for p in series], color="tab:purple", label="threads waiting")
    ax.set_ylabel("threads waiting")
    twin = ax.twinx()
    twin.plot(t, [(p["wait_p99"] or 0) * 1000 for p in series], color="tab:orange",
              label="request's wait p99 (ms)")  # fmt: skip
    twin.set_ylabel("wait p99 (ms)")
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    ax = axes[2]
    for kind in ("timeout", "connection", "pool_exhausted", "may_have_been_applied"):
        rates = [p["error_rate"][kind] for p in series]
        if any(rates):
            ax.plot(t, rates, label=kind)
    ax.set_ylabel("errors / s")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[3]
    ax.plot(t, [(p["p50"] or 0) * 1000 for p in series], label="command p50 (ms)")
    ax.plot(t, [(p["p99"] or 0) * 1000 for p in series], label="command p99 (ms)")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    twin = ax.twinx()
    twin.plot(t, [p["rps"] for p in series], color="tab:green", alpha=0.6, label="requests / s")
    twin.set_ylabel("requests / s")
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("seconds")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--outage-at", type=float, default=10.0)
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--json", default=str(HERE / "results_outage.json"))
    parser.add_argument("--png", default=str(ROOT / "docs" / "_static" / "telemetry-outage.png"))
    args = parser.parse_args(argv)
    result = run(args)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    plot(result, Path(args.png))
    print(result["wrk"])
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
