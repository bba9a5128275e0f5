"""MLflow (when a plugin such as kedro-mlflow uses it): the driver's run, active on a worker.

Relies on:

* ``mlflow.tracking.fluent._active_run_stack``: MLflow 3 keeps the active runs per thread. A
  Dask worker's threads outlive a ``kedro run``: a run made active in one for a node would
  still be active there when a node of the *next* ``kedro run`` comes, and ``start_run`` of
  that run would fail ("Run ... is already active"); ending it instead (``end_run``) would mark
  the earlier run FINISHED again on the tracking server. After each node the thread's stack is
  emptied without a call to the server: the run stays as the driver leaves it.

``mlflow.active_run``, ``get_tracking_uri``, ``set_tracking_uri`` and ``start_run(run_id=...)``
are MLflow's public API.

kedro-mlflow:

* ``MlflowHook._is_mlflow_enabled``: its ``before_pipeline_run`` (driver) decides whether the
  pipeline is tracked (mlflow.yml ``tracking: disable_tracking: pipelines:``), and its
  ``before_node_run`` logs the node's parameters only if so; ``flatten``, ``recursive``,
  ``sep`` and ``long_params_strategy`` (set there from mlflow.yml ``tracking: params:``) say
  how. The workers' copies of the hook never see ``before_pipeline_run``: the driver's
  decision reaches them before each node (:mod:`kedro_prefect.workers.hook_state`), so a
  disabled pipeline logs nothing from a worker either, and parameters are logged as configured.
* ``MlflowModelTrackingDataset._last_saved_model_uri`` and ``model_info``: the model a
  model dataset saved, which its ``load`` reads. A node loading the model in another process
  than the one that saved it has its own copy of the dataset: the saving worker's values come
  back with the task's result and are set on the driver's dataset before the consumers get
  their copies (:mod:`kedro_prefect.workers.hook_state`), so they load the model just saved,
  as under ``SequentialRunner``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kedro_prefect._upstream import Contract, installed_version

#: kedro-mlflow's model dataset class (the one that loads "the model it saved").
MODEL_DATASET_CLASS = (
    "kedro_mlflow.io.models.mlflow_model_tracking_dataset",
    "MlflowModelTrackingDataset",
)
#: What its ``save`` keeps for its ``load``.
SAVED_STATE = ("_last_saved_model_uri", "model_info")

#: kedro-mlflow's hook class, by module and name (kedro-mlflow is not imported to find it).
HOOK_CLASS = ("kedro_mlflow.framework.hooks.mlflow_hook", "MlflowHook")
#: What its ``before_pipeline_run`` sets and its ``before_node_run`` reads.
RUN_SETTINGS = ("_is_mlflow_enabled", "flatten", "recursive", "sep", "long_params_strategy")

CONTRACTS = (
    Contract(
        "mlflow.tracking.fluent:_active_run_stack",
        "a node on a Dask worker runs with the driver's MLflow run active in its thread only",
        expected=lambda: bool(installed_version("mlflow")),
        check=lambda stack: callable(getattr(stack, "get", None)),
    ),
    Contract(
        "kedro_mlflow.framework.hooks.mlflow_hook:MlflowHook",
        "a pipeline whose tracking kedro-mlflow disabled in the driver logs nothing from the "
        "workers either (its before_pipeline_run decision, _is_mlflow_enabled, reaches them)",
        expected=lambda: bool(installed_version("kedro-mlflow")),
        check=lambda cls: "_is_mlflow_enabled" in vars(cls()),
    ),
    Contract(
        "kedro_mlflow.io.models.mlflow_model_tracking_dataset:MlflowModelTrackingDataset",
        "a node in another process loads the model that a kedro-mlflow model dataset saved on "
        "a worker (_last_saved_model_uri, model_info set on the driver's dataset)",
        expected=lambda: bool(installed_version("kedro-mlflow")),
        check=lambda cls: all(
            name in vars(cls(flavor="mlflow.pyfunc", pyfunc_workflow="python_model"))
            for name in SAVED_STATE
        ),
    ),
)


def active_run() -> tuple[str, str] | None:
    """``(tracking URI, run id)`` of the MLflow run active in this thread, if any."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    return mlflow.get_tracking_uri(), run.info.run_id


@contextlib.contextmanager
def run_active_in_thread(tracking_uri: str, run_id: str) -> Iterator[None]:
    """The run ``run_id`` active in this thread while the block runs, and no run after it."""
    import mlflow
    from mlflow.tracking.fluent import _active_run_stack

    stack = _active_run_stack.get()
    stack.clear()  # left by an earlier node of another run: not this run's
    if mlflow.get_tracking_uri() != tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.start_run(run_id=run_id)
    try:
        yield
    finally:
        _active_run_stack.get().clear()


def hook_state_adapter(hook: Any) -> MlflowHookSettings | None:
    """The carrier of ``hook``'s state if it is kedro-mlflow's hook."""
    kind = type(hook)
    if (kind.__module__, kind.__qualname__) != HOOK_CLASS:
        return None
    return MlflowHookSettings(hook)


class MlflowHookSettings:  # implements workers.hook_state.HookStateCarrier
    """What kedro-mlflow's ``before_pipeline_run`` decided in the driver, on the workers."""

    def __init__(self, hook: Any):
        self._hook = hook

    def state_for_workers(self) -> dict[str, Any] | None:
        settings = {
            name: getattr(self._hook, name) for name in RUN_SETTINGS if hasattr(self._hook, name)
        }
        return settings or None

    def use_driver_state(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self._hook, name, value)

    def state_for_driver(self, nodes: Any) -> None:
        return None

    def merge_worker_state(self, state: Any) -> None:
        return None


def saved_state_adapter(dataset: Any) -> ModelDatasetState | None:
    """What ``dataset`` keeps after saving, if it is kedro-mlflow's model dataset."""
    kind = type(dataset)
    if (kind.__module__, kind.__qualname__) != MODEL_DATASET_CLASS:
        return None
    return ModelDatasetState(dataset)


class ModelDatasetState:
    """The model a kedro-mlflow model dataset saved (what its ``load`` reads)."""

    def __init__(self, dataset: Any):
        self._dataset = dataset

    def state(self) -> dict[str, Any] | None:
        if getattr(self._dataset, "_last_saved_model_uri", None) is None:
            return None
        return {name: getattr(self._dataset, name, None) for name in SAVED_STATE}

    def use(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self._dataset, name, value)
