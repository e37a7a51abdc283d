"""The package as users get it: build the wheel, check it, install it into a fresh venv.

The build-and-install test has the marker ``packaging``: it runs in the Pyramid 2
environment only (it builds from the same sources whatever Pyramid the venv has).
`make dist` builds and twine-checks the sdist and the wheel too; this test checks what
is *in* the wheel and that it installs.
"""

from __future__ import annotations

import email
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_build_requirements_match_the_metadata() -> None:
    """``license = "MIT"`` (an SPDX expression) and ``license-files`` need setuptools 77."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    (setuptools,) = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert found and int(found.group(1)) >= 77, setuptools
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert pyproject["tool"]["setuptools"]["packages"] == ["pyramid_redisx"]


def _run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.packaging
def test_wheel_holds_the_package_only_and_installs_into_a_clean_venv(
    tmp_path: Path, built_wheel: Path
) -> None:
    wheel = built_wheel  # conftest: built once per session, shared with the quick start's test
    _run(sys.executable, "-m", "twine", "check", "--strict", wheel, cwd=tmp_path)

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(f"{dist_info}/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"pyramid_redisx", dist_info}, tops  # no demo_app, no tests
    assert "pyramid_redisx/py.typed" in names
    assert f"{dist_info}/licenses/LICENSE" in names
    assert metadata["License-Expression"] == "MIT"
    assert "demo_app" not in entry_points
    assert "pyramid-redisx = pyramid_redisx.cli:main" in entry_points

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin" / "pip", "install", "-q", wheel, cwd=tmp_path)
    shown = _run(venv / "bin" / "pyramid-redisx", "--help", cwd=tmp_path)
    assert shown.stdout.startswith("usage: pyramid-redisx"), shown.stdout
    assert "check" in shown.stdout and "info" in shown.stdout
    # The installed package imports from the venv, not from this checkout.
    where = _run(
        venv / "bin" / "python", "-c", "import pyramid_redisx; print(pyramid_redisx.__file__)",
        cwd=tmp_path,
    )  # fmt: skip
    assert where.stdout.startswith(str(venv)), where.stdout
    missing = subprocess.run(
        [venv / "bin" / "python", "-c", "import demo_app"], cwd=tmp_path, capture_output=True
    )
    assert missing.returncode != 0  # the demo stays in the repository


def test_no_ini_in_the_repo_asks_for_the_old_demo_entry_point() -> None:
    """The wheel has no ``paste.app_factory`` named ``demo`` (demo_app is not installed):
    an ini, or a test writing one, loads the demo with ``use = call:demo_app:main``."""
    old = "egg:pyramid_redisx" + "#demo"
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "bench", "demo_app", "docs")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".ini", ".rst")
        and "_build" not in path.parts
        and old in path.read_text(errors="replace")
    ] + [name for name in ("development.ini", "README.md") if old in (ROOT / name).read_text()]
    assert not offenders, f"replace {old!r} with 'call:demo_app:main' in: {offenders}"
