"""Plot µs per request, per variant and workload, from bench_request.py's JSON.

    python bench/plot.py [--json bench/results.json] [--server-json bench/results_server.json]
                         [--png bench/results.png]

One panel per workload (one GET, 10 GETs, a pipeline of 20 SETs, a view not using
Redis), one bar per row of the comparison (Pyramid without Redis, the redis-py
baseline, pyramid_redisx in three set-ups, the pyramid_redis peer, websauna-style),
each labelled with its µs and its ratio to the baseline; and, from bench_server.py's
JSON when there is one, a last panel of requests per second under waitress (8 threads),
each labelled with its ratio to the bare client in the same app shape. matplotlib is a
bench-only extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# bench_server.py's apps in the waitress panel, with their labels there
SERVER_ROWS = {
    "no_redis": "no Redis (plain Pyramid)",
    "bare": "redis-py, plain app",
    "bare_extras": "redis-py, same app shape",
    "redisx": "pyramid_redisx",
    "websauna": "websauna-style per call",
}


def plot_server(ax: Any, server: dict[str, Any], colours: Any) -> None:
    """Requests per second under waitress, each with its ratio to ``bare_extras``."""
    throughput = server["throughput"]
    present = [name for name in SERVER_ROWS if name in throughput]
    values = [throughput[name]["rps_median"] for name in present]
    base = throughput["bare_extras"]["rps_median"]
    bars = ax.barh(range(len(present)), values, color=[colours[i] for i in range(len(present))])
    for bar, value in zip(bars, values, strict=True):
        ax.text(
            bar.get_width(), bar.get_y() + bar.get_height() / 2,
            f" {value:.0f} ×{value / base:.2f}", va="center", fontsize=8,
        )  # fmt: skip
    ax.set_title("waitress, 8 threads: req/s\n(× redis-py, same app shape)", fontsize=10)
    ax.set_xlabel("req/s (median of rounds)")
    ax.set_xlim(0, max(values) * 1.45)
    ax.set_yticks(range(len(present)))
    ax.set_yticklabels([SERVER_ROWS[name] for name in present], fontsize=8)
    ax.set_ylim(len(present) - 0.5, -0.5)


def plot(results: dict[str, Any], png: Path, server: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix: dict[str, dict[str, Any]] = results["comparisons"]["matrix"]
    workloads = results["workloads"]
    rows = list(matrix)
    panels = len(workloads) + (server is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels + 1.0 * (server is not None), 4.6))
    colours = plt.get_cmap("tab10").colors
    if server is not None:
        plot_server(axes[-1], server, colours)
        axes = axes[:-1]
    for ax, (workload, title) in zip(axes, workloads.items(), strict=True):
        present = [row for row in rows if workload in matrix[row]]
        values = [matrix[row][workload]["median_us"] for row in present]
        ratios = [matrix[row][workload]["ratio"] for row in present]
        positions = [rows.index(row) for row in present]  # same row, same place
        bars = ax.barh(positions, values, color=[colours[rows.index(row)] for row in present])
        for bar, value, ratio in zip(bars, values, ratios, strict=True):
            ax.text(
                bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f" {value:.0f} µs ×{ratio:.2f}", va="center", fontsize=8,
            )  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("µs per request (median)")
        ax.set_xlim(0, max(values) * 1.45)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows if ax is axes[0] else [""] * len(rows), fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
    about = results["machine"]
    fig.suptitle(
        f"In-process WSGI{' and waitress' if server is not None else ''}, {about['nproc']} vCPU, Python {about['python']}, "
        f"redis-py {about['redis_py']}, Pyramid {about['pyramid']}, "
        f"{about['server']} {about['server_version']} on loopback "
        f"(pyramid_redisx {about['pyramid_redisx_commit']})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(HERE / "results.json"))
    parser.add_argument("--server-json", default=str(HERE / "results_server.json"))
    parser.add_argument("--png", default=str(HERE / "results.png"))
    args = parser.parse_args(argv)
    server_json = Path(args.server_json)
    server = json.loads(server_json.read_text()) if server_json.exists() else None
    if server is not None and "bare_extras" not in server.get("throughput", {}):
        server = None  # an older run without the same-shape baseline
    plot(json.loads(Path(args.json).read_text()), Path(args.png), server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
