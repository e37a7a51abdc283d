"""``make mutation``'s bookkeeping (mutation/run.py): verdicts carried between runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent.parent / "mutation" / "run.py"


def _run_module() -> Any:
    spec = importlib.util.spec_from_file_location("mutation_run", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_mutant_not_run_keeps_its_verdict_while_its_function_is_unchanged() -> None:
    carry_over = _run_module().carry_over
    name = "pyramid_redisx.m.x_f__mutmut_{}".format
    previous = {
        "verdicts": {name(1): "survived", name(2): "killed", "pyramid_redisx.m.x_g__mutmut_1":
                     "killed", "pyramid_redisx.m.x_h__mutmut_1": "not checked"},
        "diffs": {name(1): "-a\n+b"},
        "function_hashes": {"x_f": "1", "x_g": "old", "x_h": "3"},
    }  # fmt: skip
    verdicts = {name(1): "not checked", name(2): "timeout", name(3): "not checked",
                "pyramid_redisx.m.x_g__mutmut_1": "not checked",
                "pyramid_redisx.m.x_h__mutmut_1": "not checked"}  # fmt: skip
    diffs: dict[str, str] = {}
    hashes = {"x_f": "1", "x_g": "new", "x_h": "3"}
    assert carry_over(verdicts, diffs, hashes, previous) == 1
    assert verdicts == {
        name(1): "survived",  # carried: x_f unchanged
        name(2): "timeout",  # this run's verdict wins
        name(3): "not checked",  # new mutant: nothing to carry
        "pyramid_redisx.m.x_g__mutmut_1": "not checked",  # x_g changed since
        "pyramid_redisx.m.x_h__mutmut_1": "not checked",  # never checked
    }
    assert diffs == {name(1): "-a\n+b"}
    assert carry_over(dict(verdicts), {}, hashes, {"verdicts": previous["verdicts"]}) == 0
    assert carry_over(dict(verdicts), {}, hashes, None) == 0
    # results recorded without hashes carry all only from an unchanged source file
    unhashed = {"verdicts": previous["verdicts"], "diffs": previous["diffs"]}
    again = {name(1): "not checked", "pyramid_redisx.m.x_g__mutmut_1": "not checked"}
    assert carry_over(again, {}, hashes, unhashed, same_source=True) == 2
    assert again == {name(1): "survived", "pyramid_redisx.m.x_g__mutmut_1": "killed"}
