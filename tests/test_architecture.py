"""Imports flow one way: each module imports only the layers below it, at the top of the
file (docs/architecture.rst draws the layers from the same check)."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _architecture() -> ModuleType:
    path = ROOT / "docs" / "_ext" / "redisx_architecture.py"
    spec = importlib.util.spec_from_file_location("redisx_architecture", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


architecture = _architecture()


def test_imports_flow_one_way() -> None:
    assert architecture.violations() == []


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "pyramid_redisx"
    shutil.copytree(ROOT / "pyramid_redisx", copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_a_cycle_put_back_is_caught(package_copy: Path) -> None:
    # What the package held before the layering: the pool dispatching to the topologies.
    _append(package_copy / "pools.py", "\nfrom .sentinel import build_pool as _sentinel\n")
    problems = architecture.violations(package_copy)
    assert any(p.startswith("pools.py:") and "sentinel is not below pools" in p for p in problems)
    assert any(p.startswith("import cycle:") and "pools" in p and "sentinel" in p for p in problems)


def test_an_import_hidden_in_a_function_is_caught(package_copy: Path) -> None:
    # What the package held before the layering: usage (then client) reaching up to stats,
    # which imports it, from inside a method.
    _append(
        package_copy / "usage.py",
        "\n\ndef _late():\n    from .stats import report\n\n    return report\n",
    )
    problems = architecture.violations(package_copy)
    assert any("usage.py:" in p and "inside a function" in p for p in problems)
    assert any("stats is not below usage" in p for p in problems)
    assert any(p.startswith("import cycle:") and "usage" in p and "stats" in p for p in problems)


def test_an_import_by_name_is_caught(package_copy: Path) -> None:
    _append(
        package_copy / "health.py",
        "\n\ndef _kind(name):\n    import importlib\n\n"
        "    return importlib.import_module(f'pyramid_redisx.{name}')\n",
    )
    problems = architecture.violations(package_copy)
    assert sum("health.py:" in p and "inside a function" in p for p in problems) == 2


def test_a_new_module_needs_a_layer(package_copy: Path) -> None:
    (package_copy / "newthing.py").write_text('"""New."""\n')
    assert "newthing.py is in no layer: add it to LAYERS" in architecture.violations(package_copy)


@pytest.mark.parametrize(
    "path",
    [
        "pyramid_redisx.sessions:client_callable",
        "pyramid_redisx.debugtoolbar:includeme",
        "pyramid_redisx.testing:redis_url",
        "pyramid_redisx.dogpile_cache:RedisxBackend",
        "pyramid_redisx.request:client_set",
        "pyramid_redisx.pools:worst_case_seconds",
    ],
)
def test_public_import_paths_stay(path: str) -> None:
    module, _, name = path.partition(":")
    if module.endswith("debugtoolbar"):
        pytest.importorskip("pyramid_debugtoolbar")
    if module.endswith("dogpile_cache"):
        pytest.importorskip("dogpile")
    assert callable(getattr(importlib.import_module(module), name))
