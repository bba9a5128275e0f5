"""Checks made before any node runs, turning likely set-up mistakes into one clear error."""

from __future__ import annotations

from kedro_prefect.errors import KedroPrefectError


class PrefectApiUnreachableError(KedroPrefectError):
    """``PREFECT_API_URL`` points to a server that does not answer."""


def ensure_api_reachable(api_url: str, timeout: float = 10.0) -> None:
    """GET ``<api_url>/health``; raise :class:`PrefectApiUnreachableError` if it fails."""
    import httpx

    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise PrefectApiUnreachableError(
            f"Cannot reach the Prefect API at PREFECT_API_URL={api_url} "
            f"({type(exc).__name__}: {exc}). Start that server (`prefect server start`), fix "
            "PREFECT_API_URL, or unset it to let kedro-prefect use a temporary local API."
        ) from None
