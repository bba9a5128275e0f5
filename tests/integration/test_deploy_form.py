"""A deployment's parameter form, serve following the server, and what deploy says (issue 28).

Against real ``prefect server start`` processes: the session's (``prefect_server``,
``scheduling_server``) and, for the form as a person sees it, one with its UI opened in headless
Chromium (skipped where Debian's ``chromium`` is absent).
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from prefect.exceptions import PrefectHTTPStatusError

from tests.helpers import KEDRO, PrefectServer, ProcessGroup, copy_example_project, run_kedro
from tests.integration.deploy_support import (
    api,
    deployment_names,
    final_run,
    kedro,
    ok,
    one_error_line,
    read_deployment,
    wait,
    write_prefect_yml,
)
from tests.integration.test_graph_in_browser import _chromium, _uis

pytestmark = pytest.mark.integration

PIPELINES = ["__default__", "ingest", "regions", "reporting"]
TOP_N_COMMENT = "how many products the report ranks"


def _commented(project: Path) -> Path:
    """The example project with a comment on ``top_n`` (the form's description of it)."""
    parameters = project / "conf" / "base" / "parameters.yml"
    text = parameters.read_text().replace("top_n: 3", f"top_n: 3  # {TOP_N_COMMENT}")
    parameters.write_text(text)
    return project


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """A ``prefect server start`` with its UI (the form page), stopped by PID."""
    server = PrefectServer(tmp_path_factory.mktemp("form-ui-home"), ui=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deployed(ui_server, tmp_path_factory):
    """The example project deployed as ``form`` (``__default__``) on the UI server."""
    project = _commented(copy_example_project(tmp_path_factory.mktemp("form") / "sales_demo"))
    flow = f"form-{uuid.uuid4().hex[:8]}"
    write_prefect_yml(project, {"runner": {"flow_name": flow}})
    ok(kedro(project, ui_server, "deploy", "--name", "form"))
    with api(ui_server) as client:
        deployment = read_deployment(client, flow, "form")
    return project, flow, deployment


@pytest.mark.timeout(600)
def test_the_form_has_one_typed_field_per_parameter_and_the_server_enforces_it(deployed, ui_server):
    project, flow, deployment = deployed
    schema = deployment.parameter_openapi_schema
    assert deployment.enforce_parameter_schema
    fields = schema["properties"]
    assert (
        fields["pipeline"]["enum"] == PIPELINES and fields["pipeline"]["default"] == "__default__"
    )
    params = fields["params"]["properties"]
    assert set(params) == {"min_quantity", "top_n", "regions"}
    assert params["top_n"]["type"] == "integer" and params["top_n"]["default"] == 3
    assert params["top_n"]["description"] == TOP_N_COMMENT
    north = params["regions"]["properties"]["north"]
    assert north["type"] == "object" and north["properties"]["name"]["default"] == "north"
    assert fields["runner_options"]["properties"]["task_runner"]["enum"] == ["thread", "dask"]
    assert "skip_unchanged" in fields["runner_options"]["properties"]
    # Scheduled runs read conf/ as it is: no parameter values are pinned in the deployment.
    assert "params" not in deployment.parameters

    with api(ui_server) as client:
        for parameters, named in (
            ({"params": {"top_n": "five"}}, "params.top_n"),
            ({"params": {"top_m": 5}}, "'top_m' was unexpected"),
            ({"params": {"regions": {"north": {"nme": "x"}}}}, "'nme' was unexpected"),
            ({"pipelin": "reporting"}, "'pipelin' was unexpected"),
            ({"pipeline": "reportng"}, "'reportng' is not one of"),
        ):
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
            # Prefect's server answers 409 Conflict for parameters its schema refuses.
            assert refused.value.response.status_code in (409, 422)
            assert named in refused.value.response.json()["detail"], parameters

    # A deployment of one pipeline offers only the parameters that pipeline uses.
    ok(kedro(project, ui_server, "deploy", "--name", "ingest-only", "--pipeline", "ingest"))
    with api(ui_server) as client:
        ingest = read_deployment(client, flow, "ingest-only")
    assert set(ingest.parameter_openapi_schema["properties"]["params"]["properties"]) == {
        "min_quantity"
    }
    # Re-deploying an unchanged project changes nothing; a changed parameter file changes the form.
    assert "Unchanged" in ok(kedro(project, ui_server, "deploy", "--name", "form"))
    parameters = project / "conf" / "base" / "parameters.yml"
    original = parameters.read_text()
    parameters.write_text(original.replace("top_n: 3", "top_n: 4"))
    try:
        out = ok(kedro(project, ui_server, "deploy", "--name", "form"))
    finally:
        parameters.write_text(original)
    assert "changed: parameter form" in out
    assert "changed: parameter form" in ok(kedro(project, ui_server, "deploy", "--name", "form"))


@pytest.mark.timeout(900)
def test_a_run_with_a_changed_parameter_gives_what_kedro_run_params_gives(
    deployed, ui_server, tmp_path
):
    project, _, deployment = deployed
    given = {"top_n": 2, "regions": {"east": {"name": "west"}}}
    reference = copy_example_project(tmp_path / "reference")
    ok(run_kedro(reference, "run", "--params", "top_n=2,regions.east.name=west"))

    group = ProcessGroup(
        [KEDRO, "prefect", "serve", "--name", "form"],
        project,
        {**ui_server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        tmp_path / "serve.log",
    )
    try:
        group.wait_for_output("Ctrl-C stops serving")
        with api(ui_server) as client:
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters={"params": given}
            )
            done = wait(lambda: _final(client, run.id), "the run with changed parameters", group)
            assert done.state.is_completed(), done.state
            assert done.parameters["params"] == given  # the run's parameters tab
    finally:
        group.stop()
    for output in ("top_products.csv", "region_report.csv"):
        ours = pd.read_csv(project / "data" / "08_reporting" / output)
        theirs = pd.read_csv(reference / "data" / "08_reporting" / output)
        pd.testing.assert_frame_equal(ours, theirs)
    assert len(pd.read_csv(project / "data" / "08_reporting" / "top_products.csv")) == 2


def _final(client, flow_run_id):
    run = client.read_flow_run(flow_run_id)
    return run if run.state is not None and run.state.is_final() else None


@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium package")
def test_the_custom_run_page_shows_the_parameters_defaults_and_pipeline_choices(
    deployed, ui_server, tmp_path
):
    _, _, deployment = deployed
    for ui, root in _uis(ui_server).items():
        url = f"{root}/deployments/deployment/{deployment.id}/run"
        screenshot = tmp_path / f"custom-run-{ui}.png"
        _chromium(url, tmp_path, f"--screenshot={screenshot}")
        assert screenshot.stat().st_size > 10_000
        dom = _chromium(url, tmp_path, "--dump-dom")
        for text in ("min_quantity", "top_n", "regions", "north", TOP_N_COMMENT, "task_runner"):
            assert text in dom, (ui, text)
        if ui == "v1":  # a native select: every pipeline is an option, the deployed one chosen
            for pipeline in PIPELINES:
                assert f'value="{pipeline}">{pipeline}</option>' in dom, pipeline
            assert 'selected="" value="__default__"' in dom
        else:  # V2: a combobox showing the chosen pipeline (its list opens on click)
            assert 'aria-label="Select pipeline"' in dom and ">__default__<" in dom
            # React writes the inputs' values into the page: the project's values as defaults.
            assert 'type="number" value="3"' in dom and 'type="number" value="1"' in dom


# --- serve follows the server ------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_serve_started_first_runs_new_deployments_scheduled_and_triggered(
    example_project, scheduling_server, tmp_path
):
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    server = scheduling_server
    flow = f"follow-{uuid.uuid4().hex[:8]}"
    write_prefect_yml(example_project, {"runner": {"flow_name": flow}})
    group = ProcessGroup(
        [KEDRO, "prefect", "serve"],
        example_project,
        {**server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        tmp_path / "serve.log",
    )
    try:
        out = group.wait_for_output("Ctrl-C stops serving")
        assert f"No deployment of '{flow}' for the default env (no --env) to serve yet" in out

        def deploy_timed() -> pd.Timestamp:
            start = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=20)
            ok(
                kedro(
                    example_project,
                    server,
                    "deploy",
                    "--name",
                    "timed",
                    "--pipeline",
                    "ingest",
                    "--interval",
                    "86400",
                    "--anchor-date",
                    start.isoformat(),
                )
            )
            return start

        # The first run is at the anchor; an anchor already past when the deploy returns (a busy
        # machine) may make it tomorrow's: deployed again with a new anchor then.
        for _ in range(3):
            if deploy_timed() > pd.Timestamp.now(tz="UTC"):
                break
        ok(
            kedro(
                example_project,
                server,
                "deploy",
                "--name",
                "on-lines",
                "--pipeline",
                "regions",
                "--on-dataset-saved",
                "order_lines",
            )
        )
        group.wait_for_output(f"Serving '{flow}/timed' (deployed while serving)", timeout=60)
        group.wait_for_output(f"Serving '{flow}/on-lines' (deployed while serving)", timeout=60)
        with api(server) as client:
            timed = read_deployment(client, flow, "timed")
            scheduled = wait(lambda: final_run(client, timed.id), "the scheduled run", group)
            assert scheduled.state.is_completed(), scheduled.state

            triggered = read_deployment(client, flow, "on-lines")
            time.sleep(3)  # the trigger's automation is loaded by the server's triggers service
            event = Event(
                event="kedro.dataset.saved",
                resource={
                    "prefect.resource.id": "kedro.dataset.sales_demo.order_lines",
                    "prefect.resource.name": "order_lines",
                },
                payload={"dataset": "order_lines", "project": "sales_demo", "version": ""},
            )

            async def emit() -> None:
                async with PrefectEventsClient(server.api_url) as events:
                    await events.emit(event)

            import asyncio

            asyncio.run(emit())
            run = wait(lambda: final_run(client, triggered.id), "the triggered run", group)
            assert run.state.is_completed(), run.state
            assert run.parameters["trigger"]["dataset"] == "order_lines"

            client.delete_deployment(timed.id)
        group.wait_for_output(f"Stopped serving '{flow}/timed' (no longer on the server)", 60)
    finally:
        group.stop()


# --- what deploy says, and what it refuses -----------------------------------------------------


@pytest.mark.timeout(600)
def test_deploy_says_what_changed_and_when_prefect_yml_replaces_a_flag_schedule(
    example_project, prefect_server
):
    flow = f"says-{uuid.uuid4().hex[:8]}"
    nightly = {"pipeline": "ingest", "schedule": {"cron": "0 2 * * *", "timezone": "UTC"}}
    write_prefect_yml(
        example_project, {"runner": {"flow_name": flow}, "deployments": {"nightly": nightly}}
    )
    ok(kedro(example_project, prefect_server, "deploy"))
    out = ok(
        kedro(
            example_project,
            prefect_server,
            "deploy",
            "--name",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/Paris",
        )
    )
    assert "changed: schedule 0 2 * * * UTC → 0 3 * * * Europe/Paris" in out
    out = ok(kedro(example_project, prefect_server, "deploy", "--keep-schedule"))
    assert f"Unchanged '{flow}/nightly' (daily at 03:00 Europe/Paris" in out
    out = ok(kedro(example_project, prefect_server, "deploy"))
    assert "changed: schedule 0 3 * * * Europe/Paris → 0 2 * * * UTC" in out
    assert "The server's schedule 0 3 * * * Europe/Paris (set by flags" in out
    assert "--keep-schedule" in out
    with api(prefect_server) as client:
        stored = read_deployment(client, flow, "nightly").schedules[0].schedule
    assert (stored.cron, stored.timezone) == ("0 2 * * *", "UTC")


@pytest.mark.timeout(600)
def test_bad_flags_and_in_memory_triggers_are_refused_naming_them(example_project, prefect_server):
    flow = f"refuse-{uuid.uuid4().hex[:8]}"
    write_prefect_yml(example_project, {"runner": {"flow_name": flow}})
    line = one_error_line(
        kedro(example_project, prefect_server, "deploy", "--name", "x", "--cron", "0 3 * *")
    )
    assert line.startswith("Error: --cron '0 3 * *': ")
    assert "minute hour day-of-month month day-of-week" in line
    assert "prefect.yml" not in line
    line = one_error_line(
        kedro(
            example_project,
            prefect_server,
            "deploy",
            "--name",
            "x",
            "--pipeline",
            "reporting",
            "--on-dataset-saved",
            "regions.north.lines",
        )
    )
    assert line.startswith("Error: --on-dataset-saved: 'regions.north.lines' has no catalog entry")
    assert "could never fire" in line
    write_prefect_yml(
        example_project,
        {
            "runner": {"flow_name": flow},
            "deployments": {
                "x": {"pipeline": "reporting", "on_dataset_saved": ["regions.south.summary"]}
            },
        },
    )
    result = kedro(example_project, prefect_server, "deploy")
    assert result.returncode == 1
    assert (
        "deployments.x.on_dataset_saved: 'regions.south.summary' has no catalog entry"
        in result.stderr
    )
    with api(prefect_server) as client:
        assert deployment_names(client, flow) == set()  # nothing was created
