"""A bad ``prefect.yml`` as a person meets it: one ``Error:`` line, and quiet commands.

Each mistake (YAML syntax, an unknown key, a bad value) makes ``kedro run`` and a ``kedro
prefect`` command exit non-zero with one ``Error:`` line naming the file, the line and the key,
no traceback; a mistake in ``deployments:`` does not stop ``kedro run``, which does not use
that section. ``kedro prefect list`` prints no warning (Kedro 1.7 with omegaconf 2.4 warns
about ``register_new_resolver`` on every project load).
"""

from __future__ import annotations

import textwrap

import pytest

from tests.helpers import copy_example_project, run_kedro

pytestmark = pytest.mark.integration

RUN = ("run", "--runner=kedro_prefect.PrefectRunner")

GOOD = """\
runner:
  task_runner: thread
tasks:
  rules:
    - tag: reporting
      retries: 1
deployments:
  nightly:
    pipeline: __default__
    schedule:
      cron: "0 2 * * *"
    tags: [kedro]
"""

#: mistake -> (the good file with it, what the error line says)
MISTAKES = {
    "yaml syntax": (
        GOOD.replace("tags: [kedro]", "tags: [kedro"),
        "Invalid YAML in conf/base/prefect.yml, line 12: while parsing a flow sequence",
    ),
    "unknown key": (
        GOOD.replace("      retries: 1", "      retires: 1"),
        "Invalid conf/base/prefect.yml, line 6: unknown key 'tasks.rules.0.retires'; "
        "did you mean 'retries'?",
    ),
    "bad value": (
        GOOD.replace("task_runner: thread", "task_runner: threads"),
        "Invalid conf/base/prefect.yml, line 1: runner: Invalid PrefectRunner options: "
        "PrefectRunner option task_runner='threads': unknown task runner 'threads'; use one of",
    ),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_example_project(tmp_path_factory.mktemp("config-errors") / "sales_demo")


def _write(project, text: str) -> None:
    (project / "conf" / "base" / "prefect.yml").write_text(textwrap.dedent(text))


def _one_error_line(result, expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert errors == [errors[0]] and errors[0].startswith("Error: " + expected), output
    assert "Traceback" not in output and "──" not in output, output  # no (Rich) traceback
    assert len(result.stderr.splitlines()) <= 3, result.stderr
    assert "Running node" not in output


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_bad_prefect_yml_is_one_error_line_for_kedro_run(project, mistake):
    text, expected = MISTAKES[mistake]
    _write(project, text)
    _one_error_line(run_kedro(project, *RUN), expected)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_bad_prefect_yml_is_one_error_line_for_kedro_prefect(project, prefect_server, mistake):
    text, expected = MISTAKES[mistake]
    _write(project, text)
    result = run_kedro(project, "prefect", "list", env=prefect_server.env)
    _one_error_line(result, expected)
    assert len((result.stdout + result.stderr).splitlines()) <= 3  # everything it printed


@pytest.mark.timeout(600)
def test_a_mistake_in_deployments_does_not_stop_kedro_run(project, prefect_server):
    _write(project, GOOD.replace("    schedule:", "    schedul:"))
    ran = run_kedro(project, *RUN)
    assert ran.returncode == 0, ran.stdout + ran.stderr

    listed = run_kedro(project, "prefect", "list", env=prefect_server.env)
    _one_error_line(
        listed,
        "Invalid conf/base/prefect.yml, line 10: deployments.nightly: unknown deployment key "
        "'schedul'",
    )
    assert "did you mean 'schedule'?" in listed.stderr


@pytest.mark.timeout(600)
def test_kedro_prefect_list_prints_no_warnings(project, prefect_server):
    _write(project, GOOD)
    result = run_kedro(project, "prefect", "list", env=prefect_server.env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "No deployments of this project on the server" in output
    assert "warning" not in output.lower(), output
    assert len(output.splitlines()) <= 3, output


@pytest.mark.timeout(300)
def test_kedro_prefect_init_writes_the_projects_own_examples(project):
    (project / "conf" / "base" / "prefect.yml").unlink(missing_ok=True)
    result = run_kedro(project, "prefect", "init")
    assert result.returncode == 0, result.stdout + result.stderr
    text = (project / "conf" / "base" / "prefect.yml").read_text()
    assert "# the project's pipelines: __default__, ingest, regions, reporting" in text
    assert "    #   min_quantity: 1" in text  # the project's first parameter, as it is
    assert "Nightly run of the sales_demo pipelines" in text


@pytest.mark.timeout(300)
def test_a_misspelt_runner_is_one_error_line(project):
    result = run_kedro(project, "run", "--runner=kedro_prefect.PrefectRuner")
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "Error: kedro_prefect has no 'PrefectRuner'; did you mean kedro_prefect.PrefectRunner?"
    )
