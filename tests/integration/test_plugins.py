"""kedro-mlflow, the most used Kedro plugin, and kedro-viz, for real: a local file tracking
store, no server.

Configured as their users do (``mlflow.yml``; the metric a ``MlflowMetricDataset``, the model a
``MlflowModelTrackingDataset`` that a later node loads; parameters logged by kedro-mlflow's
hooks; kedro-viz's hooks from its entry points). Each ``kedro run`` must make exactly one MLflow
run, finished, holding the run's parameters, metric and model, the same as under
``SequentialRunner``, on threads, process and Dask, with no warning from the plugins and no run
left behind on the workers; a pipeline whose tracking ``mlflow.yml`` disables makes none; and
kedro-viz's ``.viz/stats.json`` holds the same statistics as after a ``SequentialRunner`` run.

Needs the ``plugins`` extra (``tox -e plugins``): an installed Kedro plugin's hooks join every
Kedro run of its environment, so kedro-mlflow and kedro-viz are not in the ``test`` extra."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kedro_prefect import PrefectRunner
from tests.reliability_project import LOGGING_YML, write_files

pytestmark = pytest.mark.integration
pytest.importorskip("kedro_mlflow", reason="kedro-mlflow: pip install -e '.[plugins]'")
pytest.importorskip("kedro_viz", reason="kedro-viz: pip install -e '.[plugins]'")
pytest.importorskip("sklearn", reason="scikit-learn: pip install -e '.[plugins]'")

PACKAGE = "mlflow_demo"
FILES = {
    "pyproject.toml": f"""
        [tool.kedro]
        package_name = "{PACKAGE}"
        project_name = "mlflow-demo"
        kedro_init_version = "1.0.0"
        source_dir = "src"
        """,
    "conf/base/catalog.yml": """
        score:
          type: kedro_mlflow.io.metrics.MlflowMetricDataset
        model:
          type: kedro_mlflow.io.models.MlflowModelTrackingDataset
          flavor: mlflow.sklearn
          save_args:
            name: model
        table:
          type: pandas.CSVDataset
          filepath: data/table.csv
        """,
    "conf/base/parameters.yml": "factor: 2\noffset: 0.5\n",
    "conf/base/mlflow.yml": """
        server:
          mlflow_tracking_uri: mlruns
        tracking:
          experiment:
            name: mlflow_demo
        """,
    "conf/local/.gitkeep": "",
    "conf/logging.yml": LOGGING_YML,
    "src/{package}/__init__.py": "",
    "src/{package}/settings.py": "",
    "src/{package}/pipeline_registry.py": """
        from kedro.pipeline import Pipeline, node


        def make(factor):
            return [1 * factor, 2 * factor, 3 * factor]


        def score(numbers, offset):
            return sum(numbers) / len(numbers) + offset


        def fit(numbers):
            from sklearn.linear_model import LinearRegression

            return LinearRegression().fit([[n] for n in numbers], [2 * n for n in numbers])


        def predict(model, numbers):
            return [round(float(y), 6) for y in model.predict([[n] for n in numbers])]


        def tabulate(numbers):
            import pandas as pd

            frame = pd.DataFrame({{"n": numbers, "square": [n * n for n in numbers]}})
            return frame, frame.head(2)


        def register_pipelines():
            train = Pipeline(
                [
                    node(make, "params:factor", "numbers", name="make"),
                    node(score, ["numbers", "params:offset"], "score", name="score"),
                    node(fit, "numbers", "model", name="fit"),
                    node(tabulate, "numbers", ["table", "head"], name="tabulate"),
                ]
            )
            predict_ = Pipeline([node(predict, ["model", "numbers"], "prediction", name="predict")])
            # kedro-mlflow saves no model when tracking is off: "train" has no node loading it.
            return {{"__default__": train + predict_, "train": train}}
        """,
}


@pytest.fixture
def mlflow_project(tmp_path, monkeypatch):
    project = tmp_path / "mlflow_demo"
    write_files(project, FILES, package=PACKAGE)
    # MLflow >= 3.? keeps the file store in maintenance mode: opt in (workers inherit it).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DYNACONF_DISABLE_HOOKS_FOR_PLUGINS", raising=False)
    monkeypatch.chdir(project)
    # kedro-mlflow's hook is one object per process and keeps the id of the last MLflow run it
    # started, also when a later run's tracking is disabled (it then reopens that run, here in
    # another test's store). A `kedro run` process starts with a new one.
    from kedro_mlflow.framework.hooks import mlflow_hook

    monkeypatch.setattr(mlflow_hook, "run_id", None)
    return project


@pytest.fixture
def untracked_project(mlflow_project):
    """The project with MLflow tracking disabled for its ``train`` pipeline (mlflow.yml)."""
    (mlflow_project / "conf" / "base" / "mlflow.yml").write_text(
        "server:\n  mlflow_tracking_uri: mlruns\n"
        "tracking:\n  experiment:\n    name: mlflow_demo\n"
        "  disable_tracking:\n    pipelines: [train]\n"
    )
    return mlflow_project


def mlflow_runs(project: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(project / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("mlflow_demo")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id])


def kedro_run(project: Path, runner, caplog, pipeline: str | None = None) -> tuple[list, dict]:
    """One ``kedro run`` in this process; returns the MLflow runs it made, and its outputs."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    before = {run.info.run_id for run in mlflow_runs(project)}
    (project / ".viz" / "stats.json").unlink(missing_ok=True)
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING),
        KedroSession.create(project_path=project, runtime_params={"factor": 3}) as session,
    ):
        outputs = session.run(runner=runner, pipeline_names=[pipeline] if pipeline else None)
    import mlflow

    # kedro-mlflow (2.0.3, MLflow 3) leaves its run on the calling thread's stack after
    # after_pipeline_run has ended it: the next run of the same process would reuse it
    # ("A mlflow run was already active"). `kedro run` exits there; this process goes on.
    while mlflow.active_run():
        mlflow.end_run()
    # kedro-viz's pipeline events hook warns on any runner but SequentialRunner (also on
    # Kedro's ParallelRunner and ThreadRunner): its own choice, not a lost state.
    plugin_warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(("kedro_mlflow", "kedro_viz.integrations.kedro.hooks"))
    ]
    assert plugin_warnings == []
    made = [run for run in mlflow_runs(project) if run.info.run_id not in before]
    return made, outputs


def one_run(made: list):
    """The one MLflow run a ``kedro run`` made, finished."""
    assert len(made) == 1, [(run.info.run_name, run.data.params) for run in made]
    assert made[0].info.status == "FINISHED"
    return made[0]


def content(project: Path, run) -> dict:
    """What a user compares between two MLflow runs of the same pipeline."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(project / "mlruns").as_uri())
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    return {
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": sorted(key for key in run.data.tags if not key.startswith("mlflow.")),
        "name": run.info.run_name,
        "models": sorted((model.name, model.status.name) for model in models),
    }


def viz_stats(project: Path) -> dict:
    """kedro-viz's dataset statistics of the last run (``.viz/stats.json``)."""
    return json.loads((project / ".viz" / "stats.json").read_text())


def test_kedro_mlflow_makes_one_run_per_kedro_run_on_every_backend(mlflow_project, caplog):
    """One MLflow run per ``kedro run``, holding the parameters, the metric and the model, and
    kedro-viz's dataset statistics written, as under ``SequentialRunner``."""
    from kedro.runner import SequentialRunner

    made, outputs = kedro_run(mlflow_project, SequentialRunner(), caplog)
    expected = content(mlflow_project, one_run(made))
    assert expected["params"] == {"factor": "3", "offset": "0.5"}
    assert expected["metrics"] == {"score": 6.5}
    assert expected["models"] == [("model", "READY")]
    prediction = outputs["prediction"].load()
    stats = viz_stats(mlflow_project)
    assert sorted(stats) == ["head", "table"]
    assert stats["table"]["rows"] == 3 and stats["table"]["file_size"] > 0

    for runner in (
        PrefectRunner(),
        PrefectRunner(task_runner="process", max_workers=2),
        PrefectRunner(task_runner="dask", n_workers=1, threads_per_worker=2),
    ):
        made, outputs = kedro_run(mlflow_project, runner, caplog)
        assert content(mlflow_project, one_run(made)) == expected, runner
        assert outputs["prediction"].load() == prediction
        assert viz_stats(mlflow_project) == stats, runner
    assert {run.info.status for run in mlflow_runs(mlflow_project)} == {"FINISHED"}


def test_a_pipeline_whose_tracking_kedro_mlflow_disables_logs_nothing_on_every_backend(
    untracked_project, caplog
):
    """``disable_tracking: pipelines:`` is decided in the driver's ``before_pipeline_run``: the
    workers' kedro-mlflow hooks log nothing either (no run of their own), as under
    ``SequentialRunner``."""
    from kedro.runner import SequentialRunner

    for runner in (
        SequentialRunner(),
        PrefectRunner(),
        PrefectRunner(task_runner="process", max_workers=2),
        PrefectRunner(task_runner="dask", n_workers=1, threads_per_worker=2),
    ):
        made, outputs = kedro_run(untracked_project, runner, caplog, pipeline="train")
        assert [(run.info.run_name, run.data.params) for run in made] == [], runner
        assert outputs["head"].load()["n"].tolist() == [3, 6]
    # No run in any experiment of the store (mlruns/<experiment>/<run>/meta.yaml).
    assert list((untracked_project / "mlruns").glob("*/*/meta.yaml")) == []


def test_a_worker_that_cannot_reach_the_mlflow_run_fails_the_node_clearly(tmp_path, monkeypatch):
    """A tracking store the worker does not have (a local path on another machine): the node
    fails naming the run and the store, instead of logging to a new run on the worker."""
    from kedro_prefect.errors import WorkerRunStateError
    from kedro_prefect.workers.session import RunSession, node_in_run

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = (tmp_path / "not-on-this-worker").as_uri()
    session = RunSession("r", PACKAGE, str(tmp_path), None, None, mlflow_run=(store, "a" * 32))
    with pytest.raises(WorkerRunStateError, match=r"cannot reach the MLflow run a{32} .*not-on"):
        with node_in_run(session):
            pytest.fail("the node must not run")
    assert not list(tmp_path.rglob("params"))  # no MLflow run was made here
