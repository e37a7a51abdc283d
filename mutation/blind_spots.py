"""``make mutation-blind-spots``: put each bug of ``blind_spots.toml`` in, run its test,
expect it to fail, take the bug out again. Exit 1 if a test passed with its bug.

    python mutation/blind_spots.py [--topology]   # with --topology, Sentinel/Cluster ones too

The bugs are the ones issue 25 found going through the suite unnoticed, and issue 24's
ownership defects put back one at a time against the oracle (tests/test_ownership_oracle.py);
this keeps each test honest (a test that no longer fails with its bug has stopped pinning
it down). A mutant's ``env`` table is added to the test's environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    with open(ROOT / "mutation" / "blind_spots.toml", "rb") as file:
        mutants = tomllib.load(file)["mutant"]
    topology = "--topology" in argv
    escaped = []
    for mutant in mutants:
        tests = mutant["test"].split()
        if not topology and any(t.startswith("tests/topology/") for t in tests):
            print(f"skipped (topology): {mutant['behaviour']}")
            continue
        path = ROOT / mutant["file"]
        source = path.read_text()
        if source.count(mutant["original"]) != 1:
            print(f"STALE: {mutant['file']} no longer holds {mutant['original']!r} once")
            escaped.append(mutant["behaviour"])
            continue
        path.write_text(source.replace(mutant["original"], mutant["mutated"]))
        try:
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:warnings", *tests],
                cwd=ROOT, capture_output=True, text=True, check=False,
                env={**os.environ, **mutant.get("env", {})},
            )  # fmt: skip
        finally:
            path.write_text(source)
        caught = run.returncode == 1
        print(f"{'killed' if caught else 'ESCAPED'}: {mutant['behaviour']}")
        if not caught:
            escaped.append(mutant["behaviour"])
            print(run.stdout[-2000:])
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
