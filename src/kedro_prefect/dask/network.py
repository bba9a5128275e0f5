"""Checks made before any node runs on an existing cluster (``address=``): is the scheduler there,
and can its workers reach the Prefect API?"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlparse

from kedro_prefect.errors import DaskSchedulerUnreachableError, PrefectRunnerConfigError

#: Seconds to wait for the scheduler at ``address=`` before giving up.
CONNECT_TIMEOUT = 10.0


def check_scheduler_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Open (and close) a connection to the Dask scheduler at ``address``.

    Raises:
        DaskSchedulerUnreachableError: No answer within ``timeout`` seconds.
    """
    from distributed.comm import connect

    async def probe() -> None:
        comm = await connect(address, timeout=timeout)
        await comm.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), timeout + 1))
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise DaskSchedulerUnreachableError(
            f"Cannot reach the Dask scheduler at {address} (task_runner=dask, address=...): "
            f"no connection within {timeout:g} s: {reason}. Start it (`dask scheduler`) or "
            "fix the address; no node has run."
        ) from None


def _host(url_or_address: str) -> str | None:
    if "://" not in url_or_address:
        url_or_address = "tcp://" + url_or_address
    return urlparse(url_or_address).hostname


def is_local_host(host: str | None) -> bool:
    """Whether ``host`` names this machine (loopback, or this machine's name or address)."""
    if not host or host in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    names = {socket.gethostname(), socket.getfqdn()}
    if host in names:
        return True
    try:
        mine = {socket.gethostbyname(name) for name in names}
        return socket.gethostbyname(host) in mine
    except OSError:
        return False


def check_api_reachable_from(address: str, api_url: str) -> None:
    """Refuse a scheduler on another machine when the Prefect API only listens on this one.

    Task runs report their states and logs from the workers: a Prefect API on 127.0.0.1 (the
    ephemeral API, or a server bound to loopback) is out of their reach.

    Raises:
        PrefectRunnerConfigError: The scheduler is remote and the API host is loopback.
    """
    api_host = urlparse(api_url).hostname
    if is_local_host(_host(address)) or not _is_loopback(api_host):
        return
    raise PrefectRunnerConfigError(
        f"PrefectRunner option address={address!r}: the Dask scheduler is on another machine, "
        f"but the Prefect API ({api_url}) only listens on this machine, so the workers could "
        "not report task runs to it. Run a Prefect server the workers can reach "
        "(`prefect server start --host 0.0.0.0`) and set PREFECT_API_URL to its address, "
        "e.g. PREFECT_API_URL=http://<this host>:4200/api."
    )


def _is_loopback(host: str | None) -> bool:
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
