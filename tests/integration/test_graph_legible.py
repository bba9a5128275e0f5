"""The graph and node table artifacts of a wide pipeline, read in Prefect's UI at a laptop's
window size.

A UI server (``prefect server start``), the final graph artifact of a pipeline with many
steps in a row (the shape that used to be a 2000 px wide strip), of a namespaced broad one
(eight namespaces side by side) and of the example project, and headless Chromium at
1400x1000 driven over its DevTools protocol: the test asks the page how wide the UI shows the
picture and how wide the picture is, which gives the size the node names are rendered at.
The node table's duration column is in view without scrolling the table sideways.
A screenshot of each UI's graph is saved under the test's temporary directory (and copied to
``$KEDRO_PREFECT_SCREENSHOTS`` when set).

Needs Debian's ``chromium`` package (``.ci/run`` installs it); skipped where it is absent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from kedro.pipeline import Pipeline, node

from tests.helpers import EXAMPLE_PROJECT, PrefectServer
from tests.pipelines import namespaced_broad_pipeline

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="needs a headless browser: Debian's chromium package (apt-get install chromium)",
    ),
]

#: The smallest size, in CSS pixels, a node name may be rendered at.
LEGIBLE = 11


def _step(x):
    return x


def wide_pipeline() -> Pipeline:
    """Three branches of eight steps with long names, joined at the end (25 nodes)."""
    nodes = []
    for branch in ("companies", "shuttles", "reviews"):
        for k in range(8):
            source = f"{branch}_raw" if k == 0 else f"{branch}_intermediate_{k - 1}"
            name = f"preprocess_{branch}_step_{k}_node"
            nodes.append(node(_step, source, f"{branch}_intermediate_{k}", name=name))
    ends = [f"{b}_intermediate_7" for b in ("companies", "shuttles", "reviews")]
    nodes.append(node(lambda *a: a[0], ends, "model_input_table", name="create_model_input_table"))
    return Pipeline(nodes)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    server = PrefectServer(tmp_path_factory.mktemp("legible-ui-home"), ui=True)
    server.start()
    yield server
    server.stop()


def example_pipeline() -> Pipeline:
    """The example project's ``__default__`` pipeline (namespaces ``ingest`` and four
    ``regions.<name>`` side by side: it used to be drawn 958 px wide, names at 9.4 px)."""
    import sys

    sys.path.insert(0, str(EXAMPLE_PROJECT / "src"))
    try:
        from sales_demo.pipeline_registry import register_pipelines

        return register_pipelines()["__default__"]
    finally:
        sys.path.remove(str(EXAMPLE_PROJECT / "src"))


PIPELINES = {
    "wide": wide_pipeline,
    "namespaced": lambda: namespaced_broad_pipeline(8),
    "example": example_pipeline,
}


def _artifact(server: PrefectServer, kind: str, shape: str = "wide") -> str:
    """The final graph (``kind="graph"``) or node table artifact of a completed run of
    one of :data:`PIPELINES`, as the runner writes them; its id."""
    from datetime import UTC, datetime

    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Completed

    from kedro_prefect.observe.artifacts import graph_markdown, node_table
    from kedro_prefect.observe.base import PipelineRun

    run = PipelineRun(PIPELINES[shape](), None, shape, ["__default__"])
    for record in run.nodes.values():
        record.state, record.submitted_at, record.finished_at = Completed(), 0.0, 0.42
        record.attempts, record.start, record.worker = 1, datetime.now(UTC), "tcp://127.0.0.1:40000"
    run.ended_at = run.started_at + 3.0
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        if kind == "graph":
            return str(
                create_markdown_artifact(graph_markdown(run, final=True), key=f"{shape}-graph")
            )
        return str(create_table_artifact(node_table(run), key="wide-nodes"))


def _uis(server: PrefectServer) -> dict[str, str]:
    root = server.api_url.removesuffix("/api")
    settings = httpx.get(f"{root}/ui-settings", timeout=10).json()
    if "available_uis" not in settings:
        return {"v1": root}
    bases = {"v1": settings.get("v1_base_url") or "/", "v2": settings.get("v2_base_url") or "/v2"}
    return {ui: root + bases[ui].rstrip("/") for ui in settings["available_uis"]}


class Browser:
    """Headless Chromium in its own process group, driven over the DevTools protocol."""

    def __init__(self, workdir: Path):
        self.profile = workdir / "profile"
        self.process = subprocess.Popen(
            [
                shutil.which("chromium") or "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={self.profile}",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._id = 0
        self.socket = None

    def connect(self, timeout: float = 120) -> None:
        from websockets.sync.client import connect

        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=30).json()
        page = next(p for p in pages if p["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=60)

    def call(self, method: str, **params):
        self._id += 1
        self.socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=120))
            if message.get("id") == self._id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


#: What the page shows of the graph picture: its width on screen and its own width.
MEASURE = """(() => {
  const img = [...document.querySelectorAll('img')].find(
      i => i.src.startsWith('data:image/svg+xml') && i.complete && i.naturalWidth > 0);
  if (!img) return null;
  const box = img.getBoundingClientRect();
  return {shown: box.width, natural: img.naturalWidth, right: box.right,
          viewport: document.documentElement.clientWidth};
})()"""


@pytest.mark.timeout(900)
@pytest.mark.parametrize("shape", sorted(PIPELINES))
@pytest.mark.parametrize("ui", ["v1", "v2"])
def test_node_names_of_a_wide_pipeline_are_legible_in_the_ui(ui_server, ui, shape, tmp_path):
    from kedro_prefect.observe.graph_svg import NAME_SIZE

    uis = _uis(ui_server)
    if ui not in uis:
        pytest.skip(f"this Prefect server offers no {ui} UI (available: {sorted(uis)})")
    artifact_id = _artifact(ui_server, "graph", shape)
    browser = Browser(tmp_path)
    try:
        browser.connect()
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{uis[ui]}/artifacts/artifact/{artifact_id}")
        deadline = time.monotonic() + 240
        measured = None
        while measured is None and time.monotonic() < deadline:
            time.sleep(1)
            measured = browser.evaluate(MEASURE)
        assert measured, "the UI showed no picture of the pipeline graph"
        time.sleep(1)  # let the layout settle, then measure again
        measured = browser.evaluate(MEASURE)
        shot = browser.call("Page.captureScreenshot", format="png")
        screenshot = tmp_path / f"graph-legible-{shape}-{ui}.png"
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.close()
    target = os.environ.get("KEDRO_PREFECT_SCREENSHOTS")
    if target:
        shutil.copy(screenshot, Path(target) / screenshot.name)

    rendered = NAME_SIZE * measured["shown"] / measured["natural"]
    assert rendered >= LEGIBLE, f"node names shown at {rendered:.1f} px ({measured})"
    assert measured["right"] <= measured["viewport"]  # the whole picture is on screen


#: The node table's ``duration`` heading: its right edge, and that of the table's visible part.
DURATION = """(() => {
  const th = [...document.querySelectorAll('th')].find(h => h.textContent.trim() == 'duration');
  if (!th) return null;
  let view = th.closest('table').parentElement;
  while (view && view.clientWidth >= view.scrollWidth && view.parentElement) {
    view = view.parentElement;  // the element that scrolls the table sideways, if any
  }
  return {duration: th.getBoundingClientRect().right, view: view.getBoundingClientRect().right};
})()"""


@pytest.mark.timeout(900)
@pytest.mark.parametrize("ui", ["v1", "v2"])
def test_the_node_tables_duration_is_in_view_without_scrolling(ui_server, ui, tmp_path):
    uis = _uis(ui_server)
    if ui not in uis:
        pytest.skip(f"this Prefect server offers no {ui} UI (available: {sorted(uis)})")
    artifact_id = _artifact(ui_server, "table")
    browser = Browser(tmp_path)
    try:
        browser.connect()
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{uis[ui]}/artifacts/artifact/{artifact_id}")
        deadline = time.monotonic() + 240
        measured = None
        while measured is None and time.monotonic() < deadline:
            time.sleep(1)
            measured = browser.evaluate(DURATION)
        assert measured, "the UI showed no node table"
        time.sleep(1)
        measured = browser.evaluate(DURATION)
    finally:
        browser.close()
    assert measured["duration"] <= measured["view"], measured
