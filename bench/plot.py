"""Plot µs per request, per variant and workload, from bench_request.py's JSON.

    python bench/plot.py [--json bench/results.json] [--png bench/results.png]

One panel per workload (one GET, 10 GETs, a pipeline of 20 SETs, a view not using
Redis), one bar per row of the comparison (Pyramid without Redis, the redis-py
baseline, pyramid_redisx in three set-ups, the pyramid_redis peer, websauna-style),
each labelled with its µs and its ratio to the baseline. matplotlib is a bench-only
extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def plot(results: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix: dict[str, dict[str, Any]] = results["comparisons"]["matrix"]
    workloads = results["workloads"]
    rows = list(matrix)
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 4.6))
    colours = plt.get_cmap("tab10").colors
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
        f"In-process WSGI, {about['nproc']} vCPU, Python {about['python']}, "
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
    parser.add_argument("--png", default=str(HERE / "results.png"))
    args = parser.parse_args(argv)
    plot(json.loads(Path(args.json).read_text()), Path(args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
