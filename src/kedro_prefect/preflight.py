"""Checks made before any node runs, turning likely set-up mistakes into one clear error."""

from __future__ import annotations

from typing import Any

from kedro_prefect.errors import KedroPrefectError


class PrefectApiUnreachableError(KedroPrefectError):
    """``PREFECT_API_URL`` points to a server that does not answer."""


def ensure_api_reachable(api_url: str, timeout: float = 10.0) -> None:
    """GET ``<api_url>/health``; raise :class:`PrefectApiUnreachableError` if it fails."""
    import httpx

    from kedro_prefect.prefect_api import http_get

    try:
        response = http_get(f"{api_url.rstrip('/')}/health", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise PrefectApiUnreachableError(
            f"Cannot reach the Prefect API at PREFECT_API_URL={api_url} "
            f"({type(exc).__name__}: {exc}). Start that server (`prefect server start`), fix "
            "PREFECT_API_URL, or unset it to let kedro-prefect use a temporary local API."
        ) from None


class MissingPipelineInputError(KedroPrefectError):
    """A free input of the pipeline is neither in the catalog nor produced by a node."""


def missing_input_error(pipeline: Any, message: str) -> MissingPipelineInputError:
    """The error for Kedro's "Pipeline input(s) {...} not found" check, naming the inputs."""
    import ast

    try:
        missing = sorted(ast.literal_eval(message[message.index("{") : message.index("}") + 1]))
    except (ValueError, SyntaxError):
        return MissingPipelineInputError(f"{message}; no node was run.")
    users = sorted(
        node.name for node in pipeline.nodes if any(name in node.inputs for name in missing)
    )
    return MissingPipelineInputError(
        f"Pipeline input(s) {', '.join(missing)} not found in the catalog (needed by "
        f"{', '.join(users)}); no node was run. Declare them in conf/<env>/catalog.yml, or "
        "include the nodes that produce them in the run (check --pipeline, --from-nodes, "
        "--to-nodes, --tags)."
    )
