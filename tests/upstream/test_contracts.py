"""Each private name, server import or patch of an upstream that kedro-prefect relies on is still
there in the installed versions (no server, no Dask cluster, well under a second).

A failure here names the target that a new release of Prefect, Kedro or prefect-dask renamed
or removed: the module of ``kedro_prefect._upstream`` that lists it says what it bought and
needs porting before that release is supported.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import kedro_prefect
from kedro_prefect._upstream import Contract, all_contracts

CONTRACTS = [
    pytest.param(contract, id=f"{module}:{contract.target}")
    for module, contracts in all_contracts().items()
    for contract in contracts
]


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_expected_upstream_target_is_there(contract: Contract) -> None:
    if not contract.expected():
        pytest.skip(f"{contract.target} is not expected in the installed version")
    assert contract.holds(), (
        f"{contract.target} is missing or changed in the installed version; "
        f"kedro-prefect relies on it to {contract.why}"
    )


def test_every_contract_says_what_it_buys() -> None:
    for contracts in all_contracts().values():
        for contract in contracts:
            assert ":" in contract.target or "." in contract.target
            assert len(contract.why) > 20, contract.target


PACKAGE = pathlib.Path(kedro_prefect.__file__).parent
UPSTREAMS = ("prefect", "kedro", "dask", "distributed", "prefect_dask", "fastapi")


def _private_upstream_uses(path: pathlib.Path) -> list[str]:
    """Private upstream names used in one source file, as far as the source shows them.

    Caught: imports of a private module or name of an upstream (``from prefect._internal import
    x``, ``from kedro.io import _private``), imports of ``prefect.server``, and a ``_private``
    attribute (not a ``__dunder__``) read from a name the file imported from an upstream,
    directly or down an attribute chain (``prefect._x``, ``kedro.framework.project._y``,
    ``DaskTaskRunner._optimize_futures``, ``getattr(prefect, "_x")``, ``TaskRunner._started``
    once ``TaskRunner`` is imported from ``prefect``). Not caught: private attributes of
    upstream *instances* reached through other names (``runner._client`` on a task runner the
    file was handed), which no reading of the source can tell from the file's own objects.
    """
    tree = ast.parse(path.read_text())
    found = []
    upstream_names: set[str] = set()  # names bound to upstream modules or their members

    def is_upstream(module: str) -> bool:
        return module.split(".")[0] in UPSTREAMS

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not is_upstream(node.module):
                continue
            private_module = any(part.startswith("_") for part in node.module.split("."))
            private_names = [a.name for a in node.names if a.name.startswith("_")]
            if private_module or private_names or node.module.startswith("prefect.server"):
                found.append(f"{path.name}:{node.lineno} from {node.module} import ...")
            upstream_names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("prefect.server"):
                    found.append(f"{path.name}:{node.lineno} import {alias.name}")
                if is_upstream(alias.name):
                    if any(part.startswith("_") for part in alias.name.split(".")):
                        found.append(f"{path.name}:{node.lineno} import {alias.name}")
                    upstream_names.add(alias.asname or alias.name.split(".")[0])

    def chain_root(expr: ast.expr) -> str | None:
        while isinstance(expr, ast.Attribute):
            expr = expr.value
        return expr.id if isinstance(expr, ast.Name) else None

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            if chain_root(node.value) in upstream_names:
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
            and chain_root(node.args[0]) in upstream_names
        ):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_only_the_upstream_package_touches_private_upstream_names() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "_upstream" in path.parts:
            continue
        offenders += _private_upstream_uses(path)
    assert not offenders, "private upstream names outside kedro_prefect/_upstream: " + ", ".join(
        offenders
    )


def test_the_check_finds_private_attribute_reads_on_upstream_names(tmp_path) -> None:
    source = tmp_path / "planted.py"
    source.write_text(
        "import prefect\n"
        "import kedro.framework.project as project\n"
        "from prefect_dask.task_runners import DaskTaskRunner\n"
        "from kedro_prefect import errors\n"
        "a = prefect.context._private\n"
        "b = project._ProjectSettings\n"
        "c = getattr(DaskTaskRunner, '_optimize_futures')\n"
        "d = prefect.__version__, errors._internal, DaskTaskRunner.duplicate\n"
    )
    assert [use.split(" ", 1)[1] for use in _private_upstream_uses(source)] == [
        "prefect.context._private",
        "project._ProjectSettings",
        "getattr(DaskTaskRunner, '_optimize_futures')",
    ]


def test_the_upstream_package_is_where_they_are() -> None:
    """The check above can fail: the upstream modules themselves do use private names."""
    uses = [
        u for path in (PACKAGE / "_upstream").glob("*.py") for u in _private_upstream_uses(path)
    ]
    assert any("prefect.server" in use for use in uses)
    assert any(
        "_create_hook_manager" in path.read_text() for path in (PACKAGE / "_upstream").glob("*.py")
    )


def test_the_server_app_is_built_final_only_where_fastapi_copies_routes() -> None:
    """``create_app(final=True)`` deletes the routers' routes: right only where FastAPI copied
    them into the app on include (< 0.137); elsewhere every request would answer 500."""
    from fastapi import APIRouter, FastAPI

    from kedro_prefect._upstream.prefect_server import fastapi_copies_routes_on_include

    router = APIRouter()

    @router.get("/probe")
    def probe() -> dict[str, str]:
        return {}

    app = FastAPI()
    app.include_router(router)
    copied = any(route.__class__.__name__ == "APIRoute" for route in app.router.routes)
    assert fastapi_copies_routes_on_include() == copied


def test_installed_versions_are_read_as_numbers() -> None:
    from kedro_prefect._upstream import installed_version, version_at_least

    assert installed_version("prefect")[:1] == (3,)
    assert installed_version("no-such-distribution-here") == ()
    assert version_at_least("prefect", 3, 4)
    assert not version_at_least("prefect", 4)
    assert not version_at_least("no-such-distribution-here", 0)
