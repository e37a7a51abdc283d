"""The messages pyramid_redisx emits, read from its source with ``ast``.

A *message* is the fixed text of a string handed to an exception (``raise X(...)``,
``RedisSettingsError``'s *accepted* part, ``super().__init__`` of our exception classes)
or to a logger's ``warning``/``error``/``critical``/``exception`` call, or queued as a
warning (``warnings.append``). Placeholders — ``%s``-style fields and f-string
``{fields}`` — split a template into its fixed fragments; a fragment too short to mean
anything on its own (``": "``) is dropped. Names bound to a string constant in the same
function or module (``accepted = "expected ..."``) are followed.

``tests/test_docs.py`` checks that every message appears on the troubleshooting page.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyramid_redisx"
LOG_METHODS = {"warning", "warn", "error", "critical", "exception"}
# The last positional argument of these is the message ("what is accepted"); the others
# are the key and the value, which vary.
ACCEPTED_LAST = {"RedisSettingsError", "_fail"}
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdifgrxXeE%]")


@dataclass(frozen=True)
class Message:
    where: str  # module.py:line
    fragments: tuple[str, ...]  # fixed text, in order

    def __str__(self) -> str:
        return f"{self.where}: " + " … ".join(repr(f) for f in self.fragments)


def _meaningful(text: str) -> bool:
    return sum(ch.isalpha() for ch in text) >= 4


def _split(text: str) -> list[str]:
    return _PERCENT.split(text)


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, tree: ast.Module) -> None:
        self.module = module
        self.messages: list[Message] = []
        self.scopes: list[dict[str, ast.expr]] = [self._constants(tree.body)]

    @staticmethod
    def _constants(body: list[ast.stmt]) -> dict[str, ast.expr]:
        """Names assigned exactly once, directly in ``body``, to a string expression."""
        found: dict[str, ast.expr] = {}
        seen: set[str] = set()
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name):
                    if target.id in seen:
                        found.pop(target.id, None)
                        continue
                    seen.add(target.id)
                    if isinstance(node.value, (ast.Constant, ast.JoinedStr)):
                        found[target.id] = node.value
        return found

    def _lookup(self, name: str) -> ast.expr | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def fragments(self, node: ast.expr, depth: int = 0) -> list[str]:
        """Fixed text of a string expression, split at its placeholders."""
        if depth > 5:
            return []
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return _split(node.value)
        if isinstance(node, ast.JoinedStr):
            parts: list[str] = []
            for value in node.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append("\0")  # a field: the fixed text breaks here
                    if isinstance(value, ast.FormattedValue):
                        inner = self.fragments(value.value, depth + 1)
                        parts.extend(f"{f}\0" for f in inner)
            return "".join(parts).split("\0")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return [*self.fragments(node.left, depth + 1), *self.fragments(node.right, depth + 1)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return self.fragments(node.left, depth + 1)
        if isinstance(node, ast.Name):
            bound = self._lookup(node.id)
            return self.fragments(bound, depth + 1) if bound is not None else []
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("format", "replace", "strip")
        ):
            return self.fragments(node.func.value, depth + 1)
        return []

    def _add(self, node: ast.AST, args: list[ast.expr]) -> None:
        fragments: list[str] = []
        for arg in args:
            fragments += self.fragments(arg)
        kept = tuple(" ".join(f.split()) for f in fragments if _meaningful(f))
        if kept:
            self.messages.append(Message(f"{self.module}:{node.lineno}", kept))  # type: ignore[attr-defined]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.scopes.append(self._constants(node.body))
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Raise(self, node: ast.Raise) -> None:
        if isinstance(node.exc, ast.Call):
            self._exception_call(node.exc)
        self.generic_visit(node)

    def _exception_call(self, call: ast.Call) -> None:
        func = call.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name in ACCEPTED_LAST:
            self._add(call, call.args[-1:])
        else:
            self._add(call, list(call.args))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = func.value
            logged = func.attr in LOG_METHODS
            queued = (
                func.attr == "append" and isinstance(owner, ast.Name) and owner.id == "warnings"
            )
            if (logged or queued) and node.args:
                self._add(node, node.args[:1])
            elif (
                func.attr == "__init__"
                and isinstance(owner, ast.Call)
                and isinstance(owner.func, ast.Name)
                and owner.func.id == "super"
            ):
                self._add(node, list(node.args))
        if isinstance(func, ast.Name) and func.id in ACCEPTED_LAST:
            self._add(node, node.args[-1:])  # built here, raised elsewhere
        self.generic_visit(node)


def emitted_messages(package: Path = PACKAGE) -> list[Message]:
    """Every message of every module of the package, in file and line order."""
    messages: list[Message] = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        collector = _Collector(str(path.relative_to(package)), tree)
        collector.visit(tree)
        messages += collector.messages
    unique: dict[tuple[str, ...], Message] = {}
    for message in messages:
        unique.setdefault(message.fragments, message)
    return list(unique.values())


def normalise(text: str) -> str:
    """Whitespace collapsed, RST inline-literal marks and escapes removed."""
    return " ".join(text.replace("``", "").replace("\\", "").split())


def missing_from(page_text: str, messages: list[Message]) -> list[Message]:
    page = normalise(page_text)
    return [m for m in messages if any(normalise(f) not in page for f in m.fragments)]


if __name__ == "__main__":  # print them: a starting point for the troubleshooting page
    for message in emitted_messages():
        print(message)
