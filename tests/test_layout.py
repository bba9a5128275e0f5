"""The package keeps the layout docs/architecture.md describes: no import cycle between its
modules, imports between its parts only downward in the order the page lists (function-level
and type-checking imports included), and no module much over 450 lines."""

from __future__ import annotations

import ast
import pathlib
import re

import kedro_prefect

PACKAGE = pathlib.Path(kedro_prefect.__file__).parent
ARCHITECTURE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
# "no module over ~450 lines"; api/ephemeral.py is at 460 until the local server is split out.
MAX_LINES = 450  # "no module over 450 lines"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the kedro_prefect modules it imports, anywhere in its body."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules_of_the_package():
    graph = _imports()
    assert sum(map(len, graph.values())) > 50  # the graph was read (the check can fail)
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_the_size_limit():
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


# --- layers ---------------------------------------------------------------------------------------


def _part(module: str) -> str:
    """The part of the package a module belongs to: its subpackage or top-level module
    (``kedro_prefect.dask.driver`` -> ``dask``, ``kedro_prefect.runner`` -> ``runner``); the
    package's own ``__init__`` (the public facade) is ``kedro_prefect``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _part_imports(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> the modules making that import."""
    found: dict[tuple[str, str], list[str]] = {}
    for module, targets in graph.items():
        for target in targets:
            edge = (_part(module), _part(target))
            if edge[0] != edge[1]:
                found.setdefault(edge, []).append(f"{module} -> {target}")
    return found


def documented_layers(text: str) -> list[str]:
    """The parts in the order docs/architecture.md lists them under "## Layers", top first."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. `([\w.]+?)(?:/|\.py)?`", section, flags=re.MULTILINE)


def layer_violations(imports: dict[tuple[str, str], list[str]], layers: list[str]) -> list[str]:
    """Imports that do not go down the layers (or involve a part the page does not list)."""
    rank = {name: i for i, name in enumerate(["kedro_prefect", *layers])}
    problems = []
    for (source, target), where in sorted(imports.items()):
        if source not in rank or target not in rank:
            unlisted = source if source not in rank else target
            problems.append(f"{unlisted} is not listed under ## Layers ({where[0]})")
        elif rank[source] >= rank[target]:
            problems.append(f"{source} imports {target}, a layer above it: {', '.join(where)}")
    return problems


def test_imports_between_parts_only_go_down_the_documented_layers():
    layers = documented_layers(ARCHITECTURE.read_text())
    parts = {_part(name) for name in _imports()} - {"kedro_prefect"}
    assert sorted(layers) == sorted(parts)  # the page lists every part, once
    imports = _part_imports(_imports())
    assert ("runner", "scheduling") in imports  # the graph was read (the check can fail)
    assert layer_violations(imports, layers) == []


def test_the_layer_check_finds_an_import_going_up():
    layers = documented_layers(ARCHITECTURE.read_text())
    imports = _part_imports(_imports())
    imports[("execution", "dask")] = ["kedro_prefect.execution.local -> kedro_prefect.dask.driver"]
    assert layer_violations(imports, layers) == [
        "execution imports dask, a layer above it: "
        "kedro_prefect.execution.local -> kedro_prefect.dask.driver"
    ]


# --- what `kedro run` imports at start-up ---------------------------------------------------------


def test_importing_the_package_and_building_the_runner_imports_no_server_and_no_dask(tmp_path):
    """``kedro run`` imports kedro_prefect and builds the runner before the session: that must not
    import Prefect's server (the ephemeral API runs in its own process), Dask or distributed."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "import kedro_prefect\n"
        "kedro_prefect.PrefectRunner()\n"
        "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in "
        "('dask', 'distributed', 'prefect_dask') or name.startswith('prefect.server'))))\n"
    )
    # An API URL given: the runner starts no ephemeral API server (none is left behind).
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
