"""Helpers for tests: run ``kedro`` in a project, and a real Prefect server process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PROJECT = REPO / "examples" / "sales_demo"
KEDRO = str(Path(sys.executable).with_name("kedro"))
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_kedro(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``kedro <args>`` in ``project`` as a subprocess, with the test environment."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return _completed([KEDRO, *args], project, full_env, timeout)


def run_python(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python <args>`` (this interpreter) in ``cwd``; fails with its error output if it fails.
    ``env``: the whole environment (default: this process's)."""
    result = _completed([sys.executable, *args], cwd, env, timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _completed(
    command: list[str], cwd: Path, env: dict[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def eventually(get, timeout: float = 60.0, interval: float = 0.2):
    """Call ``get`` until it returns a truthy value or ``timeout`` passes; return the last value.

    Prefect task runs reach the API as events, which the server records a moment later: a test
    reading them right after a run polls instead of racing the server.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def is_final(run) -> bool:
    """Whether a flow or task run read from the API has reached a final state.

    A task run recorded from its first event can be read before its state is: ``state`` is
    ``None`` for that moment, which is "not final yet", not an error.
    """
    return run.state is not None and run.state.is_final()


def copy_example_project(target: Path) -> Path:
    """A fresh copy of ``examples/sales_demo`` at ``target``, with no outputs yet."""
    shutil.copytree(
        EXAMPLE_PROJECT,
        target,
        ignore=shutil.ignore_patterns(
            "*.parquet", "region_report.csv", "top_products.csv", "__pycache__", "logs"
        ),
    )
    return target


class PrefectServer:
    """``prefect server start`` on 127.0.0.1 with a free port and its own ``PREFECT_HOME``."""

    def __init__(self, home: Path, ui: bool = False, env: dict[str, str] | None = None):
        self.home = home
        self.ui = ui
        self.extra_env = env or {}
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients of this server."""
        return {"PREFECT_API_URL": self.api_url}

    def start(self, timeout: float = 180) -> None:
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **self.extra_env,
        }
        env.pop("PREFECT_API_URL", None)
        if self.ui:  # the UI's pages call this API (without it: port 4200)
            env["PREFECT_UI_API_URL"] = self.api_url
        self.process = subprocess.Popen(
            [
                PREFECT,
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--ui" if self.ui else "--no-ui",
                "--analytics-off",
            ],
            env=env,
            stdout=open(self.home / "server.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited: {(self.home / 'server.log').read_text()}"
                )
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError("prefect server did not become healthy in time")

    def stop(self) -> None:
        if self.process is None:
            return
        pid = self.process.pid
        try:
            os.killpg(pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


class ProcessGroup:
    """A process started in its own session; :meth:`stop` ends it and its children by PID.

    ``kedro prefect serve`` and ``prefect worker start`` start each flow run as a child
    process: stopping the whole group also stops a flow run left running by a failed test.
    """

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path):
        self.log = log
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=open(log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            if self.process.poll() is not None:
                raise AssertionError(f"process exited before {text!r}:\n{out[-5000:]}")
            time.sleep(0.3)
        raise AssertionError(f"no {text!r} in time:\n{self.output()[-5000:]}")

    def exit_code(self, timeout: float = 120) -> int:
        """Wait for the process to exit; fail with the end of its output if it does not."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tail = self.output()[-5000:]
            raise AssertionError(f"still running after {timeout} s:\n{tail}") from None

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the process (a graceful stop); its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Kill the group (the process and the flow runs it started), whatever state it is in."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)


def api_client(prefect_server):
    """A sync Prefect client of the test ``prefect server``."""
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(prefect_server.api_url)


def latest_flow_run(client, flow_name: str):
    """The flow run of ``flow_name`` that started last."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
        sort=FlowRunSort.START_TIME_DESC,
        limit=1,
    )
    assert runs, f"no flow run of {flow_name!r} on the server"
    return runs[0]


def artifacts_of(client, flow_run_id, key: str, final_within: float = 60.0):
    """The artifacts with ``key`` of one flow run, once updated at the end of the run.

    The graph and node table are created at the start and updated at the end; the update is
    handed to the server (local API) or the courier (a server) as a file, so it lands shortly
    after the run has returned: wait up to ``final_within`` seconds for it.
    """
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    def read():
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )

    deadline = time.monotonic() + final_within
    found = read()
    while time.monotonic() < deadline and not (
        found and all(a.updated and a.created and a.updated > a.created for a in found)
    ):
        time.sleep(0.2)
        found = read()
    return found


def table_rows(artifact) -> list[dict]:
    """The rows of a table artifact."""
    assert artifact.type == "table"
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def graph_picture(markdown: str) -> str:
    """The SVG picture embedded in the graph artifact's markdown (a ``data:`` URI image)."""
    import base64
    import re

    match = re.search(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", markdown)
    assert match, "no SVG picture in the graph artifact"
    return base64.b64decode(match.group(1)).decode()


def drawn_node_states(svg: str) -> dict[str, str]:
    """Node name -> the state it is drawn in (``completed``, ``failed``, ``not_run``...)."""
    import re

    return {
        name: state
        for state, name in re.findall(r'<g class="node state-(\w+)" data-name="([^"]+)"', svg)
    }
