"""What a user sees of a run: artifacts and node logs in Prefect, progress and summary on a TTY.

One ``kedro run`` of the example project (the quick start's command with runner options)
reports to a real ``prefect server start``; everything is read back through the Prefect API.
A second run, under a pseudo-terminal, fails on purpose to show the terminal summary.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.helpers import (
    EXAMPLE_PROJECT,
    KEDRO,
    PrefectServer,
    api_client,
    artifacts_of,
    copy_example_project,
    eventually,
    latest_flow_run,
    table_rows,
)
from tests.integration.test_quickstart import quickstart_server_command

pytestmark = pytest.mark.integration

NODES = {
    "ingest.clean_orders",
    "ingest.clean_products",
    "ingest.join_lines",
    *(
        f"regions.{r}.{step}"
        for r in ("north", "south", "east", "west")
        for step in ("select", "summarize")
    ),
    "combine_regions",
    "rank_products",
}
# Colours, cursor moves and hyperlinks that rich writes to a terminal.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def _kedro(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KEDRO, *args],
        cwd=project,
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _kedro_in_pty(project: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``kedro`` with stdout and stderr on a pseudo-terminal; return (exit code, output)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [KEDRO, *args],
        cwd=project,
        env={**os.environ, "COLUMNS": "160", "LINES": "50", "TERM": "xterm", **env},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    output = b"".join(chunks).decode("utf-8", "replace")
    return process.wait(timeout=60), ANSI_ESCAPE.sub("", output)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    server = PrefectServer(tmp_path_factory.mktemp("prefect-ui-home"), ui=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server_run(prefect_server, tmp_path_factory):
    """The quick start's server command on the example project, output to pipes."""
    _, args = quickstart_server_command()
    assert "flow_name=nightly" in " ".join(args)  # the flow the tests below look for
    project = copy_example_project(tmp_path_factory.mktemp("observed") / "sales_demo")
    result = _kedro(project, *args, env=prefect_server.env)
    assert result.returncode == 0, result.stdout + result.stderr
    return project, result


def test_quick_start_run_writes_the_reports(server_run):
    project, _ = server_run
    report = pd.read_csv(project / "data" / "08_reporting" / "region_report.csv")
    assert sorted(report["region"]) == ["east", "north", "south", "west"]
    assert (project / "data" / "08_reporting" / "top_products.csv").stat().st_size > 0


def test_graph_artifact_names_every_node_in_a_mermaid_block(server_run, prefect_server):
    with api_client(prefect_server) as client:
        flow_run = latest_flow_run(client, "nightly")
        (artifact,) = artifacts_of(client, flow_run.id, "nightly-default-graph")
    assert artifact.type == "markdown"
    mermaid = artifact.data.split("```mermaid", 1)[1].split("```", 1)[0]
    for name in NODES:  # updated at the end: each node's state and duration
        assert f'("{name}<br/>completed · ' in mermaid, name
    assert "data:image/svg+xml;base64," in artifact.data  # the picture every UI shows
    assert "subgraph ns" in mermaid and '["north"]' in mermaid  # namespaces as subgraphs


def test_table_artifact_has_one_row_per_node(server_run, prefect_server):
    with api_client(prefect_server) as client:
        flow_run = latest_flow_run(client, "nightly")
        (artifact,) = artifacts_of(client, flow_run.id, "nightly-default-nodes")
    rows = table_rows(artifact)
    assert sorted(row["node"] for row in rows) == sorted(NODES)
    for row in rows:
        assert row["state"] == "Completed", row
        assert row["attempts"] == 1, row
        assert row["start"] and row["duration"].endswith(" s") and row["worker"], row


def test_node_log_records_land_in_their_task_runs(server_run, prefect_server):
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterTaskRunId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    project, result = server_run
    assert (project / "conf" / "logging.yml").read_text() == (
        EXAMPLE_PROJECT / "conf" / "logging.yml"
    ).read_text()
    with api_client(prefect_server) as client:
        flow_run = latest_flow_run(client, "nightly")
        (task_run,) = eventually(
            lambda: client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["ingest.clean_orders"])),
            )
        )
        deadline = time.monotonic() + 30
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run.id]))
            )
            by_logger = {log.name: log.message for log in logs}
            if "sales_demo.hooks" in by_logger or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    messages = "\n".join(f"{log.name}: {log.message}" for log in logs)
    # Kedro's own records, the project's hook, all in this node's task run and no other's.
    assert "kedro.pipeline.node: Running node: clean_orders" in messages
    assert "kedro.io.data_catalog: Loading data from orders_raw" in messages
    assert "sales_demo.hooks: sales_demo hook: node ingest.clean_orders took" in messages
    assert "rank_products" not in messages
    # The project's console handler (Kedro's RichHandler) still prints them, once each.
    console = result.stdout + result.stderr
    assert console.count("sales_demo hook: node ingest.clean_orders took") == 1
    assert " | INFO    | sales_demo.hooks - " not in console  # not Prefect's console format


def test_no_progress_or_summary_in_a_pipe(server_run):
    _, result = server_run
    output = result.stdout + result.stderr
    assert "Pipeline completed" not in output
    assert "slowest nodes" not in output
    assert "/13 nodes" not in output


@pytest.mark.timeout(900)  # starts a Prefect server with its UI, then runs the project
def test_progress_and_summary_on_a_terminal(ui_server, tmp_path):
    project = copy_example_project(tmp_path / "sales_demo")
    # top_n must be an int: rank_products fails, its siblings and ancestors still complete.
    code, output = _kedro_in_pty(
        project,
        "run",
        "--runner=kedro_prefect.PrefectRunner",
        "--params=top_n=not-a-number",
        env=ui_server.env,
    )
    assert code != 0, output
    assert "/13 nodes" in output  # the live progress bar was drawn
    assert "Pipeline failed" in output
    assert "slowest nodes" in output
    assert "failed: rank_products" in output
    assert "TypeError" in output.split("failed: rank_products", 1)[1].splitlines()[0]
    with api_client(ui_server) as client:
        flow_run = latest_flow_run(client, "sales_demo")
        (artifact,) = artifacts_of(client, flow_run.id, "sales-demo-default-nodes")
    # The server serves Prefect's UI: the terminal links to this flow run's page as Prefect's
    # own CLI does (PREFECT_UI_URL + the page's path: one UI whichever link is followed), and
    # to the graph artifact.
    ui_url = ui_server.api_url.removesuffix("/api")
    ui_settings = httpx.get(f"{ui_url}/ui-settings", timeout=10).json()
    if "v1" not in ui_settings.get("available_uis", ["v1"]):
        ui_url += ui_settings["v2_base_url"].rstrip("/")
    assert f"Prefect flow run: {ui_url}/runs/flow-run/{flow_run.id}" in output
    with api_client(ui_server) as client:
        (graph,) = artifacts_of(client, flow_run.id, "sales-demo-default-graph")
    assert f"Pipeline graph: {ui_url}/artifacts/artifact/{graph.id}" in output
    rows = {row["node"]: row for row in table_rows(artifact)}
    assert set(rows) == NODES
    assert rows["rank_products"]["state"] == "Failed"
    assert rows["ingest.join_lines"]["state"] == "Completed"


def test_no_ui_link_for_a_server_without_ui(prefect_server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from kedro_prefect.observe.recorder import _api_and_ui_urls

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        assert _api_and_ui_urls() == (prefect_server.api_url, None)  # started with --no-ui
