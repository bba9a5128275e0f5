"""The code part of a node's fingerprint: its function and the project code it reaches.

A node's code is its function's source, plus the source of every function and class of the
project's own package that the function reaches: the names its code (and the code of nested
functions and lambdas) reads, resolved in its module's globals and closure, followed through
project modules (``helpers.clean(x)``, ``from .utils import parse``) and from each reached
function or class to what *it* reads, in any module of the package. A module-level constant of
the project that a reached function reads counts by its value. Code of installed libraries and
the standard library does not count: only objects whose ``__module__`` is the project's package
or one of its submodules are followed.

What it cannot see: names built at run time (``getattr(module, name)``, ``importlib``), code
reached only through an object passed in as data, and a change in a module's import-time code
that no reached function reads (a global rebound at import time counts only if it is a plain
value that is read).

The cost is reading the source of each reached function once per run (``inspect.getsource``,
from Python's line cache), shared between the nodes that reach it; it grows with the project
code the nodes reach, not with the project's size.
"""

from __future__ import annotations

import functools
import inspect
import types
from typing import TYPE_CHECKING, Any

from kedro_prefect.cache.fingerprint import digest, value_fingerprint

if TYPE_CHECKING:
    from kedro.pipeline.node import Node

_PLAIN = (str, bytes, int, float, bool, type(None))


class CodeFingerprints:
    """The code fingerprints of one run's nodes (sources read once per run and shared)."""

    def __init__(self, package: str | None):
        self._package = package
        self._texts: dict[int, tuple[Any, Any]] = {}  # id -> (object, text); keeps it alive
        self._checked: set[str] = set()  # files whose line cache was checked this run

    def node(self, node: Node) -> str:
        """The node's code: function (and the project code it reaches), name, inputs, outputs."""
        return digest(
            "code",
            node.name,
            list(node.inputs),
            list(node.outputs),
            list(getattr(node, "confirms", None) or []),
            self._function_text(node.func),
            self._reached(node.func),
        )

    # --- what a function is -------------------------------------------------------------------

    def _function_text(self, func: Any) -> Any:
        if isinstance(func, functools.partial):
            return [
                "partial",
                self._function_text(func.func),
                value_fingerprint(func.args),
                value_fingerprint(func.keywords),
            ]
        return self._text(inspect.unwrap(func) if callable(func) else func)

    def _text(self, target: Any) -> Any:
        known = self._texts.get(id(target))
        if known is not None and known[0] is target:
            return known[1]
        name = (
            f"{getattr(target, '__module__', '?')}."
            f"{getattr(target, '__qualname__', type(target).__qualname__)}"
        )
        try:
            text: Any = [name, self._source(target)]
        except (OSError, TypeError):
            call = type(target).__call__ if not hasattr(target, "__code__") else None
            code = getattr(target, "__code__", None) or getattr(call, "__code__", None)
            if code is None:
                text = [name]
            else:
                text = [name, code.co_code.hex(), repr(code.co_consts), list(code.co_names)]
        self._texts[id(target)] = (target, text)
        return text

    def _source(self, target: Any) -> str:
        """The source lines of a function, from Python's line cache (checked once per file and
        run, so an edit is seen); anything else through ``inspect.getsource``."""
        code = getattr(target, "__code__", None)
        if isinstance(code, types.CodeType):
            import linecache

            filename = code.co_filename
            if filename not in self._checked:
                self._checked.add(filename)
                linecache.checkcache(filename)
            lines = linecache.getlines(filename)
            last = max(
                (line for c in _code_objects(code) for *_, line in c.co_lines() if line),
                default=0,
            )
            if lines and last >= code.co_firstlineno:
                return "".join(lines[code.co_firstlineno - 1 : last])
        return inspect.getsource(target)

    # --- what a function reaches --------------------------------------------------------------

    def _in_project(self, module_name: str | None, root: Any) -> bool:
        if not module_name:
            return False
        package = self._package or getattr(root, "__module__", None)
        if not package:
            return False
        if self._package is None:  # no project known: the node function's own module only
            return module_name == package
        return module_name == package or module_name.startswith(package + ".")

    def _reached(self, func: Any) -> list[Any]:
        """``[qualified name, text]`` of the project functions, classes and constants ``func``
        reaches (directly or through other project code), sorted; ``func`` itself excluded."""
        while isinstance(func, functools.partial):
            func = func.func
        root = inspect.unwrap(func) if callable(func) else func
        found: dict[str, Any] = {}
        seen: set[int] = {id(root)}
        pending = [root]
        while pending:
            current = pending.pop()
            for key, obj in self._references(current, root):
                if isinstance(obj, types.FunctionType | type):
                    if id(obj) in seen:
                        continue
                    seen.add(id(obj))
                    found[key] = self._text(obj)
                    pending.append(obj)
                else:
                    found[key] = ["value", digest(_canonical(obj))]
        return sorted(found.items())

    def _references(self, obj: Any, root: Any) -> list[tuple[str, Any]]:
        """Project objects that ``obj`` (a function or class) reads, by qualified name."""
        if isinstance(obj, type):
            out: list[tuple[str, Any]] = []
            for base in obj.__bases__:
                if self._in_project(base.__module__, root):
                    out.append((f"{base.__module__}.{base.__qualname__}", base))
            for member in vars(obj).values():
                inner = getattr(member, "__func__", None) or getattr(member, "fget", None)
                member = inner or member
                if isinstance(member, types.FunctionType):
                    out.extend(self._references(member, root))
            return out
        code = getattr(obj, "__code__", None)
        if code is None:
            return []
        names = _code_names(code)
        namespace = dict(getattr(obj, "__globals__", {}))
        for var, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
            try:
                namespace[var] = cell.cell_contents
            except ValueError:  # an empty cell
                continue
        out = []
        modules: list[types.ModuleType] = []
        for name in names:
            if name not in namespace:
                continue  # a builtin, an attribute name, or not bound (yet)
            self._classify(namespace[name], name, obj, root, out, modules)
        while modules:  # attributes of project modules the code reads: helpers.clean, ...
            module = modules.pop()
            for name in names:
                if name in vars(module):
                    self._classify(vars(module)[name], name, module, root, out, modules)
        return out

    def _classify(
        self, value: Any, name: str, owner: Any, root: Any, out: list, modules: list
    ) -> None:
        if isinstance(value, types.ModuleType):
            if self._in_project(value.__name__, root) and value not in modules:
                modules.append(value)
            return
        if isinstance(value, functools.partial):
            value = value.func
        if isinstance(value, types.FunctionType | type):
            value = inspect.unwrap(value) if callable(value) else value
            module = getattr(value, "__module__", None)
            if self._in_project(module, root):
                out.append((f"{module}.{value.__qualname__}", value))
            return
        owner_module: str | None
        if isinstance(owner, types.ModuleType):
            owner_module = owner.__name__
        else:
            owner_module = getattr(owner, "__module__", None)
        if self._in_project(owner_module, root) and _is_plain(value):
            out.append((f"{owner_module}.{name}", value))


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    """``code`` and every code object nested in it (functions, lambdas, comprehensions)."""
    found, stack = [], [code]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return found


def _code_names(code: types.CodeType) -> set[str]:
    """Every global, attribute and free-variable name read by ``code`` and its nested code."""
    names: set[str] = set()
    for current in _code_objects(code):
        names.update(current.co_names)
        names.update(current.co_freevars)
    return names


def _canonical(value: Any) -> Any:
    """A plain value as JSON the same in every process (sets sorted, bytes as hex)."""
    if isinstance(value, bytes):
        return ["bytes", value.hex()]
    if isinstance(value, float | int | str | bool | type(None)):
        return [type(value).__name__, value]
    if isinstance(value, set | frozenset):
        return ["set", sorted(json_text(_canonical(v)) for v in value)]
    if isinstance(value, dict):
        return ["dict", sorted([json_text(_canonical(k)), _canonical(v)] for k, v in value.items())]
    return [type(value).__name__, [_canonical(v) for v in value]]


def json_text(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _is_plain(value: Any, depth: int = 0) -> bool:
    """A small plain value (a module-level constant worth its value in the fingerprint)."""
    if isinstance(value, _PLAIN):
        return True
    if depth > 3:
        return False
    if isinstance(value, list | tuple | set | frozenset):
        return len(value) <= 1000 and all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= 1000 and all(
            _is_plain(k, depth + 1) and _is_plain(v, depth + 1) for k, v in value.items()
        )
    return False
