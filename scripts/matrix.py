"""make test-matrix: the tests of every replaced redis-py internal on each redis-py minor of
the supported range and on the newest release, across Pyramid 1.10.8, 2.0 and 2.1, with
and without hiredis. Writes a table (cells × pass/fail × seconds) to stdout and to
matrix/results.md. docs/compatibility.rst explains the cells and the policy.

Each cell is a venv made with uv: the lock of its Pyramid (requirements/*.txt) minus
redis, pyramid and hiredis, plus the cell's versions of those (newest patch of each
minor, resolved from the index when the matrix runs). Exit status: 1 when a cell inside
the supported range fails; the newest release outside the range is reported (loudly) but
never fails the run: the locks keep `make test` on the tested versions.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "matrix"
RANGE_FILE = ROOT / "pyramid_redisx" / "redis_py.py"

# What exercises every replaced or read redis-py internal (redis_py.INTERNALS): the
# write-safe retries, pipelines and MULTI/EXEC, the request's connection and the pool
# hooks, asyncio, the stats line's pool figures, the guard itself.
CORE = [
    "tests/test_write_safety.py",
    "tests/test_request_connection.py",
    "tests/test_lifecycle.py",
    "tests/test_request.py",
    "tests/test_stats.py",
    "tests/test_pool_options.py",
    "tests/test_aio.py",
    "tests/test_redis_py.py",
    "tests/test_ownership.py",  # WATCH, the reconnect guard, error replies, idle closes
    "tests/test_breaker.py",  # the retry loop's gate, redis-py's error replies
    "tests/test_aio_breaker.py",  # the asyncio retry loop written out (8.1 and 8.2)
    "tests/test_pubsub.py",  # PubSub._execute with redis-py's default policy
    "tests/test_cluster_pipeline_rule.py",  # redis-py 8.2's _UNANSWERED, 8.1's None
]
# A memory test of 20,000 pipelines (a minute on a busy 2-core machine): the lifetime
# of our pipeline objects, whatever redis-py's version; `make test` runs it.
SKIP = ["--deselect", "tests/test_lifecycle.py::test_executed_pipelines_are_not_kept_alive"]
# Sentinel and Cluster (sync and asyncio) on real servers: their own replaced loops.
TOPOLOGY = ["tests/topology"]
NOT_ON_110 = "not browser and not packaging and not docs"


@dataclass
class Cell:
    name: str
    redis: str  # a version, or "newest"
    pyramid: str  # "1.10.8", "2.0", "2.1"
    hiredis: bool
    topology: bool = False
    mypy: bool = False
    # filled in by run()
    version: str = ""
    in_range: bool = True
    result: str = ""
    counts: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def cells(minors: list[str]) -> list[Cell]:
    """A covering design, not the cross product: every pair of (redis-py minor, Pyramid),
    (redis-py minor, hiredis) and (Pyramid, hiredis) appears; Sentinel/Cluster and mypy run
    once per redis-py minor (on Pyramid 2.1: they do not depend on Pyramid)."""
    low, high = minors[0], minors[-1]
    return [
        Cell("a", low, "2.1", True, topology=True, mypy=True),
        Cell("b", high, "2.1", False, topology=True, mypy=True),
        Cell("c", low, "2.0", False),
        Cell("d", high, "2.0", True),
        Cell("e", low, "1.10.8", False),
        Cell("f", high, "1.10.8", True),
    ]


def sh(
    *command: str, env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def newest(uv: str, index: str, requirement: str) -> str:
    """The version the index resolves ``requirement`` to now (uv, PyPI by default)."""
    done = subprocess.run(
        [uv, "pip", "compile", "-q", "--no-config", "--index-url", index, "--no-deps",
         "--python-version", "3.11", "--no-header", "--no-annotate", "-"],
        input=requirement + "\n", capture_output=True, text=True, cwd=ROOT, timeout=300,
        check=False,
    )  # fmt: skip
    name = re.split(r"[<>=!~ ]", requirement)[0].lower()
    for line in done.stdout.splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit(f"matrix: cannot resolve {requirement!r}: {done.stderr.strip()}")


def supported_range() -> tuple[tuple[int, int], tuple[int, int], str]:
    text = RANGE_FILE.read_text()
    low = tuple(map(int, re.search(r"TESTED_FROM = \((\d+), (\d+)\)", text).groups()))  # type: ignore[union-attr]
    high = tuple(map(int, re.search(r"TESTED_BELOW = \((\d+), (\d+)\)", text).groups()))  # type: ignore[union-attr]
    spec = re.search(r'RANGE = "([^"]+)"', text).group(1)  # type: ignore[union-attr]
    return low, high, spec  # type: ignore[return-value]


def pins(lock: Path, without: set[str]) -> list[str]:
    """``name==version`` of a lock, less ``without`` (hashes dropped: the cell varies)."""
    found = []
    for line in lock.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if pin and pin.group(1).lower() not in without:
            found.append(f"{pin.group(1)}=={pin.group(2)}")
    return found


def build(cell: Cell, uv: str, index: str, python: str, pyramid_version: str) -> Path:
    venv = OUT / "venvs" / cell.name
    shutil.rmtree(venv, ignore_errors=True)
    flags = ["--no-config", "--index-url", index]
    done = sh(uv, "venv", "-q", *flags, "--python", python, str(venv))
    if done.returncode:
        raise RuntimeError(done.stderr)
    lock = (
        ROOT / "requirements" / ("pyramid110.txt" if cell.pyramid == "1.10.8" else "pyramid2.txt")
    )
    wanted = pins(lock, {"redis", "pyramid", "hiredis"})
    wanted += [f"redis=={cell.version}", f"pyramid=={pyramid_version}"]
    if cell.hiredis:
        wanted += [p for p in pins(lock, set()) if p.lower().startswith("hiredis==")]
    requirements = OUT / f"{cell.name}.txt"
    requirements.write_text("\n".join(wanted) + "\n")
    overrides = OUT / f"{cell.name}.overrides.txt"  # the cell's versions win over any cap
    overrides.write_text(f"redis=={cell.version}\npyramid=={pyramid_version}\n")
    python_in = str(venv / "bin" / "python")
    for command in (
        [uv, "pip", "install", "-q", *flags, "--python", python_in, "-r", str(requirements),
         "--override", str(overrides)],
        [uv, "pip", "install", "-q", *flags, "--python", python_in, "--no-deps",
         "--no-build-isolation", "-e", "."],
    ):  # fmt: skip
        done = sh(*command)
        if done.returncode:
            raise RuntimeError(done.stderr.strip()[-2000:])
    return venv


def summary(output: str) -> tuple[int, int]:
    """(passed, failed + errors) from pytest's closing line."""
    tail = output.strip().splitlines()[-1] if output.strip() else ""
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = sum(int(n) for n in re.findall(r"(\d+) (?:failed|errors?)\b", tail))
    return passed, failed


def run(cell: Cell, uv: str, index: str, python: str, pyramid_version: str) -> None:
    started = time.perf_counter()
    try:
        venv = build(cell, uv, index, python, pyramid_version)
    except RuntimeError as exc:
        cell.result, cell.counts = "FAIL", "install failed"
        cell.notes.append(str(exc).splitlines()[-1] if str(exc) else "install failed")
        cell.seconds = time.perf_counter() - started
        return
    bin_ = venv / "bin"
    env = {**os.environ}
    env.pop(GUARD_ENV, None)
    installed = sh(str(bin_ / "python"), "-c", "import redis, hiredis" if cell.hiredis else
                   "import redis, importlib.util as u; assert u.find_spec('hiredis') is None",
                   env=env)  # fmt: skip
    if installed.returncode:
        cell.notes.append("hiredis state wrong: " + installed.stderr.strip().splitlines()[-1])
    ok = installed.returncode == 0
    if not cell.in_range:
        # The guard must refuse it; the suite then runs with the override to show what breaks.
        guard = sh(str(bin_ / "python"), "-c",
                   "from pyramid_redisx import redis_py; redis_py.check()", env=env)  # fmt: skip
        refusal = (guard.stderr.strip().splitlines() or ["(no message)"])[-1]
        refusal = refusal.split(": ", 1)[-1]
        if guard.returncode == 0:
            cell.notes.append("the guard did NOT refuse it")
            ok = False
        elif "cannot run on" in refusal:  # its internals differ: no setting runs it
            cell.notes.append("guard refuses it, internals differ: " + refusal.split(": ", 1)[-1])
            cell.result, cell.counts = "refused", "suite not run: no setting overrides a mismatch"
            cell.seconds = time.perf_counter() - started
            return
        else:
            cell.notes.append("guard refuses it (version)")
        env[GUARD_ENV] = ".".join(cell.version.split(".")[:2])
    paths = CORE + (TOPOLOGY if cell.topology else [])
    marker = ["-m", NOT_ON_110] if cell.pyramid == "1.10.8" else []
    tests = sh(str(bin_ / "pytest"), "-q", "-p", "no:cacheprovider", *marker, *SKIP, *paths, env=env,
               timeout=1500)  # fmt: skip
    (OUT / f"{cell.name}.log").write_text(tests.stdout + tests.stderr)
    passed, failed = summary(tests.stdout)
    cell.counts = f"{passed} passed / {failed} failed"
    suite_ok = tests.returncode == 0 and passed > 0
    ids = re.findall(r"^(?:FAILED|ERROR) (\S+)", tests.stdout, re.M)
    if not suite_ok and passed and ids and len(ids) <= 3:
        # Timing tests on real servers can miss a deadline on a loaded machine: run the
        # failed ones once more, and report them whatever the outcome.
        again = sh(str(bin_ / "pytest"), "-q", "-p", "no:cacheprovider", *marker, *ids, env=env,
                   timeout=600)  # fmt: skip
        (OUT / f"{cell.name}.rerun.log").write_text(again.stdout + again.stderr)
        suite_ok = again.returncode == 0
        outcome = "passed" if suite_ok else "failed"
        cell.notes.append(f"failed, then {outcome} when run again: {', '.join(ids)}")
        cell.counts += f" ({len(ids)} {outcome} on a second run)"
    ok = ok and suite_ok
    if cell.mypy:
        typed = sh(str(bin_ / "mypy"), env=env)
        (OUT / f"{cell.name}.mypy.log").write_text(typed.stdout + typed.stderr)
        cell.counts += "; mypy " + ("clean" if typed.returncode == 0 else "FAILED")
        ok = ok and typed.returncode == 0
    cell.result = "pass" if ok else "FAIL"
    cell.seconds = time.perf_counter() - started


GUARD_ENV = "PYRAMID_REDISX_ALLOW_REDIS_PY"


def table(matrix: list[Cell]) -> str:
    rows = [
        "| cell | redis-py | Pyramid | hiredis | tests | result | counts | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in matrix:
        tests = "core" + (" + topology" if c.topology else "") + (" + mypy" if c.mypy else "")
        version = c.version + ("" if c.in_range else " (outside the range)")
        rows.append(
            f"| {c.name} | {version} | {c.pyramid} | {'yes' if c.hiredis else 'no'} | {tests} "
            f"| {c.result} | {c.counts} | {c.seconds:.0f} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uv", default=".venv-tools/bin/uv")
    parser.add_argument("--index-url", default="https://pypi.org/simple")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--newest", help="use this as the newest redis-py (rehearsal)")
    parser.add_argument("--only", help="cells to run, e.g. 'a,newest'")
    args = parser.parse_args()
    args.uv = str(Path(args.uv).resolve())
    started = time.perf_counter()
    OUT.mkdir(exist_ok=True)
    (low, high, spec) = supported_range()
    minors = [f"{low[0]}.{m}" for m in range(low[1], high[1])] if low[0] == high[0] else []
    if not minors:
        raise SystemExit(f"matrix: cannot list the minors of {spec}")
    patch = {
        m: newest(args.uv, args.index_url, f"redis>={m},<{low[0]}.{int(m.split('.')[1]) + 1}")
        for m in minors
    }
    latest = args.newest or newest(args.uv, args.index_url, "redis")
    pyramid = {
        "1.10.8": "1.10.8",
        "2.0": newest(args.uv, args.index_url, "pyramid>=2.0,<2.1"),
        "2.1": newest(args.uv, args.index_url, "pyramid>=2.1,<2.2"),
    }
    matrix = cells(minors)
    for cell in matrix:
        cell.version = patch[cell.redis]
    lines = [
        f"supported range: redis-py {spec} ({', '.join(patch.values())}); newest on the index: {latest}"
    ]
    in_range = low <= tuple(int(n) for n in re.findall(r"\d+", latest)[:2]) < high  # type: ignore[operator]
    if latest in patch.values():
        lines.append(f"newest redis-py {latest} is inside the range: the {latest} cells cover it")
    else:
        matrix.append(Cell("newest", "newest", "2.1", True, topology=True, mypy=True,
                           version=latest, in_range=in_range))  # fmt: skip
    if args.only:
        matrix = [c for c in matrix if c.name in args.only.split(",")]
    for cell in matrix:
        print(f"matrix: cell {cell.name}: redis {cell.version}, Pyramid {pyramid[cell.pyramid]}, "
              f"hiredis {'yes' if cell.hiredis else 'no'} ...", flush=True)  # fmt: skip
        run(cell, args.uv, args.index_url, args.python, pyramid[cell.pyramid])
        print(
            f"matrix: cell {cell.name}: {cell.result} ({cell.counts}) in {cell.seconds:.0f} s",
            flush=True,
        )
        cell.pyramid = pyramid[cell.pyramid]
    for cell in matrix:
        if cell.name == "newest" and not cell.in_range:
            suite = (
                cell.counts
                if cell.result == "refused"
                else f"suite with the override ({GUARD_ENV}): {cell.counts}"
            )
            lines.append(
                f"!!! redis {cell.version}: outside the supported range {spec}; "
                + "; ".join(cell.notes)
                + f"; {suite}. Not a CI failure (the locks keep make test on the tested "
                "versions): see docs/compatibility.rst, 'A new redis-py minor'."
            )
        elif cell.notes:
            lines.append(f"cell {cell.name}: " + "; ".join(cell.notes))
    failed = [c.name for c in matrix if c.result != "pass" and c.in_range]
    inside = [c for c in matrix if c.in_range]
    lines.append(
        f"matrix: {len(inside) - len(failed)} of {len(inside)} cells inside the range passed"
        + (f"; FAILED inside the supported range: {', '.join(failed)}" if failed else "")
        + f"; {time.perf_counter() - started:.0f} s in all"
    )
    report = table(matrix) + "\n\n" + "\n".join(lines) + "\n"
    (OUT / "results.md").write_text(report)
    print("\n" + report + f"(also in {OUT.relative_to(ROOT)}/results.md; logs beside it)")
    shutil.rmtree(OUT / "venvs", ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
