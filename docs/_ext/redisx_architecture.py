"""The package's layers, checked against its imports and drawn from them.

``LAYERS`` lists every module of ``pyramid_redisx/``, bottom layer first; within a layer,
modules are in an order in which each may import the ones before it, unless the layer
is marked independent (its modules never import one another). The rule: a module
imports only modules below it (earlier in this list), at the top of the file. An
import inside a function is allowed only to keep an optional integration optional,
and says so with ``# optional:`` on its line.

``violations()`` checks that rule on the source (``tests/test_architecture.py`` runs
it in the test command), and the ``.. redisx-layers::`` directive draws the layers and
every import from the same source when the docs are built: the picture cannot drift.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parents[2] / "pyramid_redisx"


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]
    independent: bool = False  # its modules never import one another
    note: str = ""


LAYERS: tuple[Layer, ...] = (
    Layer("pure", ("errors", "redact", "settings"), note="no I/O: exceptions, redaction, settings → options"),
    Layer("guard", ("redis_py",), note="the installed redis-py: tested range, shape of the internals we use"),
    Layer("circuit", ("breaker",), note="when a client stops trying: the circuit breaker of a pool"),
    Layer("rules", ("diagnose", "retries", "failsoft", "workers", "pubsub"), independent=True, note="why a connection failed; what may be sent again; what a fail-soft caller may swallow; whether a worker replaces another; a subscription is never resumed silently"),
    Layer("pools", ("pools",), note="the standalone pool, its queue and wait log, connection arguments"),
    Layer("probes and accounting", ("probe", "usage"), independent=True, note="a lone connection to a server; what one request did"),
    Layer("topologies", ("sentinel", "cluster"), independent=True, note="each builds its pools (and Cluster its client) from the layers below"),
    Layer("topology choice", ("topology",), note="the one place that picks a kind from the options"),
    Layer("client cache", ("client_cache",), note="reads answered from process memory, invalidated by the server (CLIENT TRACKING)"),
    Layer("clients", ("client",), note="the accounted client and pipeline, ClientSet, client_set(registry)"),
    Layer("request and reports", ("stats", "request", "startup", "health"), note="the request lifecycle, the stats line, the checks"),
    Layer("telemetry", ("telemetry",), note="spans and metrics of commands, pipelines and requests (off by default)"),
    Layer("integrations and tools", ("aio", "cli", "debugtoolbar", "dogpile_cache", "http_cache", "prometheus", "queue", "sessions", "tm"), independent=True, note="each uses the layers below; nothing uses them but config and __init__"),
    Layer("configuration", ("config",), note="includeme and add_redis_client"),
    Layer("package", ("__init__",), note="the public names"),
    Layer("test support", ("servers", "testing"), note="real servers and the pytest plugin; the runtime never imports them"),
)  # fmt: skip

MARKER = "# optional:"


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module of the package
    line: int
    inner: bool  # inside a function
    marked: bool  # carries the ``# optional:`` marker


def _order() -> dict[str, tuple[int, int]]:
    """module → (layer index, position in layer), bottom first."""
    return {
        module: (index, position)
        for index, layer in enumerate(LAYERS)
        for position, module in enumerate(layer.modules)
    }


def _target(module: str, node: ast.ImportFrom | ast.Import, package: str) -> list[str]:
    """Modules of the package that an import statement in ``module`` names."""
    names: list[str] = []
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level == 0 and not (base == package or base.startswith(package + ".")):
            return []
        if node.level == 0:
            base = base[len(package) + 1 :] if base != package else ""
        elif node.level > 1:
            return []  # nothing above the package
        head = base.split(".")[0]
        if head:
            names.append(head)
        else:  # ``from . import a, b``
            names.extend(alias.name for alias in node.names)
    else:
        for alias in node.names:
            if alias.name.startswith(package + "."):
                names.append(alias.name.split(".")[1])
    return names


def imports(package_dir: Path = PACKAGE) -> list[Import]:
    """Every import of one package module by another, wherever it stands in the file."""
    package = package_dir.name
    found: list[Import] = []
    for path in sorted(package_dir.glob("*.py")):
        module = path.stem
        text = path.read_text()
        lines = text.splitlines()

        def visit(
            node: ast.AST, inner: bool, module: str = module, lines: list[str] = lines
        ) -> None:
            for child in ast.iter_child_nodes(node):
                is_function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for target in _target(module, child, package):
                        line = lines[child.lineno - 1]
                        found.append(Import(module, target, child.lineno, inner, MARKER in line))
                visit(child, inner or is_function)

        visit(ast.parse(text), False)
    return found


def inner_imports(package_dir: Path = PACKAGE) -> list[tuple[str, int, str, bool]]:
    """(module, line, statement, marked) of every import inside a function, any module,
    and of every ``import_module`` call (an import by name dodges the graph)."""
    found = []
    for path in sorted(package_dir.glob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for child in ast.walk(node):
                    if isinstance(child, ast.Import | ast.ImportFrom) or (
                        isinstance(child, ast.Call)
                        and ast.unparse(child.func).endswith("import_module")
                    ):
                        line = lines[child.lineno - 1]
                        found.append((path.stem, child.lineno, line.strip(), MARKER in line))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's smallest representative, found by depth-first search."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    found.append([*path, start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return found


def violations(package_dir: Path = PACKAGE) -> list[str]:
    """What breaks the layering, one line each (empty when the package keeps it)."""
    order = _order()
    modules = {path.stem for path in package_dir.glob("*.py")}
    problems = [f"{m}.py is in no layer: add it to LAYERS" for m in sorted(modules - set(order))]
    problems += [f"LAYERS names {m}, which does not exist" for m in sorted(set(order) - modules)]
    edges: dict[str, set[str]] = {}
    for item in imports(package_dir):
        edges.setdefault(item.source, set()).add(item.target)
        where = f"{item.source}.py:{item.line} imports {item.target}"
        if item.source not in order or item.target not in order:
            continue
        (src_layer, src_pos), (dst_layer, dst_pos) = order[item.source], order[item.target]
        if src_layer == dst_layer and LAYERS[src_layer].independent:
            problems.append(f"{where}: both in the independent layer {LAYERS[src_layer].name!r}")
        elif (dst_layer, dst_pos) >= (src_layer, src_pos):
            problems.append(
                f"{where}: {item.target} is not below {item.source} "
                f"({LAYERS[dst_layer].name!r} vs {LAYERS[src_layer].name!r})"
            )
    for module, line, statement, marked in inner_imports(package_dir):
        if not marked:
            problems.append(
                f"{module}.py:{line} imports inside a function (allowed only to keep an "
                f"optional integration optional, with '{MARKER} why' on the line): {statement}"
            )
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return problems


# ---------------------------------------------------------------- the drawing
BOX_H, ROW_GAP, CHAR_W, PAD, WIDTH, LABEL_W = 26, 34, 7.4, 10, 940, 190


def svg(package_dir: Path = PACKAGE) -> str:
    """The layers as rows of boxes, top layer first, and every import as a line down."""
    edges = sorted({(i.source, i.target) for i in imports(package_dir)})
    rows = list(reversed(LAYERS))
    places: dict[str, tuple[float, float, float]] = {}  # module → (x centre, top y, width)
    for row, layer in enumerate(rows):
        y = PAD + row * (BOX_H + ROW_GAP)
        widths = [len(m) * CHAR_W + 2 * PAD for m in layer.modules]
        span = sum(widths) + PAD * (len(widths) - 1)
        x = LABEL_W + (WIDTH - LABEL_W - span) / 2
        for module, width in zip(layer.modules, widths, strict=True):
            places[module] = (x + width / 2, y, width)
            x += width + PAD
    height = PAD * 2 + len(rows) * (BOX_H + ROW_GAP) - ROW_GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" '
        f'width="100%" role="img" aria-label="pyramid_redisx layers and imports" '
        f'style="max-width:{WIDTH}px;font:12px monospace">',
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#8a9bb0"/></marker></defs>',
    ]
    for row, layer in enumerate(rows):
        y = PAD + row * (BOX_H + ROW_GAP) + BOX_H / 2 + 4
        parts.append(f'<text x="4" y="{y:.0f}" fill="#555">{escape(layer.name)}</text>')
    for source, target in edges:
        if source not in places or target not in places:
            continue
        (x1, y1, _), (x2, y2, _) = places[source], places[target]
        parts.append(
            f'<line x1="{x1:.0f}" y1="{y1 + BOX_H:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" '
            'stroke="#8a9bb0" stroke-width="0.8" marker-end="url(#arrow)"/>'
        )
    for module, (x, y, width) in places.items():
        parts.append(
            f'<rect x="{x - width / 2:.0f}" y="{y:.0f}" width="{width:.0f}" height="{BOX_H}" '
            'rx="4" fill="#eef3f8" stroke="#456"/>'
            f'<text x="{x:.0f}" y="{y + BOX_H / 2 + 4:.0f}" text-anchor="middle">{escape(module)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def table_rows(package_dir: Path = PACKAGE) -> list[tuple[str, str, str, str]]:
    """(layer, module, what it is, what it imports) per module, top layer first."""
    targets: dict[str, set[str]] = {}
    for item in imports(package_dir):
        targets.setdefault(item.source, set()).add(item.target)
    rows = []
    for layer in reversed(LAYERS):
        for module in layer.modules:
            path = package_dir / f"{module}.py"
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            first = doc.split("\n\n")[0].replace("\n", " ").replace("``", "")
            rows.append(
                (layer.name, module, first, ", ".join(sorted(targets.get(module, ()))) or "—")
            )
    return rows


def setup(app: Any) -> dict[str, Any]:
    from docutils import nodes  # optional: only Sphinx builds use the directive
    from docutils.parsers.rst import Directive  # optional: as above

    class LayersDirective(Directive):
        """``.. redisx-layers::`` — the drawing and the module table, from the code."""

        def run(self) -> list[Any]:
            problems = violations()
            if problems:
                raise self.error("the package breaks its layering: " + "; ".join(problems))
            picture = nodes.raw("", svg(), format="html")
            table = nodes.table()
            group = nodes.tgroup(cols=4)
            table += group
            for width in (14, 12, 50, 24):
                group += nodes.colspec(colwidth=width)
            head = nodes.thead()
            group += head
            body = nodes.tbody()
            group += body
            for cells, section in (
                (("layer", "module", "what it is", "imports"), head),
                *((row, body) for row in table_rows()),
            ):
                row_node = nodes.row()
                for text in cells:
                    entry = nodes.entry()
                    entry += nodes.paragraph(text=text)
                    row_node += entry
                section += row_node
            return [picture, table]

    app.add_directive("redisx-layers", LayersDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
