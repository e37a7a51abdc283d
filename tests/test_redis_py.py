"""The guard on redis-py (pyramid_redisx.redis_py): a tested version, internals as expected.

An app on a redis-py whose internals differ, or outside the tested range, must not start:
``config.include`` raises ``RedisPyUnsupported`` with one message naming the installed
version, the range, what differs and the fix. The drift tests read the package's code, so
a new use of a redis-py internal without a row in ``INTERNALS`` fails here.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import logging
import pkgutil
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.client
import redis.cluster
from hypothesis import given
from hypothesis import strategies as st
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError

import pyramid_redisx
from pyramid_redisx import RedisPyUnsupported, RedisSettingsError, redis_py

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pyramid_redisx"
SETTINGS = {"redis.url": "redis://127.0.0.1:1/0", "redis.startup_check": "false"}


@pytest.fixture(autouse=True)
def fresh_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees its own (monkeypatched) redis-py: the cached result is dropped
    before and after, and no allowance comes from the environment."""
    monkeypatch.delenv(redis_py.ENVIRON, raising=False)
    redis_py.problems.cache_clear()
    yield
    monkeypatch.undo()
    redis_py.problems.cache_clear()


def include(**settings: str) -> Configurator:
    config = Configurator(settings={**SETTINGS, **settings})
    config.include("pyramid_redisx")
    return config


def refused(**settings: str) -> str:
    with pytest.raises(RedisPyUnsupported) as caught:
        include(**settings)
    assert isinstance(caught.value, ConfigurationError)
    return str(caught.value)


def test_the_installed_redis_py_is_tested_and_matches() -> None:
    assert redis_py.tested(redis.__version__), redis.__version__
    assert redis_py.problems() == ()
    include().make_wsgi_app()


def test_the_range_is_pyproject_toml_s() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (requirement,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("redis")]
    assert requirement == f"redis{redis_py.RANGE}"
    found = re.fullmatch(r">=(\d+)\.(\d+),<(\d+)\.(\d+)", redis_py.RANGE)
    assert found is not None
    low_major, low_minor, high_major, high_minor = map(int, found.groups())
    assert (low_major, low_minor) == redis_py.TESTED_FROM
    assert (high_major, high_minor) == redis_py.TESTED_BELOW


def test_a_missing_internal_stops_the_app_with_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(redis.client.Pipeline, "_execute_transaction")
    message = refused(**{"redis.allow_redis_py": redis.__version__})  # no setting helps
    assert message == (
        f"pyramid_redisx cannot run on redis-py {redis.__version__}: it replaces or reads "
        "redis-py internals that this version does not have as expected: "
        "redis.client.Pipeline._execute_transaction is missing. "
        'Tested: redis-py >=8.1,<8.3. Fix: pip install "redis>=8.1,<8.3" '
        "(no setting overrides this)."
    )


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def send_cluster_commands(
        self: object, stack: object, raise_on_error: bool = True,
        allow_redirections: bool = True, retry: object = None,
    ) -> None: ...  # fmt: skip

    send_cluster_commands.__module__ = "redis.cluster"  # redis-py's own, reshaped
    monkeypatch.setattr(
        redis.cluster.PipelineStrategy, "send_cluster_commands", send_cluster_commands
    )
    assert (
        "redis.cluster.PipelineStrategy.send_cluster_commands takes (stack, raise_on_error, "
        "allow_redirections, retry), expected (stack, raise_on_error, allow_redirections)"
    ) in refused()


def test_a_method_wrapped_by_instrumentation_is_checked_through_or_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenTelemetry (wrapt) keeps ``__wrapped__``: redis-py's own parameters are checked.
    Sentry replaces ``Pipeline.execute`` with an ``(*args, **kwargs)`` function: a
    wrapper's shape says nothing of redis-py's, so only its presence is checked."""
    execute = redis.client.Pipeline.execute

    @functools.wraps(execute)
    def traced(self: object, *args: object, **kwargs: object) -> object:
        return execute(self, *args, **kwargs)  # type: ignore[arg-type]

    def patched(self: object, *args: object, **kwargs: object) -> object:
        return execute(self, *args, **kwargs)  # type: ignore[arg-type]

    for wrapper in (traced, patched):
        monkeypatch.setattr(redis.client.Pipeline, "execute", wrapper)
        redis_py.problems.cache_clear()
        assert redis_py.problems() == ()
        include().make_wsgi_app()

    def renamed(self: object, raise_errors: bool = True) -> object:
        return execute(self, raise_errors)  # type: ignore[arg-type]

    renamed.__module__ = "redis.client"  # redis-py's own, changed
    monkeypatch.setattr(redis.client.Pipeline, "execute", functools.wraps(execute)(renamed))
    monkeypatch.delattr(renamed, "__wrapped__")
    redis_py.problems.cache_clear()
    assert redis_py.problems() == (
        "redis.client.Pipeline.execute takes (raise_errors), expected (raise_on_error)",
    )


def test_an_instance_attribute_no_longer_set_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    source = redis_py._source
    monkeypatch.setattr(
        redis_py, "_source", lambda cls: source(cls).replace("self._sock =", "self._socket =")
    )
    message = refused()
    assert (
        "redis.connection.AbstractConnection._sock (an instance attribute) is no longer set "
        "by redis.connection.AbstractConnection"
    ) in message
    assert "_backoff" not in message  # only what differs


@pytest.mark.parametrize("newer", ["8.3.0", "9.0.1", "8.3.0b1", "8.0.2"])
def test_a_version_outside_the_range_is_refused_naming_the_pin_and_the_setting(
    monkeypatch: pytest.MonkeyPatch, newer: str
) -> None:
    monkeypatch.setattr(redis, "__version__", newer)
    minor = ".".join(newer.split(".")[:2])
    assert refused() == (
        f"pyramid_redisx is tested with redis-py >=8.1,<8.3, and redis-py {newer} is "
        f'installed. Fix: pip install "redis>=8.1,<8.3"; or, to run on {newer} untested '
        "(its internals match what pyramid_redisx expects), set "
        f"redis.allow_redis_py = {minor}."
    )


def test_the_setting_runs_an_untested_version_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(redis, "__version__", "8.3.1")
    with caplog.at_level(logging.WARNING, logger="pyramid_redisx"):
        include(**{"redis.allow_redis_py": "8.3"}).make_wsgi_app()
    (record,) = [r for r in caplog.records if "outside the range" in r.getMessage()]
    assert record.getMessage() == (
        "redis-py 8.3.1 is outside the range pyramid_redisx was tested with (>=8.1,<8.3); "
        "running anyway as redis.allow_redis_py = 8.3 says (its internals match what "
        "pyramid_redisx expects)"
    )
    # it allows the version it names, not the next one
    monkeypatch.setattr(redis, "__version__", "8.4.0")
    assert "(redis.allow_redis_py = 8.3 allows 8.3 only)" in refused(
        **{"redis.allow_redis_py": "8.3"}
    )
    assert "allows 8.3.0 only" in refused(**{"redis.allow_redis_py": "8.3.0"})


def test_the_environment_variable_is_the_setting_s_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis, "__version__", "8.3.0")
    monkeypatch.setenv(redis_py.ENVIRON, "8.3")
    include().make_wsgi_app()
    assert "allows 8.2 only" in refused(**{"redis.allow_redis_py": "8.2"})  # the setting wins


@pytest.mark.parametrize("value", ["latest", "8", "8.x", ">=8.3", "8.3.0.1"])
def test_a_bad_allow_redis_py_is_a_settings_error(value: str) -> None:
    with pytest.raises(RedisSettingsError) as caught:
        include(**{"redis.allow_redis_py": value})
    assert str(caught.value) == (
        f"redis.allow_redis_py = {value!r} is not valid: expected a redis-py version: "
        "8.3 (any 8.3.x) or 8.3.0"
    )


@given(
    st.integers(0, 12), st.integers(0, 12), st.integers(0, 30), st.sampled_from(["", "rc1", "b2"])
)
def test_tested_and_allows_follow_major_and_minor(
    major: int, minor: int, patch: int, pre: str
) -> None:
    installed = f"{major}.{minor}.{patch}{pre}"
    assert redis_py.tested(installed) == ((8, 1) <= (major, minor) < (8, 3))
    assert redis_py.allows(f"{major}.{minor}", installed)
    assert redis_py.allows(f"{major}.{minor}.{patch}", installed)
    assert not redis_py.allows(f"{major}.{minor + 1}", installed)
    assert not redis_py.allows(f"{major}.{minor}.{patch + 1}", installed)
    assert not redis_py.allows(None, installed)


def test_a_name_moved_in_redis_py_fails_the_import_with_the_guard_s_message() -> None:
    code = (
        "import redis.observability.recorder as recorder\n"
        "del recorder.is_enabled\n"
        "import pyramid_redisx\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pyramid_redisx.errors.RedisPyUnsupported: pyramid_redisx cannot run")
    assert "redis.observability.recorder.is_enabled is missing" in last
    assert 'pip install "redis>=8.1,<8.3"' in last


# ---------------------------------------------------------------- drift
def _redis_names() -> set[str]:
    """Every method, class attribute and ``self.X`` attribute that redis-py's source defines."""
    names: set[str] = set()
    for path in Path(redis.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "self":
                    names.add(node.attr)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    targets = item.targets if isinstance(item, ast.Assign) else []
                    names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_every_redis_py_underscore_attribute_the_package_uses_has_a_row() -> None:
    used: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Attribute):
                names.append(node.attr)
            elif isinstance(node, ast.ClassDef):  # methods and attributes we define over redis-py's
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        names.append(item.name)
                    elif isinstance(item, ast.Assign):
                        names.extend(t.id for t in item.targets if isinstance(t, ast.Name))
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    used.setdefault(name, set()).add(path.name)
    listed = {path.rpartition(".")[2] for path, *_ in redis_py.INTERNALS}
    redis_own = _redis_names() - _our_own_methods()
    ours = _our_own_attributes()
    used = {
        name: {m for m in where if name not in ours.get(m, set())} for name, where in used.items()
    }
    missing = {name: sorted(where) for name, where in used.items() if name in redis_own and where}
    missing = {name: where for name, where in missing.items() if name not in listed}
    assert not missing, f"redis-py internals used without a row in redis_py.INTERNALS: {missing}"


def _package_classes() -> Iterator[type]:
    for module_info in pkgutil.iter_modules(pyramid_redisx.__path__):
        module = importlib.import_module(f"pyramid_redisx.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                yield cls


def _from_redis(cls: type) -> bool:
    return any(base.__module__.split(".")[0] == "redis" for base in cls.__mro__)


def _our_own_attributes() -> dict[str, set[str]]:
    """Per module file: what its classes deriving from nothing of redis-py's assign to
    ``self`` (failsoft's ``self._client``): there the name is ours, not redis-py's."""
    found: dict[str, set[str]] = {}
    for cls in _package_classes():
        if not _from_redis(cls):
            names = set(re.findall(r"\bself\.(\w+)\s*(?::[^=\n]*)?=(?!=)", inspect.getsource(cls)))
            found.setdefault(f"{cls.__module__.rpartition('.')[2]}.py", set()).update(names)
    return found


def _our_own_methods() -> set[str]:
    """Methods of our classes that derive from nothing of redis-py's (telemetry's ``_max``):
    a redis-py class elsewhere may use the same name for something else."""
    return {
        name
        for cls in _package_classes()
        if not _from_redis(cls)
        for name, value in vars(cls).items()
        if callable(value)
    }


def test_every_redis_py_method_the_package_overrides_has_a_row() -> None:
    """A method of ours that replaces one of redis-py's must be checked: redis-py calls it
    with its own arguments, and a change there would reach ours."""
    listed = {path for path, *_ in redis_py.INTERNALS}
    missing = []
    for cls in _package_classes():
        for name, value in vars(cls).items():
            dunder = name.startswith("__") and name not in ("__init__", "__del__", "__exit__")
            if not callable(value) or dunder:
                continue
            for base in cls.__mro__[1:]:
                if base.__module__.split(".")[0] == "redis" and name in vars(base):
                    where = f"{base.__module__}.{base.__qualname__}.{name}"
                    if where not in listed:
                        missing.append(f"{cls.__module__}.{cls.__qualname__}.{name} over {where}")
                    break
    assert not missing, "overrides of redis-py without a row in redis_py.INTERNALS:\n" + "\n".join(
        missing
    )


def test_every_row_is_used_by_the_package() -> None:
    """Each row names a module of ours that uses it, so a row is removed with its use."""
    for path, expects, _names, who in redis_py.INTERNALS:
        assert expects in (redis_py.PARAMS, redis_py.ACCEPTS, redis_py.ATTR, redis_py.SELF), path
        modules = re.findall(r"\b(\w+)\.py\b", who)
        assert modules, (path, who)
        attribute = path.rpartition(".")[2]
        texts = [(PACKAGE / f"{m}.py").read_text(encoding="utf-8") for m in modules]
        assert all(attribute in text for text in texts), (path, who)


def test_each_problem_is_named_and_they_are_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two internals wrong at once: both named, in the table's order, joined by "; "; a
    callable that no longer takes two of its keywords names both."""

    def __init__(self: object, max_connections: int = 0) -> None: ...

    __init__.__module__ = "redis.connection"  # redis-py's own, reshaped
    monkeypatch.setattr(redis.connection.BlockingConnectionPool, "__init__", __init__)
    monkeypatch.delattr(redis.client.Pipeline, "_execute_transaction")
    message = refused()
    assert (
        "as expected: redis.client.Pipeline._execute_transaction is missing; "
        "redis.connection.BlockingConnectionPool.__init__ no longer takes timeout, queue_class. "
    ) in message


def test_the_range_ends_are_read_as_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """8.1 is the first version tested and 8.3 the first not; a redis-py without a
    version says so."""
    assert redis_py.tested("8.1") and redis_py.tested("8.2.99")
    assert not redis_py.tested("8.3") and not redis_py.tested("8.0.99")
    monkeypatch.delattr(redis, "__version__")
    assert redis_py.version() == "unknown"
