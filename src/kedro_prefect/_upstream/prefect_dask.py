"""prefect-dask: node tasks on a ``DaskTaskRunner``, all the engine glue in one override.

Relies on prefect-dask's ``DaskTaskRunner`` (>= 0.3.6) internals: ``_started``, ``_client``,
``_optimize_futures`` and ``duplicate()``; on ``PrefectDaskFuture``'s ``_wrapped_future`` and
``_final_state``; and on what prefect-dask's ``PrefectDaskClient.submit`` does to run a Prefect
task on a worker (``serialize_context``, ``collect_task_run_inputs_sync``, the asset context,
``run_task_sync(context=..., return_type="state")``). :func:`task_runner_classes` subclasses
both and overrides ``submit``. It does what ``PrefectDaskClient.submit`` does, with these
differences, which buy:

* the Prefect context every task carries is serialized once per run instead of per task (~75 ms
  of driver CPU each), with a light stand-in for the flow object (the runner's flow would carry
  the pipeline, catalog and hook manager into every task, and make the scheduler need the
  project's code);
* the worker runs ``run_on_worker`` (:func:`kedro_prefect.dask.worker.run_task_on_worker`:
  settings and API client cached per worker, task run records kept for the driver);
* ``resources_of(task)`` gives the Dask worker resources of a node task (from its
  ``dask-<RESOURCE>-<n>`` tags); the Dask key names the node;
* ``placement_of(client)`` chooses the worker of each node task (a free worker slot first,
  :mod:`kedro_prefect.dask.placement`), passed as a loose restriction (``workers=[...]``,
  ``allow_other_workers=True``: Dask runs it elsewhere if that worker leaves);
* ``duplicate()`` keeps every setting, as prefect-dask's own does (``adapt_kwargs`` and
  ``performance_report_path`` included);
* completion goes through a tiny data-less companion future, so the driver never receives a
  node's in-memory outputs (``wait()`` and ``state`` do not fetch them), only what the hooks
  gathered on the worker for the driver's hooks (``NodeData.without_data()``);
* ``dependencies`` (the task run's recorded inputs) are merged into those found in the
  parameters, as ``PrefectDaskClient.submit`` does.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kedro_prefect._upstream import Contract

CONTRACTS = (
    Contract(
        "prefect_dask.task_runners:DaskTaskRunner._optimize_futures",
        "turn Prefect futures in task parameters into Dask futures",
    ),
    Contract(
        "prefect_dask.task_runners:DaskTaskRunner.duplicate",
        "a fresh task runner per flow run",
    ),
    Contract(
        "prefect_dask.task_runners:DaskTaskRunner",
        "_started/_client: the runner's Dask client, created on first use",
        check=lambda cls: _client_made_on_first_use(cls),
    ),
    Contract(
        "prefect_dask.task_runners:PrefectDaskFuture",
        "_wrapped_future/_final_state: the Dask future behind a Prefect future, its final state",
        check=lambda cls: _future_keeps_its_dask_future(cls),
    ),
    Contract(
        "prefect.context:serialize_context",
        "the Prefect context a task carries to the worker, serialized once per run",
    ),
    Contract(
        "prefect.utilities.engine:collect_task_run_inputs_sync",
        "the task run inputs Prefect records (the UI's graph edges)",
    ),
    Contract(
        "prefect.results:ResultRecord",
        "result: the data a completed task state holds, which Dask sizes (dask.sizeof)",
        check=lambda cls: "result" in getattr(cls, "model_fields", {}),
    ),
)


@functools.cache
def register_state_sizes() -> None:
    """Tell Dask (``dask.sizeof``) how large a Prefect task's result is: the data inside.

    On a worker, a node task's Dask result is the task run's final ``State``, whose ``data`` is
    a ``ResultRecord`` holding the task's return value (the node's in-memory outputs). Dask
    does not look into either, so a state holding 200 MB counts as a few hundred bytes in the
    scheduler's transfer costs (work stealing), the workers' memory limits, their count of
    bytes sent and :mod:`kedro_prefect.dask.placement`'s locality rule.
    """
    from dask.sizeof import sizeof
    from prefect.client.schemas.objects import State
    from prefect.results import ResultRecord

    @sizeof.register(ResultRecord)
    def _record(value: Any) -> int:
        return 256 + sizeof(value.result)

    @sizeof.register(State)
    def _state(value: Any) -> int:
        return 512 + (0 if value.data is None else sizeof(value.data))


def _client_made_on_first_use(cls: type) -> bool:
    """A new ``DaskTaskRunner`` is not started and has no client yet (``_started``, ``_client``)."""
    runner = cls(address="tcp://127.0.0.1:1")  # nothing connects before the runner is entered
    return runner._started is False and runner._client is None


def _future_keeps_its_dask_future(cls: type) -> bool:
    """A ``PrefectDaskFuture`` keeps the Dask future it wraps as ``_wrapped_future`` and has no
    ``_final_state`` until it is done."""
    import uuid

    wrapped = object()
    future = cls(task_run_id=uuid.uuid4(), wrapped_future=wrapped)
    return future._wrapped_future is wrapped and future._final_state is None


@functools.cache
def task_runner_classes(
    run_on_worker: Callable[..., Any],
    resources_of: Callable[[Any], dict[str, float] | None],
    placement_of: Callable[[Any], Any],
) -> tuple[type, type]:
    """``KedroDaskTaskRunner`` and ``KedroDaskFuture``, defined on first use (imports dask)."""
    import distributed
    from prefect.context import serialize_context
    from prefect.utilities.engine import collect_task_run_inputs_sync
    from prefect_dask.task_runners import DaskTaskRunner, PrefectDaskFuture

    from kedro_prefect._upstream.prefect_tasks import limited_tag_names, settings_key

    class KedroDaskFuture(PrefectDaskFuture):
        """A Prefect future whose ``wait()``/``state`` never fetch the node's data to the driver.

        The task's result (a Prefect state holding the node's in-memory outputs) stays on the
        worker; a tiny companion Dask task returns the state without its data, and that is what
        the driver waits on. ``result()`` still fetches the full result.
        """

        def __init__(self, wrapped_future: Any, task_run_id: Any, summary: Any):
            super().__init__(wrapped_future=wrapped_future, task_run_id=task_run_id)
            self.summary = summary

        def wait(self, timeout: float | None = None) -> None:
            try:
                state = self.summary.result(timeout=timeout)
            except distributed.TimeoutError:
                return
            except Exception as exc:
                # The task never produced a Prefect state (e.g. the worker could not unpickle
                # it, or it died too often): fail with Dask's error instead of a PENDING state.
                from prefect.states import Failed

                state = Failed(
                    message=(
                        f"Dask could not run the task: {exc!r}. If the scheduler's log shows "
                        "a deserialization error, the scheduler and workers need the same "
                        "packages as the kedro run process."
                    ),
                    data=exc,
                )
            self._final_state = state

        def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
            state = self._wrapped_future.result(timeout=timeout)
            return state.result(raise_on_failure=raise_on_failure, _sync=True)

        def release(self) -> None:
            """Let Dask forget the node's in-memory outputs (no consumer needs them any more)."""
            self._wrapped_future.release()

    class KedroDaskTaskRunner(DaskTaskRunner):
        """``DaskTaskRunner`` that honours ``dask-<RESOURCE>-<n>`` node tags and keeps data off
        the driver (``wait_for`` and completion go through data-less companion futures)."""

        def duplicate(self) -> KedroDaskTaskRunner:
            return type(self)(
                address=self.address,
                cluster_class=self.cluster_class,
                cluster_kwargs=self.cluster_kwargs,
                adapt_kwargs=self.adapt_kwargs,
                client_kwargs=self.client_kwargs,
                performance_report_path=self.performance_report_path,
            )

        _context: tuple[dict[str, Any], str] | None = None
        _placement: Any = None

        @property
        def placement(self) -> Any:
            """Chooses the worker of each node task (``placement_of(client)``), per run."""
            if self._placement is None:
                self._placement = placement_of(self.client)
            return self._placement

        def _run_context(self) -> tuple[dict[str, Any], str]:
            """The Prefect context every task of this run carries, serialized once per run.

            Prefect serializes the settings (hundreds of fields, secrets rendered) and the flow
            run context for each task it submits, ~75 ms of driver CPU per task on a small
            machine, competing with the workers. Within a run both stay the same; only the
            asset context is per task. Also returns a key naming the settings, so that workers
            find the settings they built for it without hashing them again.
            """
            if self._context is None:
                with _light_flow_run_context():
                    context = serialize_context()
                settings = settings_key(context.get("settings_context") or {})
                key = hashlib.sha256(settings.encode()).hexdigest()
                self._context = (context, key)
            return dict(self._context[0]), self._context[1]

        def __exit__(self, *args: Any) -> None:
            # Node log records are sent in the background on the workers; make sure they
            # reached the API before the run ends (one flush per worker, not per task).
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.run(_flush_worker_logs)
            super().__exit__(*args)

        def submit(  # type: ignore[override]
            self,
            task: Any,
            parameters: dict[str, Any],
            wait_for: Any = None,
            dependencies: Any = None,
        ) -> KedroDaskFuture:
            if not self._started:
                raise RuntimeError("The task runner must be started before submitting work.")
            parameters = self._optimize_futures(parameters)
            wait_for = [f.summary if isinstance(f, KedroDaskFuture) else f for f in wait_for or []]
            wait_for = self._optimize_futures(wait_for) or None
            resources = resources_of(task) or None
            worker = self.placement.choose(parameters, has_resources=bool(resources))
            task_run_id = uuid.uuid4()
            # What prefect-dask's PrefectDaskClient.submit does, with two differences: the
            # worker runs `run_task_on_worker` (settings built once per worker, not per task),
            # and the Dask key names the node, so the dashboard shows node names.
            task_inputs = {
                name: collect_task_run_inputs_sync(value, future_cls=distributed.Future)
                for name, value in parameters.items()
            }
            for name, inputs in (dependencies or {}).items():  # recorded inputs, e.g. upstream
                task_inputs[name] = task_inputs.get(name, set()) | set(inputs)
            context, key = self._run_context()
            asset_context = _asset_context(task, task_run_id, task_inputs)
            if asset_context is not None:
                context["asset_context"] = asset_context
            future = distributed.Client.submit(
                self.client,
                run_on_worker,
                key=f"{task.name}-{task_run_id}",
                resources=resources,
                workers=[worker] if worker else None,
                allow_other_workers=bool(worker),
                pure=False,
                task=task,
                task_run_id=task_run_id,
                parameters=parameters,
                wait_for=wait_for,
                return_type="state",
                dependencies=task_inputs,
                context=context,
                settings_key=key,
                limited_tags=limited_tag_names(),
            )
            self.placement.submitted(future, worker)
            summary = self.client.submit(
                _without_data, future, pure=False, key=f"state-{future.key}"
            )
            return KedroDaskFuture(wrapped_future=future, task_run_id=task_run_id, summary=summary)

    return KedroDaskTaskRunner, KedroDaskFuture


def _asset_context(task: Any, task_run_id: Any, task_inputs: dict[str, Any]) -> Any:
    """The serialized asset context of a task (Prefect versions with assets), else ``None``."""
    try:
        from prefect.context import AssetContext
    except ImportError:
        return None
    return AssetContext.from_task_and_inputs(
        task=task, task_run_id=task_run_id, task_inputs=task_inputs, copy_to_child_ctx=True
    ).serialize()


async def _flush_worker_logs() -> None:
    """Send this worker's queued log records to the Prefect API (run on each worker)."""
    from prefect.logging.handlers import APILogWorker

    result = APILogWorker.drain_all(timeout=10)
    if inspect.isawaitable(result):
        await result


def _flow_stand_in() -> None:
    """The function of the flow object that travels with each task (never called)."""


@contextmanager
def _light_flow_run_context() -> Iterator[None]:
    """Submit tasks with a flow run context whose flow object is a light stand-in.

    prefect-dask pickles the current flow run context, flow object included, into every task.
    The runner's flow function closes over the pipeline, the catalog and the hook manager:
    pickling those per task is slow, and the Dask scheduler (which deserializes task graphs)
    would need the project's code. The stand-in keeps the flow's name and result settings.
    """
    from prefect import Flow
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow is None:
        yield
        return
    flow = context.flow
    stand_in = _stand_ins.get(id(flow))
    if stand_in is None or stand_in.name != flow.name:
        stand_in = Flow(
            _flow_stand_in,
            name=flow.name,
            persist_result=flow.persist_result,
            log_prints=flow.log_prints,
            validate_parameters=False,
        )
        _stand_ins.clear()
        _stand_ins[id(flow)] = stand_in
    with context.model_copy(update={"flow": stand_in}):
        yield


_stand_ins: dict[int, Any] = {}


#: The data of a completed state as the driver sees it: the node's outputs stay on the worker.
DATA_ON_WORKER = "kedro-prefect: in-memory outputs stay on the Dask worker"


def _without_data(state: Any) -> Any:
    """A completed Prefect state without its data (failed states keep their exception).

    What the task's hooks gathered on the worker for the driver's hooks stays: a result box
    that has a ``without_data()`` (``NodeData``, maybe in Prefect's ``ResultRecord``) is
    replaced by what that returns."""
    if getattr(state, "is_completed", None) and state.is_completed():
        value = getattr(state.data, "result", state.data)  # a ResultRecord holds the value
        without = getattr(value, "without_data", None)
        return state.model_copy(update={"data": without() if callable(without) else DATA_ON_WORKER})
    return state
