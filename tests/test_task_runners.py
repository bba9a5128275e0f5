"""Choosing the backend from ``task_runner``: names, import paths of task runner classes, and
what a user sees when the Dask extra is missing or the class is of no known kind."""

import sys

import pytest
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from kedro_prefect import PrefectRunner, PrefectRunnerConfigError


def test_dask_without_the_extra_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # import prefect_dask -> ImportError
    with pytest.raises(PrefectRunnerConfigError, match=r"pip install 'kedro-prefect\[dask\]'"):
        PrefectRunner(task_runner="dask")


@pytest.mark.parametrize(
    ("task_runner", "backend"),
    [
        ("thread", "thread"),
        ("process", "process"),
        ("prefect.task_runners.ThreadPoolTaskRunner", "thread"),
        ("prefect.task_runners.ProcessPoolTaskRunner", "process"),
        ("tests.test_task_runners.MyProcessPool", "process"),
        ("dask", "dask"),
        ("prefect_dask.DaskTaskRunner", "dask"),
    ],
)
def test_a_task_runner_is_classified_once_into_its_backend(task_runner, backend):
    from kedro_prefect.backends import choose_backend
    from kedro_prefect.config import parse_runner_options

    assert choose_backend(parse_runner_options({"task_runner": task_runner})).name == backend


class MyProcessPool(ProcessPoolTaskRunner):
    """A user's subclass of Prefect's process pool: run as ``process``, built from this class."""


def test_a_process_pool_subclass_is_the_task_runner_the_run_builds():
    from kedro.pipeline import Pipeline, node

    from kedro_prefect.backends import choose_backend
    from kedro_prefect.config import parse_runner_options

    options = parse_runner_options({"task_runner": "tests.test_task_runners.MyProcessPool"})
    pipeline = Pipeline([node(len, "a", "b"), node(len, "a", "c")])
    with choose_backend(options).task_runner(pipeline) as runner:
        assert isinstance(runner, MyProcessPool)


@pytest.mark.parametrize(
    "task_runner",
    ["prefect.task_runners.PrefectTaskRunner", "tests.test_task_runners.NotOurKind"],
)
def test_an_unknown_kind_of_task_runner_is_refused_in_one_line_naming_the_choices(task_runner):
    with pytest.raises(PrefectRunnerConfigError) as error:
        PrefectRunner(task_runner=task_runner)  # before any session, catalog or node
    message = str(error.value)
    assert "\n" not in message
    assert f"task_runner={task_runner!r}" in message
    for choice in ("thread", "process", "dask", "ThreadPoolTaskRunner", "ProcessPoolTaskRunner"):
        assert choice in message


class NotOurKind(TaskRunner):
    """A Prefect task runner kedro-prefect does not know where it runs tasks."""

    def duplicate(self):
        return type(self)()

    def submit(self, *args, **kwargs):
        raise NotImplementedError
