"""Benchmark: three Redis outages under load, with and without the circuit breaker.

    python bench/bench_outages.py [--down S] [--pin] [--json PATH]

For each outage (SIGKILL then a restart, SIGSTOP, a black hole; ``--down`` seconds,
default 10) and each server (waitress 8 threads; gunicorn 2 workers x 4 threads, no
``--preload``), the same run twice in the same invocation, the breaker on
(``breaker_failures = 5``, the default) and off (``0``), in alternating order. Each run
is ``tests/reliability/outages.run_outage``: ``wrk`` on a view that never touches Redis,
an open-loop client on a plain view, a fail-soft view, a write view and that Redis-free
view (docs/outages.rst has the method). Writes ``bench/results_outages.json`` (the
figures and, per run, p99 latency per 250 ms through the outage, for
``bench/plot_outages.py``). ~5 min. Needs ``wrk`` (scripts/system-deps.sh).

``--pin``: the app server runs on a CPU of its own and everything else (wrk, the
open-loop client, Redis) on the others, as when the load comes from another machine. On
a 2-core machine the server then has one core, and the load cannot take it from it: the
ratios and latencies are the server's own, not the scheduler's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.reliability: the driver the tests use

from tests.reliability.outage_app import SETTINGS  # noqa: E402
from tests.reliability.outages import (  # noqa: E402
    COOLDOWN,
    RATES,
    WORST_CASE,
    figures,
    pinned,
    run_outage,
    timeline,
    wrk_available,
)


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout

    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "modified": bool(git("status", "--porcelain", "--", "pyramid_redisx").strip()),
        "load_average_at_start": [round(x, 2) for x in load],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--down", type=float, default=10.0)
    parser.add_argument("--json", default=str(HERE / "results_outages.json"))
    parser.add_argument(
        "--pin", action="store_true",
        help="the app server on a CPU of its own, the load (wrk, the open-loop client, "
        "Redis) on the others: as if the load came from another machine",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not wrk_available():
        print("bench_outages: needs wrk (scripts/system-deps.sh installs it)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "machine": machine(), "settings": SETTINGS, "cooldown_s": COOLDOWN,
        "worst_case_s": WORST_CASE, "rates": RATES, "down_s": args.down,
        "pinned": [sorted(cpus) for cpus in split] if (split := pinned()) and args.pin else None,
        "runs": [],
    }  # fmt: skip
    order = True
    with tempfile.TemporaryDirectory() as workdir:
        for outage in ("kill", "stop", "blackhole"):
            for server in ("waitress", "gunicorn"):
                for breaker in (order, not order):  # alternate which goes first
                    started = time.monotonic()
                    run = run_outage(outage, server, breaker, Path(workdir), down=args.down,
                                     pin=args.pin)  # fmt: skip
                    found = figures(run)
                    found["timeline"] = timeline(run)
                    found["seconds"] = round(time.monotonic() - started, 1)
                    results["runs"].append(found)
                    print(f"{outage:<9} {server:<8} breaker={'on ' if breaker else 'off'} "
                          f"free x{found['free_ratio']:<6} plain open p50/p99 "
                          f"{found['plain_open']['p50_ms']}/{found['plain_open']['p99_ms']} ms "
                          f"soft {found['soft_open']['p50_ms']}/{found['soft_open']['p99_ms']} ms "
                          f"first success +{found['first_success_after_back_s']} s "
                          f"max {found['max_request_s']} s twice {found['writes_applied_twice']} "
                          f"lost {found['writes_acknowledged_lost']}", flush=True)  # fmt: skip
                order = not order
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
