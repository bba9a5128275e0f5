"""The observers of one run: the recorder keeping :class:`PipelineRun` up to date, and
:func:`observe_run`, which wires the built-in observers (Prefect artifacts, terminal progress)
behind one object that never lets an observer's error break the pipeline run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kedro_prefect.observe.base import NodeRun, PipelineRun, RunObserver

if TYPE_CHECKING:
    from uuid import UUID

    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from prefect.futures import PrefectFuture

    from kedro_prefect.execution.cancellation import Cancellation

logger = logging.getLogger(__name__)

#: How long the end of a run waits for the Prefect API to have recorded the final state of
#: every task run (task run states reach the server as events, a moment after they happen).
API_SETTLE_SECONDS = 5.0


class RunRecorder(RunObserver):
    """Keeps :class:`PipelineRun` up to date.

    Attempts, start and duration of a node come from Prefect's task engine (``task_run_records``:
    filled as tasks end in this process, and at the end of the run with the records of Dask
    workers); those still missing (a worker died) are read back from the API at the end.
    """

    def __init__(self, run: PipelineRun, task_run_records: dict[Any, Any] | None = None):
        self.run = run
        self._task_run_records = task_run_records if task_run_records is not None else {}

    def on_run_start(self, run: PipelineRun) -> None:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            run.flow_run_id = context.flow_run.id
            run.flow_run_name = context.flow_run.name
        with _warn_on_error("finding the flow run's UI link"):
            run.api_url, run.ui_root = _api_and_ui_urls()
            if run.ui_root and run.flow_run_id is not None:
                run.ui_url = f"{run.ui_root}/runs/flow-run/{run.flow_run_id}"
        _say_where_the_run_can_be_seen(run)

    def on_node_submitted(self, node: Node, future: PrefectFuture[Any]) -> None:
        record = self.run.nodes[node.name]
        record.future, record.submitted_at = future, time.monotonic()

    def on_node_finished(self, node: Node, future: PrefectFuture[Any]) -> None:
        record = self.run.nodes[node.name]
        record.finished_at, record.state = time.monotonic(), future.state
        self._take_engine_record(record, future.task_run_id)
        place = self.run.places.get(node.name)
        record.worker = place or record.worker or self.run.worker_label

    def on_node_not_run(self, node: Node) -> None:
        self.run.nodes[node.name].future = None

    def _take_engine_record(self, record: NodeRun, task_run_id: UUID) -> None:
        from kedro_prefect.execution.records import ended_task_run

        engine_record = ended_task_run(self._task_run_records, task_run_id)
        if engine_record is not None:
            record.take(engine_record)

    def on_run_end(self, run: PipelineRun) -> None:
        run.ended_at = time.monotonic()
        for record in run.nodes.values():  # records collected from Dask workers at the end
            if record.attempts is None and record.future is not None:
                self._take_engine_record(record, record.future.task_run_id)
        with _warn_on_error("reading the task runs back from the Prefect API"):
            _read_task_runs(run)
        for record in run.nodes.values():
            record.future = None  # let go of Dask futures and results


class _Observers(RunObserver):
    """Calls each observer in turn; an observer that raises is logged and switched off."""

    def __init__(self, run: PipelineRun, observers: list[RunObserver]):
        self.run = run
        self._observers = observers

    def _each(self, method: str, *args: Any) -> None:
        for observer in list(self._observers):
            try:
                getattr(observer, method)(*args)
            except Exception as exc:
                logger.warning(
                    "kedro-prefect: %s.%s failed (%s: %s); it is switched off for this run",
                    type(observer).__name__,
                    method,
                    type(exc).__name__,
                    exc,
                )
                self._observers.remove(observer)

    def on_run_start(self, run: PipelineRun) -> None:
        self._each("on_run_start", run)

    def on_node_submitted(self, node: Node, future: PrefectFuture[Any]) -> None:
        self._each("on_node_submitted", node, future)

    def on_node_finished(self, node: Node, future: PrefectFuture[Any]) -> None:
        self._each("on_node_finished", node, future)

    def on_node_not_run(self, node: Node) -> None:
        self._each("on_node_not_run", node)

    def on_run_end(self, run: PipelineRun) -> None:
        self._each("on_run_end", run)


@contextmanager
def observe_run(
    pipeline: Pipeline,
    worker_label: str | None,
    flow_name: str,
    run_id: str | None,
    catalog: CatalogProtocol | None = None,
    cancellation: Cancellation | None = None,
    groups: dict[str, str] | None = None,
    places: dict[str, str] | None = None,
) -> Iterator[RunObserver]:
    """The observers of one run: records, Prefect artifacts and terminal progress.

    Enter inside the flow function, after the task runner has started; ``worker_label`` names
    where nodes ran when their task run's record does not say. ``catalog`` tells
    persisted datasets from in-memory ones in the graph artifact. With ``cancellation``, a
    second Ctrl-C closes the progress bar and learns which task runs it abandons. ``groups``
    names the group of each node run as part of one (``group_by``); ``places`` where the nodes
    of a group on a work pool ran (``infrastructure:``).
    """
    from kedro_prefect._upstream.kedro import run_pipeline_names
    from kedro_prefect.execution.records import recording_task_runs
    from kedro_prefect.hooks import run_params_recorder
    from kedro_prefect.observe.artifacts import ArtifactWriter
    from kedro_prefect.observe.progress import TerminalProgress

    names = run_pipeline_names(run_params_recorder.get(run_id)) or ["__default__"]
    run = PipelineRun(pipeline, worker_label, flow_name, list(names))
    run.groups = dict(groups or {})
    run.places = dict(places or {})
    with _warn_on_error("reading the catalog's dataset types"):
        run.persisted_datasets = _persisted(pipeline, catalog)
    with recording_task_runs() as records:
        recorder = RunRecorder(run, records)
        progress = TerminalProgress()
        observers = _Observers(run, [recorder, ArtifactWriter(), progress])
        if cancellation is not None:
            cancellation.before_exit(progress.close)
            cancellation.track_running(run.unfinished_task_runs)
        observers.on_run_start(run)
        try:
            yield observers
        except BaseException as exc:
            run.error = exc
            raise
        finally:
            observers.on_run_end(run)


@contextmanager
def _warn_on_error(doing: str) -> Iterator[None]:
    """Log a warning instead of raising: observing a run must not break it."""
    try:
        yield
    except Exception as exc:
        logger.warning("kedro-prefect: %s failed (%s: %s)", doing, type(exc).__name__, exc)


def _api_and_ui_urls() -> tuple[str | None, str | None]:
    """The API URL in use, and the root of the UI to link to when that server serves one.

    The root is ``PREFECT_UI_URL``, as in the links Prefect's own CLI prints (``prefect
    deployment run``...): both open the same UI, the one the server serves at those paths
    (the UI at ``/``; Prefect 3.9's V2 UI lives under ``/v2``).
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    api_url = settings.api.url
    ui_url = settings.ui_url
    if not api_url or not ui_url:
        return api_url, None
    root = ui_url.rstrip("/")
    if "api.prefect.cloud" in api_url:  # Prefect Cloud serves its own UI
        return api_url, root
    ui_settings = _ui_settings(api_url, root)
    if ui_settings is None:
        return api_url, None
    available = ui_settings.get("available_uis")
    if available is None:  # before Prefect 3.9: one UI, if any
        return api_url, root if ui_settings.get("api_url") and _ui_index_answers(root) else None
    if not available:
        return api_url, None
    if "v1" not in available:  # only the V2 UI is served: link into it
        base = str(ui_settings.get("v2_base_url") or "/v2").rstrip("/")
        return api_url, f"{root}{base}" if base.startswith("/") else root
    return api_url, root


#: Whether this process has said how to see the ephemeral API's history (once is enough).
_history_hint_given = False


def _say_where_the_run_can_be_seen(run: PipelineRun) -> None:
    """One line: the flow run's page where a UI will still be there after the run.

    Prefect's ephemeral API stops with the run (and serves no UI): instead, say once per
    process how to browse its history, which stays in the database under ``PREFECT_HOME``.
    """
    global _history_hint_given
    if run.ui_url:
        logger.info("Prefect flow run: %s", run.ui_url)
        return
    from kedro_prefect.local_api import EPHEMERAL_API

    if _history_hint_given or not EPHEMERAL_API.running or run.api_url != EPHEMERAL_API.url:
        return
    from prefect.settings import get_current_settings

    _history_hint_given = True
    logger.info(
        "Prefect records this run in its ephemeral API's database under PREFECT_HOME=%s; "
        "to browse the runs: `prefect server start` with the same PREFECT_HOME",
        get_current_settings().home,
    )


def _ui_settings(api_url: str, ui_url: str) -> dict[str, Any] | None:
    """The server's ``GET <ui>/ui-settings``; ``None`` for an API that serves no UI.

    A Prefect 3 server answers it even without a UI (since 3.9 listing the UIs it serves in
    ``available_uis``); the ephemeral API never serves a UI.
    """
    from kedro_prefect.local_api import EPHEMERAL_API

    if EPHEMERAL_API.running and api_url == EPHEMERAL_API.url:
        return None  # it never does; no need to ask
    import httpx

    from kedro_prefect.api.health import http_get

    try:
        response = http_get(f"{ui_url}/ui-settings", timeout=2)
        if response.status_code != 200:
            return None
        settings = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return settings if isinstance(settings, dict) else None


def _ui_index_answers(ui_url: str) -> bool:
    """Whether the UI's index page answers (servers before Prefect 3.7.0 name an ``api_url`` in
    ``/ui-settings`` even when started with ``--no-ui``: only the index tells)."""
    import httpx

    from kedro_prefect.api.health import http_get

    try:
        return http_get(f"{ui_url}/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _persisted(pipeline: Pipeline, catalog: CatalogProtocol | None) -> set[str]:
    """The pipeline's datasets that the catalog declares and that are not in memory."""
    if catalog is None:
        return set()
    from kedro_prefect._upstream.kedro import is_in_memory

    persisted = set()
    for name in pipeline.datasets():
        if name == "parameters" or name.startswith("params:"):
            continue
        dataset = catalog.get(name, fallback_to_runtime_pattern=False)
        if dataset is not None and not is_in_memory(dataset):
            persisted.add(name)
    return persisted


def _read_task_runs(run: PipelineRun) -> None:
    """Attempts, start and duration of the nodes not known yet, as the Prefect API recorded them.

    Task run states reach the API as events, so this waits (up to ``API_SETTLE_SECONDS``) until
    the API shows the final state the runner saw for each node.
    """
    from prefect import get_client

    from kedro_prefect.local_api import read_recorded_task_runs

    by_id = {
        record.future.task_run_id: record
        for record in run.nodes.values()
        if record.future is not None
        and record.state is not None
        and record.attempts is None
        and not record.skipped  # a cache hit (skip_unchanged): no attempt to read back
    }
    if not by_id:
        return
    # After Ctrl-C or SystemExit, read once and do not hold up the exit.
    interrupted = run.error is not None and not isinstance(run.error, Exception)
    started = time.monotonic()
    deadline = started + (0 if interrupted else API_SETTLE_SECONDS)
    final_states = {
        task_run_id: record.state.type
        for task_run_id, record in by_id.items()
        if record.state is not None  # as selected above
    }
    with get_client(sync_client=True) as client:
        settled = read_recorded_task_runs(client, final_states, deadline)
    logger.debug(
        "Read %d of %d task runs back from the Prefect API in %.2f s",
        len(settled),
        len(by_id),
        time.monotonic() - started,
    )
    from kedro_prefect.execution.records import TaskRunRecord

    for task_run_id, task_run in settled.items():
        by_id[task_run_id].take(TaskRunRecord.of(task_run))
