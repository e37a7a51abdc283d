"""Plot: latency over time through an outage, with and without the circuit breaker.

    python bench/plot_outages.py [--json bench/results_outages.json] [--png bench/results_outages.png] [--table bench/outages_table.rst]

Also writes the figures as an RST table for docs/outages.rst.

One panel per outage and server; per 250 ms from the start of the outage, the p99
latency of the view that never touches Redis and of the plain view, breaker on (solid)
and off (dashed). The outage is shaded. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
TITLES = {"kill": "SIGKILL, restarted", "stop": "SIGSTOP", "blackhole": "black hole"}
SERIES = (("/free", "view without Redis", "tab:green"), ("/plain", "plain view", "tab:red"),
          ("/soft", "fail-soft view", "tab:blue"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=str(HERE / "results_outages.json"))
    parser.add_argument("--png", default=str(HERE / "results_outages.png"))
    parser.add_argument("--table", default=str(HERE / "outages_table.rst"))
    args = parser.parse_args(argv)
    results = json.loads(Path(args.json).read_text())
    outages = ["kill", "stop", "blackhole"]
    servers = ["waitress", "gunicorn"]
    figure, axes = plt.subplots(len(outages), len(servers), figsize=(13, 10), sharex=True,
                                sharey=True, squeeze=False)  # fmt: skip
    for row, outage in enumerate(outages):
        for column, server in enumerate(servers):
            axis = axes[row][column]
            down = None
            for run in results["runs"]:
                if run["outage"] != outage or run["server"] != server:
                    continue
                down = run["down_s"]
                line = "-" if run["breaker"] else "--"
                t = run["timeline"]["t"]
                for path, label, colour in SERIES:
                    if path == "/soft" and not run["breaker"]:
                        continue  # without the breaker it waits as the plain view does
                    values = [v if v is not None else float("nan") for v in run["timeline"][path]]
                    axis.plot(t, values, line, color=colour, linewidth=1.2,
                              label=f"{label}, breaker {'on' if run['breaker'] else 'off'}")  # fmt: skip
            if down is not None:
                axis.axvspan(0, down, color="0.9", zorder=0)
            axis.set_yscale("log")
            axis.set_title(f"{TITLES[outage]} ({server})", fontsize=10)
            axis.grid(True, which="major", alpha=0.3)
            if column == 0:
                axis.set_ylabel("p99 latency per 250 ms (ms)")
            if row == len(outages) - 1:
                axis.set_xlabel("seconds from the start of the outage (shaded)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=3, fontsize=9)
    machine = results["machine"]
    figure.text(0.5, 0.005, f"pyramid_redisx {machine['commit']}, {machine['cpus']} CPUs, "
                f"load average {machine['load_average_at_start'][0]} at start; "
                f"socket_timeout 0.5 s, breaker_failures 5, breaker_cooldown {results['cooldown_s']} s",
                ha="center", fontsize=8)  # fmt: skip
    figure.tight_layout(rect=(0, 0.02, 1, 0.93))
    figure.savefig(args.png, dpi=110)
    Path(args.table).write_text(table(results))
    print(f"wrote {args.png} and {args.table}")
    return 0


def _pair(spread: dict[str, object]) -> str:
    return f"{spread['p50_ms']} / {spread['p99_ms']}" if spread.get("n") else "-"


def table(results: dict[str, object]) -> str:
    """The figures as an RST table (docs/outages.rst includes it)."""
    machine = results["machine"]  # type: ignore[index]
    rows = []
    for run in sorted(results["runs"], key=lambda r: (  # type: ignore[index]
            ["kill", "stop", "blackhole"].index(r["outage"]), r["server"], not r["breaker"])):  # fmt: skip
        rows.append([
            TITLES[run["outage"]], run["server"], "on" if run["breaker"] else "off",
            f"{run['free_rps_healthy']:.0f} → {run['free_rps_outage']:.0f} (×{run['free_ratio']:.2f})",
            _pair(run["plain_open"]), _pair(run["soft_open"]),
            f"{run['first_success_after_back_s']}", f"{run['max_request_s']}",
            f"{len(run['writes_applied_twice'])} / {len(run['writes_acknowledged_lost'])}",
        ])  # fmt: skip
    head = ["outage", "server", "breaker", "view without Redis, req/s: healthy → outage",
            "plain view p50 / p99 ms (while open)", "fail-soft view p50 / p99 ms",
            "first success after Redis is back (s)", "longest request (s)",
            "writes applied twice / acknowledged and lost"]  # fmt: skip
    lines = [
        f".. Generated by bench/plot_outages.py from bench/results_outages.json "
        f"(commit {machine['commit']}).",  # type: ignore[index]
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
    ]
    for row in [head, *rows]:
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {cell}" for cell in row[1:]]
    lines += ["", f"Machine: {machine['cpus']} CPUs, load average {machine['load_average_at_start'][0]} "  # type: ignore[index]
              "at the start (other jobs ran beside it); without the breaker \"while open\" "
              "means the whole outage after its first failure.", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
