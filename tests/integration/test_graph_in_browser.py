"""The graph artifact as a person sees it: Prefect's UIs in a real browser (headless Chromium).

A ``prefect server start`` with its UI, one ``kedro run`` of the example project in which
``rank_products`` fails, then each UI the server offers (``/ui-settings``: the default UI at
``/`` and, from Prefect 3.9, the V2 UI at ``/v2``) opens the graph artifact's page. Chromium's
``--dump-dom`` gives the page after its scripts ran; a screenshot of each page is saved under
the test's temporary directory (and copied to ``$KEDRO_PREFECT_SCREENSHOTS`` when set: that is
how ``docs/img/graph-artifact-*.png`` are made).

Needs Debian's ``chromium`` package (``.ci/run`` installs it); skipped where it is absent.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    PrefectServer,
    api_client,
    artifacts_of,
    copy_example_project,
    drawn_node_states,
    graph_picture,
    latest_flow_run,
    run_kedro,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="needs a headless browser: Debian's chromium package (apt-get install chromium)",
    ),
]

NODES = [
    "ingest.clean_orders",
    "ingest.clean_products",
    "ingest.join_lines",
    *(
        f"regions.{r}.{s}"
        for r in ("north", "south", "east", "west")
        for s in ("select", "summarize")
    ),
    "combine_regions",
    "rank_products",
]


#: Seconds one Chromium call may take: the UI's scripts run in virtual time (15 s budget), but
#: a loaded machine (two cores shared with a Prefect server) makes the real time much longer.
CHROMIUM_TIMEOUT = 300


def _chromium(url: str, workdir: Path, *args: str) -> str:
    """Headless Chromium on ``url`` with its own profile; its standard output.

    Nothing reaches outside the machine. Chromium runs in its own process group, which is
    killed whole if it overruns (its renderer and GPU processes with it).
    """
    profile = workdir / f"profile-{len(list(workdir.glob('profile-*')))}"
    process = subprocess.Popen(
        [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            "--virtual-time-budget=15000",
            *args,
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish with {url} in {CHROMIUM_TIMEOUT} s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return out


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """A UI server, and the example project run against it with rank_products failing."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect-ui-home"), ui=True)
    server.start()
    try:
        project = copy_example_project(tmp_path_factory.mktemp("graph") / "sales_demo")
        result = run_kedro(
            project,
            "run",
            "--runner=kedro_prefect.PrefectRunner",
            "--params=top_n=not-a-number",  # rank_products fails on it
            env=server.env,
        )
        assert result.returncode != 0, result.stdout + result.stderr
        with api_client(server) as client:
            flow_run = latest_flow_run(client, "sales_demo")
            (artifact,) = artifacts_of(client, flow_run.id, "sales-demo-default-graph")
        yield server, artifact
    finally:
        server.stop()


def _uis(server: PrefectServer) -> dict[str, str]:
    """UI name -> its root URL, as the server's ``/ui-settings`` lists them."""
    root = server.api_url.removesuffix("/api")
    settings = httpx.get(f"{root}/ui-settings", timeout=10).json()
    if "available_uis" not in settings:  # Prefect before 3.9: one UI at /
        return {"v1": root}
    bases = {"v1": settings.get("v1_base_url") or "/", "v2": settings.get("v2_base_url") or "/v2"}
    return {ui: root + bases[ui].rstrip("/") for ui in settings["available_uis"]}


@pytest.mark.timeout(900)  # starts the UI server and runs the project (the module's fixture)
def test_the_final_graph_artifact_is_the_only_one_and_shows_the_outcome(failed_run):
    _, artifact = failed_run
    assert artifact.type == "markdown"
    assert artifact.data.startswith("# Kedro pipeline `__default__`: failed")
    assert "1 failed" in artifact.data and "not run" in artifact.data
    mermaid = artifact.data.split("```mermaid", 1)[1].split("```", 1)[0]
    for name in NODES:
        assert f'("{name}<br/>' in mermaid, name


@pytest.mark.timeout(2 * CHROMIUM_TIMEOUT + 120)
@pytest.mark.parametrize("ui", ["v1", "v2"])
def test_each_ui_shows_the_graph_as_a_picture_with_the_failed_node(failed_run, ui, tmp_path):
    server, artifact = failed_run
    uis = _uis(server)
    if ui not in uis:
        pytest.skip(f"this Prefect server offers no {ui} UI (available: {sorted(uis)})")
    url = f"{uis[ui]}/artifacts/artifact/{artifact.id}"
    screenshot = tmp_path / f"graph-artifact-{ui}.png"
    _chromium(url, tmp_path, f"--screenshot={screenshot}")
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
    dom = _chromium(url, tmp_path, "--dump-dom")
    assert "Kedro pipeline" in dom, dom[-2000:]  # the artifact page, not an error page

    image = re.search(r'<img[^>]*src="(data:image/svg\+xml;base64,[^"]+)"', dom)
    assert image, "no <img> of the pipeline graph on the page"
    svg = graph_picture(image.group(1))
    drawn = drawn_node_states(svg)
    assert set(drawn) == set(NODES)
    assert drawn["rank_products"] == "failed"
    assert drawn["ingest.join_lines"] == "completed"
    assert "<title>rank_products: failed · " in svg  # with its duration
    assert '<g class="legend-failed">' in svg

    if ui == "v2":  # V2 also draws the Mermaid source, nodes classed by state
        assert re.search(r'<svg[^>]+id="mermaid-', dom), "V2 drew no Mermaid diagram"
        failed = re.search(r'<g class="node default failed" id="[^"]*flowchart-(n\d+)-', dom)
        assert failed, "no node drawn as failed by Mermaid"
        assert f'{failed.group(1)}("rank_products<br/>failed' in artifact.data

    target = os.environ.get("KEDRO_PREFECT_SCREENSHOTS")
    if target:
        shutil.copy(screenshot, Path(target) / screenshot.name)
