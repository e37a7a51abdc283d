"""Every setting is documented in the README and present in development.ini."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyramid_redisx.settings import APP_SETTINGS, CLIENT_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
ALL = [setting.name for setting in (*CLIENT_SETTINGS, *APP_SETTINGS)]


@pytest.mark.parametrize("name", ALL)
def test_setting_in_readme_table(name: str) -> None:
    # Sentinel/Cluster-only keys are documented in docs/topologies.rst's settings table.
    topologies = (ROOT / "docs" / "topologies.rst").read_text()
    assert f"| `redis.{name}` |" in (ROOT / "README.md").read_text() or (
        f"``redis.{name}``" in topologies and name in TOPOLOGY_KEYS
    )


TOPOLOGY_KEYS = {
    "sentinel_role", "sentinel_listener", "cluster_nodes", "load_balancing_strategy",
    "require_full_coverage",
}  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_setting_in_development_ini(name: str) -> None:
    lines = (ROOT / "development.ini").read_text().splitlines()
    assert any(line.lstrip("# ").startswith(f"redis.{name} =") for line in lines)


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:6]
    assert any(line.strip().startswith("make demo") for line in head)
    assert any(line.strip().startswith("make test") for line in head)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
