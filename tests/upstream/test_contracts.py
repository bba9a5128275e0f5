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
    """Imports of private upstream names, of ``prefect.server``, and ``_private`` attributes
    read from an upstream module object, in one source file."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root not in UPSTREAMS:
                continue
            private_module = any(part.startswith("_") for part in node.module.split("."))
            private_names = [a.name for a in node.names if a.name.startswith("_")]
            if private_module or private_names or node.module.startswith("prefect.server"):
                found.append(f"{path.name}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("prefect.server"):
                    found.append(f"{path.name}:{node.lineno} import {alias.name}")
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
