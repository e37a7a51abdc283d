"""``.. redisx-settings::`` — the settings reference, generated from the settings table.

pyramid_redisx parses ``redis.*`` with one table (``CLIENT_SETTINGS``, ``APP_SETTINGS``
in ``pyramid_redisx.settings``: name, converter, default, meaning). This directive
renders that same table at build time, so the reference cannot drift from the parser:

* *meaning* is the row's own text;
* *default* is the row's default, shown the way you would write it in an ini file;
* *accepted* is what the row's converter says when it refuses a value — the very hint
  a ``RedisSettingsError`` shows for that key.

Options: ``:scope: client`` (keys a named client can set too) or ``:scope: app``
(app-wide keys); without it, both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList

from pyramid_redisx import settings as table

_PROBES: tuple[object, ...] = ("?", "? ?", object())  # values converters refuse


def accepted(setting: Any) -> str:
    """What the converter of ``setting`` accepts, in its own words ('' if it says nothing)."""
    for probe in _PROBES:
        try:
            setting.convert(probe)
        except ValueError as exc:
            message = str(exc)
            if "'?'" in message:  # the probe itself is quoted back: keep what precedes it
                message = message.split(";")[0]
            return message.removeprefix("expected ")
        except Exception:  # noqa: BLE001 - a converter that fails otherwise says nothing
            continue
    return ""


def default(setting: Any) -> str:
    """The default as one would write it in an ini file."""
    value = setting.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if getattr(setting.convert, "shows_bytes", False):
        return f"{value / 1024**2:g} MB"
    if setting.convert is table.log_level:
        return logging.getLevelName(value).lower()
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "empty"
    if isinstance(value, float) and setting.convert is not table.ratio:
        return f"{value:g} seconds"
    return str(value)


def rows(scope: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, meaning, default, accepted) for every row of the table(s) in ``scope``."""
    chosen = {
        "client": table.CLIENT_SETTINGS,
        "app": table.APP_SETTINGS,
        "": (*table.CLIENT_SETTINGS, *table.APP_SETTINGS),
    }[scope]
    for setting in chosen:
        yield f"redis.{setting.name}", setting.doc, default(setting), accepted(setting)


def _cell(text: str, literal: bool = False) -> str:
    if not text:
        return ""
    return f"``{text}``" if literal else text.replace("*", r"\*").replace("|", r"\|")


class SettingsTable(Directive):
    has_content = False
    option_spec: ClassVar[dict[str, Any]] = {
        "scope": lambda value: directives.choice(value, ("client", "app"))
    }

    def run(self) -> list[nodes.Node]:
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 27 32 18 23",
            "   :class: redisx-settings",
            "",
            "   * - key",
            "     - what it does",
            "     - default",
            "     - accepted values",
        ]
        for key, meaning, value, accepts in rows(self.options.get("scope", "")):
            lines += [
                f"   * - ``{key}``",
                f"     - {_cell(meaning)}",
                f"     - {_cell(value, literal=True)}",
                f"     - {_cell(accepts)}",
            ]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="redisx-settings"), 0, container)
        return container.children


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("redisx-settings", SettingsTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
