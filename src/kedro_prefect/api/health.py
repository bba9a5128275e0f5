"""One health check of a Prefect API, used before a run and before deploying.

One plain ``GET <api>/health``, no retries (a server that is down must fail fast, not back
off), with the API key when one is configured. When ``/health`` answers 404 but
``<url>/api/health`` answers, the URL is missing its ``/api`` suffix and the error says so.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

from kedro_prefect.errors import PrefectApiUnreachableError


def http_get(url: str, timeout: float, headers: dict[str, str] | None = None) -> Any:
    """``httpx.get``, without loading CA certificates (~30 ms a client) for ``http://`` URLs."""
    import httpx

    verify: Any = plain_http_ssl_context() if url.startswith("http://") else True
    return httpx.get(url, timeout=timeout, verify=verify, headers=headers)


@functools.cache
def plain_http_ssl_context() -> ssl.SSLContext:
    """An SSL context for clients of ``http://`` URLs: no CA loaded, verification left on.

    Plain HTTP never uses it; a redirect to ``https://`` would fail verification instead of
    skipping it.
    """
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect's settings see it (env, profile or ``.env``)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def api_problem(api_url: str, timeout: float = 10.0) -> str | None:
    """Why the Prefect API at ``api_url`` does not answer its health check; ``None`` if it does."""
    import httpx
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    api_key = settings.api.key.get_secret_value() if settings.api.key else None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = api_url.rstrip("/")
    try:
        response = http_get(f"{base}/health", timeout=timeout, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}".rstrip(": ")
    if response.status_code == 200:
        return None
    problem = f"HTTP {response.status_code}"
    if response.status_code == 404 and not base.endswith("/api"):
        try:
            suffixed = http_get(f"{base}/api/health", timeout=timeout, headers=headers)
        except httpx.HTTPError:
            return problem
        if suffixed.status_code == 200:
            return (
                f"{problem}; a Prefect API answers at {base}/api: the URL must end with /api, "
                f"set PREFECT_API_URL={base}/api"
            )
    return problem


def ensure_api_reachable(api_url: str, timeout: float = 10.0) -> None:
    """Raise :class:`PrefectApiUnreachableError` if the API at ``api_url`` does not answer."""
    problem = api_problem(api_url, timeout)
    if problem is not None:
        raise PrefectApiUnreachableError(
            f"Cannot reach the Prefect API at PREFECT_API_URL={api_url} ({problem}). Start that "
            "server (`prefect server start`), fix PREFECT_API_URL, or unset it to let "
            "kedro-prefect use a temporary local API."
        )
