"""``make mutation``: mutmut on pyramid_redisx/, module by module, and the report.

    python mutation/run.py [MODULE ...]      # default: every module in tests_for_modules.toml
    python mutation/run.py --report-only     # re-render the report from mutation/results/

For each module, a work directory ``mutation/work/<module>/`` (not committed) gets a copy
of the package, the tests and a pyproject.toml whose ``[tool.mutmut]`` mutates that one
module and selects the test files mapped to it (``tests_for_modules.toml``). mutmut runs
there (its cache makes a rerun of unchanged code quick); its verdicts and the diffs of
the survivors go to ``mutation/results/<module>.json`` (committed), and every results
file, with the equivalent mutants of ``equivalent.toml`` applied, is rendered into
``docs/mutation-report.md``.

Written by hand because mutmut has no notion of per-module test maps, equivalent mutants
or a committed report; everything else (mutating, selecting tests per mutant, timeouts,
parallel children) is mutmut's.

Servers: a test starts real Redis servers in their own session. mutmut ends a mutant's
test run that outlives its timeout with SIGXCPU, and that run's servers would outlive it;
this process makes itself their subreaper, so they become its children, and stops them
(by pid) as soon as they are orphaned.

Topologies: a Sentinel set takes some 3 s to start and a cluster 4 s, which was most of a
topology mutant's test run. For a module whose tests use them, this process starts one of
each per mutmut child before mutmut and names them in ``$PYRAMID_REDISX_SHARED_TOPOLOGIES``
(pyramid_redisx.testing): each test session takes a free one, heals it per test as the
fixtures always do, and leaves it running; the reaper spares their processes (a node a
test restarted is orphaned when its session ends) and they are stopped after mutmut.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pyramid_redisx import servers, testing

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "mutation"
RESULTS = HERE / "results"
WORK = HERE / "work"
REPORT = ROOT / "docs" / "mutation-report.md"
COPIED = (
    "pyramid_redisx",
    "tests",
    "demo_app",
    "docs",
    "bench",
    "README.md",
    "CHANGELOG.md",
    "development.ini",
    "LICENSE",
)  # fmt: skip  (bench/: the client cache's figures test)
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    36: "timeout",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "killed",
    None: "not checked",
}  # fmt: skip  (mutmut's stats.status_by_exit_code)
COUNTED = ("killed", "timeout", "survived", "no tests", "equivalent", "not checked", "other")


def load_toml(name: str) -> dict[str, Any]:
    with open(HERE / name, "rb") as file:
        return tomllib.load(file)


# ------------------------------------------------------------------ orphaned servers
PR_SET_CHILD_SUBREAPER = 36


class Reaper:
    """Stops the processes orphaned under this one (servers of a killed test run)."""

    def __init__(self) -> None:
        self.reaped = 0
        self.keep: set[int] = set()  # our own direct children (mutmut itself)
        self.spare: tuple[str, ...] = ()  # directories of shared topologies' servers
        self.active = False  # only while mutmut runs: our other children are ours
        self.stopped = threading.Event()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        threading.Thread(target=self._loop, daemon=True).start()

    def _children(self) -> list[int]:
        me, found = os.getpid(), []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry))
        return found

    def reap_until_none(self, seconds: float = 10.0) -> None:
        """After mutmut ended: its workers' servers are orphaned as the workers die, a
        little after mutmut itself; reap until none is left (or ``seconds`` passed)."""
        deadline = time.monotonic() + seconds
        while self._children() and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.2)

    def _spared(self, pid: int) -> bool:
        if not self.spare:
            return False
        try:  # a server works in its own directory (its --dir)
            works_in = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        return works_in in self.spare

    def reap(self) -> None:
        for pid in self._children():
            if pid in self.keep or self._spared(pid):
                continue
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)  # a paused server cannot die
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                self.reaped += 1

    def _loop(self) -> None:
        while not self.stopped.wait(2.0):
            if self.active:
                self.reap()


# ------------------------------------------------------------------ one module
def prepare(module: str, tests: list[str]) -> Path:
    """The module's work directory, with the current sources and its mutmut config."""
    work = WORK / module
    work.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source, target = ROOT / name, work / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "_build"))  # fmt: skip
        elif source.exists():
            shutil.copy2(source, target)
    config = (ROOT / "pyproject.toml").read_text()
    config += (
        "\n[tool.mutmut]\n"
        'source_paths = ["pyramid_redisx/"]\n'
        f'only_mutate = ["pyramid_redisx/{module}.py"]\n'
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        # the files tests read beside the code (development.ini, docs/...): in mutants/ too
        f"also_copy = {json.dumps([name for name in COPIED if name not in ('pyramid_redisx', 'tests')])}\n"
        # a test that hangs on a mutant fails after 60 s (mutmut's own timeout, 15x the
        # test's clean time, usually comes first); the cache provider is off already
        'pytest_add_cli_args = ["--timeout=60"]\n'
        "use_git_change_detection = false\n"
    )
    (work / "pyproject.toml").write_text(config)
    return work


def topology_kinds(tests: list[str]) -> list[str]:
    """The session topologies (``sentinel``, ``cluster``) the mapped test files use."""
    text = "".join((ROOT / t.split("::")[0]).read_text() for t in tests if t.startswith("tests/"))
    return [kind for kind in ("sentinel", "cluster") if f"{kind}_set" in text]


@contextlib.contextmanager
def shared_topologies(kinds: list[str], count: int, reaper: Reaper) -> Iterator[dict[str, str]]:
    """``count`` running topologies of each kind; yields the environment naming them."""
    if not kinds:
        yield {}
        return
    started: dict[str, list[Any]] = {kind: [] for kind in kinds}
    folder = tempfile.mkdtemp(prefix="mutation-topologies-")
    try:
        for kind in kinds:
            for _ in range(count):
                make = testing.new_sentinel_set if kind == "sentinel" else testing.new_cluster_set
                started[kind].append(make().start())
        path = servers.share_topologies(folder, **started)
        every = [t for topologies in started.values() for t in topologies]
        reaper.spare = tuple(os.path.realpath(s.directory) for t in every for s in _servers(t))
        yield {servers.SHARED_TOPOLOGIES: str(path)}
    finally:
        reaper.spare = ()
        for topology in (t for topologies in started.values() for t in topologies):
            # whichever processes run now (a test may have restarted a node): by pid file
            for server in _servers(type(topology).attach(topology.describe())):
                server.stop()
            topology.cleanup()
        reaper.reap_until_none()
        shutil.rmtree(folder, ignore_errors=True)


def _servers(topology: Any) -> list[Any]:
    return list(getattr(topology, "nodes", [])) or topology.data + topology.sentinels


def run_mutmut(
    work: Path, reaper: Reaper, children: int, only: list[str], env: dict[str, str]
) -> None:
    mutmut = Path(sys.executable).parent / "mutmut"
    with open(work / "mutmut.log", "w") as log:
        process = subprocess.Popen(
            [str(mutmut), "run", "--max-children", str(children), *only],
            cwd=work, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip
        reaper.keep.add(process.pid)
        reaper.active = True
        try:
            process.wait()
        finally:
            if process.poll() is None:  # we were stopped (SIGTERM, ^C): mutmut goes too
                process.terminate()
                process.wait()
            reaper.active = False
            reaper.keep.discard(process.pid)
            reaper.reap_until_none()  # mutmut has ended: what is left is orphaned
    if process.returncode:  # e.g. a mapped test failed before any mutant: no verdicts
        raise SystemExit(f"mutation: mutmut ended with {process.returncode}; nothing "
                         f"recorded: see {work / 'mutmut.log'}")  # fmt: skip


class Stopped(SystemExit):
    """SIGTERM: unwinds like ^C (the shared topologies' servers are stopped), and the
    module's verdicts so far are recorded (mutmut's meta file holds each one as it
    comes; the mutants it was running stay "not checked")."""


def _stop(*_: Any) -> None:
    raise Stopped(128 + signal.SIGTERM)


def _has_verdicts(work: Path, module: str) -> bool:
    try:
        meta = json.loads((work / "mutants" / "pyramid_redisx" / f"{module}.py.meta").read_text())
    except (OSError, ValueError):  # not written yet, or cut while being written
        return False
    return any(code is not None for code in meta.get("exit_code_by_key", {}).values())


def head_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip


def collect(module: str, work: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The module's verdicts from mutmut's meta file, with the survivors' diffs; ``run``
    (date, commit, seconds, mutants checked) is added to the runs of its results file."""
    meta = json.loads((work / "mutants" / "pyramid_redisx" / f"{module}.py.meta").read_text())
    verdicts = {name: STATUS.get(code, "other") for name, code in meta["exit_code_by_key"].items()}
    if run.get("stopped"):  # a mutant cut short by the stop has no verdict
        verdicts = {name: "not checked" if v == "other" else v for name, v in verdicts.items()}
    shown = [name for name, verdict in verdicts.items() if verdict in ("survived", "no tests")]
    diffs = subprocess.run(  # mutmut's own diff (as ``mutmut show``), in one process
        [sys.executable, "-c", DIFFS, f"pyramid_redisx/{module}.py"], cwd=work,
        input=json.dumps(sorted(shown)), capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    previous = load_result(module)
    hashes = meta.get("hash_by_function_name", {})
    found = json.loads(diffs)
    carried = carry_over(
        verdicts, found, hashes, previous, _unchanged_since_last_run(module, previous)
    )
    if carried:
        run = {**run, "carried": carried}
    result = {
        "module": module,
        "mutmut": version("mutmut"),
        "tests": load_toml("tests_for_modules.toml")["modules"][module],
        "verdicts": dict(sorted(verdicts.items(), key=lambda item: _order(item[0]))),
        "diffs": found,
        "function_hashes": hashes,
        "runs": [*(previous or {}).get("runs", []), run],
    }
    before = (previous or {}).get("before")
    if before is None and all(v != "not checked" for v in verdicts.values()):
        counts, percent = score(verdicts)  # the first complete run: the score before triage
        before = {"date": run["date"], "commit": run["commit"], "score": percent, "counts": counts}
    result["before"] = before
    return result


def carry_over(
    verdicts: dict[str, str],
    diffs: dict[str, str],
    hashes: dict[str, str],
    previous: dict[str, Any] | None,
    same_source: bool = False,
) -> int:
    """A mutant this run did not check keeps its last verdict (and diff) if mutmut's hash
    of its function is the one recorded then: runs of a few functions at a time (``--only``)
    add up to a whole module (``sentinel``, ``cluster``: under 100 mutants an hour). Results
    recorded without hashes carry nothing, unless ``same_source``: the module's file is
    the one of the last run's commit. Returns how many were carried."""
    previous = previous or {}
    before, last_verdicts = previous.get("function_hashes") or {}, previous.get("verdicts", {})
    last_diffs = previous.get("diffs", {})
    carried = 0
    for name, verdict in verdicts.items():
        function = name.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
        last = last_verdicts.get(name, "not checked")
        if verdict != "not checked" or last == "not checked":
            continue
        if same_source or (function in hashes and before.get(function) == hashes[function]):
            verdicts[name] = last
            if name in last_diffs:
                diffs[name] = last_diffs[name]
            carried += 1
    return carried


def _unchanged_since_last_run(module: str, previous: dict[str, Any] | None) -> bool:
    """The module's file is as it was at the commit of its last recorded run."""
    runs = (previous or {}).get("runs") or []
    if not runs:
        return False
    path = f"pyramid_redisx/{module}.py"
    then = subprocess.run(["git", "show", f"{runs[-1]['commit']}:{path}"], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    return then.returncode == 0 and then.stdout == (ROOT / path).read_text()


DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps({name: get_diff_for_mutant(name, path=sys.argv[1]) for name in names}))
"""


def load_result(module: str) -> dict[str, Any] | None:
    """The module's results file (older ones, with one run's date, commit and seconds at
    the top level, read as a file with that one run)."""
    path = RESULTS / f"{module}.json"
    if not path.exists():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    if "runs" not in result:
        checked = sum(v != "not checked" for v in result["verdicts"].values())
        result["runs"] = [{"date": result.pop("date"), "commit": result.pop("commit"),
                           "seconds": result.pop("seconds"), "checked": checked}]  # fmt: skip
    result.setdefault("before", None)
    return result


def _newly_checked(module: str, work: Path) -> int:
    """Mutants with a verdict now that had none (or did not exist) in the last results."""
    meta = json.loads((work / "mutants" / "pyramid_redisx" / f"{module}.py.meta").read_text())
    before = (load_result(module) or {}).get("verdicts", {})
    return sum(
        1 for name, code in meta["exit_code_by_key"].items()
        if code is not None and before.get(name, "not checked") == "not checked"
    )  # fmt: skip


def open_mutants(module: str) -> list[str]:
    """Survivors and "no tests" of the module's last results, less those marked equivalent."""
    result = load_result(module)
    if result is None:
        return []
    known = equivalents()
    return [name for name, verdict in result["verdicts"].items()
            if verdict in ("survived", "no tests") and name not in known]  # fmt: skip


def _order(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


# ------------------------------------------------------------------ the report
def equivalents() -> dict[str, dict[str, str]]:
    entries = load_toml("equivalent.toml").get("equivalent", [])
    return {entry["mutant"]: entry for entry in entries}


def apply_equivalents(result: dict[str, Any], known: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Survivors marked equivalent (while their diff still holds the marked change)."""
    verdicts, stale = dict(result["verdicts"]), []
    for name, entry in known.items():
        if verdicts.get(name) != "survived":
            continue
        if entry["changed"] in result["diffs"].get(name, ""):
            verdicts[name] = "equivalent"
        else:
            stale.append(name)
    return {**result, "verdicts": verdicts, "stale": stale}


def score(verdicts: dict[str, str]) -> tuple[dict[str, int], float | None]:
    counts = dict.fromkeys(COUNTED, 0)
    for verdict in verdicts.values():
        counts[verdict if verdict in counts else "other"] += 1
    caught = counts["killed"] + counts["timeout"]
    judged = len(verdicts) - counts["equivalent"] - counts["not checked"]
    return counts, (100.0 * caught / judged if judged else None)


def render() -> str:
    known = equivalents()
    results = [load_result(p.stem) for p in sorted(RESULTS.glob("*.json"))]
    results = [apply_equivalents(r, known) for r in results if r is not None]
    lines = [
        "# Mutation testing report",
        "",
        "Generated by `make mutation` (`mutation/run.py`) from `mutation/results/*.json`;",
        "do not edit by hand. How to run it and how to read it: docs/mutation.rst.",
        "",
        "Score: mutants killed (or timed out) per mutant that is not equivalent.",
        "Targets: 90 % for client, request, pools, cluster, aio, sentinel and redact; 80 % for",
        "the rest. *Before*: the score of the module's first complete run, before its",
        "survivors were triaged. *First run*: that run's minutes and mutants an hour (with",
        "`--children` mutmut workers on a shared 2-core machine); later runs only re-check",
        "what changed or survived.",
        "",
        "| module | mutants | killed | timeout | survived | no tests | equivalent | not checked "
        "| before | score | last run | first run: minutes | mutants/hour |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        counts, percent = score(result["verdicts"])
        total = len(result["verdicts"])
        first, last = result["runs"][0], result["runs"][-1]
        rate = first["checked"] * 3600 / first["seconds"] if first["seconds"] else 0
        shown = f"{percent:.1f} %" if percent is not None else "-"
        before = result["before"]
        was = f"{before['score']:.1f} %" if before and before["score"] is not None else "-"
        lines.append(
            f"| {result['module']} | {total} | {counts['killed']} | {counts['timeout']} | "
            f"{counts['survived']} | {counts['no tests']} | {counts['equivalent']} | "
            f"{counts['not checked']} | {was} | {shown} | "
            f"{last['date']} at {last['commit']} | {first['seconds'] / 60:.1f} | {rate:.0f} |"
        )
    for result in results:
        open_ = [n for n, v in result["verdicts"].items() if v in ("survived", "no tests")]
        marked = [n for n, v in result["verdicts"].items() if v == "equivalent"]
        lines += ["", f"## {result['module']}", ""]
        lines.append("Tests: " + ", ".join(f"`{t}`" for t in result["tests"]) + ".")
        if not open_ and not marked:
            lines += ["", "Every mutant killed."]
        for name in open_:
            note = (
                " (its equivalent.toml entry no longer matches)" if name in result["stale"] else ""
            )
            lines += ["", f"### {name}: {result['verdicts'][name]}{note}", "", "```diff",
                      result["diffs"].get(name, "(no diff)"), "```"]  # fmt: skip
        if marked:
            lines += ["", "Equivalent (mutation/equivalent.toml):", ""]
            lines += [f"- `{name}`: {known[name]['reason']}" for name in marked]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modules", nargs="*", help="modules of pyramid_redisx (default: all mapped)"
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--only", nargs="*", default=[], metavar="GLOB",
                        help="mutmut names (globs) to run, e.g. for a timed sample: "
                        "'pyramid_redisx.pools.x_retry*'; the rest stay 'not checked'")  # fmt: skip
    parser.add_argument("--rerun-open", action="store_true",
                        help="after the mutants not checked yet, check the module's "
                        "survivors and 'no tests' again (mutmut keeps every verdict "
                        "otherwise: run this after adding tests)")  # fmt: skip
    args = parser.parse_args(argv)
    mapping = load_toml("tests_for_modules.toml")["modules"]
    unknown = [m for m in args.modules if m not in mapping]
    if unknown:
        parser.error(f"not in mutation/tests_for_modules.toml: {', '.join(unknown)}; "
                     f"mapped: {', '.join(mapping)}")  # fmt: skip
    if not args.report_only:
        # SIGTERM unwinds like ^C, so the shared topologies' servers are stopped
        signal.signal(signal.SIGTERM, _stop)
        reaper = Reaper()
        RESULTS.mkdir(exist_ok=True)
        try:
            for module in args.modules or list(mapping):
                commit = head_commit()  # the code mutmut copies now
                work = prepare(module, mapping[module])
                print(f"mutation: {module} ({', '.join(mapping[module])})", flush=True)
                kinds = topology_kinds(mapping[module])
                again = open_mutants(module) if args.rerun_open else []
                started, stopped = time.monotonic(), None
                with shared_topologies(kinds, args.children, reaper) as env:
                    try:
                        run_mutmut(work, reaper, args.children, args.only, env)
                        if again:
                            run_mutmut(work, reaper, args.children, again, env)
                    except (Stopped, KeyboardInterrupt) as stop:
                        stopped = stop  # what was checked until now is kept (below)
                seconds = time.monotonic() - started
                if stopped is not None and not _has_verdicts(work, module):
                    raise stopped
                checked = (len(again) if stopped is None else 0) + _newly_checked(module, work)
                run = {"date": datetime.date.today().isoformat(), "commit": commit,
                       "seconds": round(seconds), "checked": checked}  # fmt: skip
                if stopped is not None:
                    run["stopped"] = True
                result = collect(module, work, run)
                (RESULTS / f"{module}.json").write_text(json.dumps(result, indent=1) + "\n")
                counts, percent = score(apply_equivalents(result, equivalents())["verdicts"])
                print(f"mutation: {module}: {counts}, score {percent}, {seconds:.0f} s", flush=True)
                if stopped is not None:
                    REPORT.write_text(render())
                    raise stopped
        finally:
            reaper.stopped.set()
            if reaper.reaped:
                print(f"mutation: stopped {reaper.reaped} servers left by killed test runs")
    REPORT.write_text(render())
    print(f"mutation: report in {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
