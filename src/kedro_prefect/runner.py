"""``PrefectRunner``: run a Kedro pipeline as one Prefect flow, one task per node."""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any

from kedro.runner import AbstractRunner

from kedro_prefect._upstream.kedro import (
    null_hook_manager,
    run_pipeline_names,
    sequential_runner_sync_message,
)
from kedro_prefect._upstream.prefect import local_result_storage
from kedro_prefect._upstream.prefect_tasks import slots_only_for_limited_tags
from kedro_prefect.api.health import configured_api_url, ensure_api_reachable
from kedro_prefect.api.settings import (
    expect_recorded,
    prefect_run_settings,
    run_client,
    start_ephemeral_api_early,
)
from kedro_prefect.backends import choose_backend
from kedro_prefect.config import RunnerOptions, load_project_config, parse_runner_options
from kedro_prefect.dask.resources import resource_tags
from kedro_prefect.errors import MissingPipelineInputError, RunCancelledError
from kedro_prefect.execution.cancellation import Cancellation, run_flow_body
from kedro_prefect.execution.flow import RUN_BODY, pipeline_flow
from kedro_prefect.execution.grouping import group_of_nodes
from kedro_prefect.execution.redaction import project_secrets, protect_secrets, redacted_logs
from kedro_prefect.execution.task_options import (
    LimitedTags,
    resolve_task_options,
    timeout_error,
)
from kedro_prefect.execution.tasks import group_task, node_task
from kedro_prefect.execution.units import pool_groups, pool_places, run_grouping
from kedro_prefect.hooks import run_params_recorder
from kedro_prefect.observe.base import NULL_OBSERVER, RunObserver
from kedro_prefect.observe.events import dataset_events_for_run
from kedro_prefect.observe.logs import (
    keep_project_log_handlers,
    node_logs_to_prefect,
    quiet_terminal,
)
from kedro_prefect.observe.recorder import observe_run
from kedro_prefect.process_exit import collect_then_freeze_at_exit
from kedro_prefect.scheduling import run_nodes
from kedro_prefect.workpools import pool_task_runner, prepare_pool_runs

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from pluggy import PluginManager
    from prefect.task_runners import TaskRunner

    from kedro_prefect.execution.protocol import NodeExecution


#: What Kedro's ``SequentialRunner`` logs when a run loads and saves data synchronously (word for
#: word: people and tools look for it).
SYNC_MODE_MESSAGE = (
    "Using synchronous mode for loading and saving data. Use the --async flag "
    "for potential performance gains. "
    "https://docs.kedro.org/en/stable/build/run_a_pipeline/#load-and-save-asynchronously"
)


class PrefectRunner(AbstractRunner):
    """``PrefectRunner`` runs a ``Pipeline`` as a Prefect flow with one task run per node.

    Each node is submitted to a Prefect task runner as soon as the nodes producing its
    inputs have finished, and not before: there are no layer barriers, so a fast branch never
    waits for a slow sibling. Nodes execute through Kedro's own ``kedro.runner.Task``, so
    project hooks, ``is_async`` loading and saving, ``confirms`` and generator nodes behave as
    under ``SequentialRunner``, and in-memory datasets are released as soon as their last
    consumer has finished.

    With ``PREFECT_API_URL`` unset the run reports to Prefect's ephemeral local API (SQLite
    under ``PREFECT_HOME``); with it set, to that server.

    Example:
        ``kedro run --runner=kedro_prefect.PrefectRunner --runner-params=max_workers=4``
    """

    _observer: RunObserver = NULL_OBSERVER  # artifacts and terminal progress, set per run

    def __init__(self, is_async: bool = False, **options: Any):
        """Validate the options; an unknown option or a bad value raises before anything runs.

        Args:
            is_async: Load inputs and save outputs of a node in threads (Kedro's ``is_async``).
            **options: The fields of :class:`kedro_prefect.RunnerOptions` (``task_runner``,
                ``max_workers``, ``flow_name``, the Dask options, retries and timeouts).

        Raises:
            PrefectRunnerConfigError: An option is unknown or its value is invalid.
        """
        self._options = parse_runner_options({"is_async": is_async, **options})
        self._backend = choose_backend(self._options)
        super().__init__(is_async=self._options.is_async)
        collect_then_freeze_at_exit()  # before anything else registers an exit handler
        # `kedro run` builds the runner before the session: start the API while it loads.
        start_ephemeral_api_early()
        if "task_runner" not in self._options.model_fields_set:  # prefect.yml may choose it
            run_params_recorder.when_context_created(self._project_known)

    @property
    def options(self) -> RunnerOptions:
        """The validated options of this runner."""
        return self._options

    def run(self, pipeline: Pipeline, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run the pipeline; see ``kedro.runner.AbstractRunner.run``.

        A pipeline input missing from the catalog raises Kedro's ``ValueError`` (a
        :class:`~kedro_prefect.errors.MissingPipelineInputError`: Kedro's message, then a hint).
        """
        _follow_kedro_log_level()
        try:
            return super().run(pipeline, *args, **kwargs)
        except ValueError as exc:
            if not str(exc).startswith("Pipeline input(s)"):
                raise
            raise missing_input_error(pipeline, str(exc)) from None

    def _project_known(self) -> None:
        """The session created the project's context: apply prefect.yml's ``runner:`` defaults
        now, so that the backend they choose starts what it can while Kedro loads the catalog
        and the pipelines (a local Dask cluster's fork server). The run applies them again,
        and reports a bad prefect.yml then."""
        with contextlib.suppress(Exception):
            self._apply_project_defaults()

    def _apply_project_defaults(self) -> None:
        """Fill options not given to the constructor from the ``runner:`` section of prefect.yml."""
        project = load_project_config(run_params_recorder.config_loader, deployments=False)
        self._project_config = project
        if not project.runner:
            return
        given = self._options.model_dump(include=self._options.model_fields_set)
        self._options = parse_runner_options({**project.runner, **given})
        self._backend = choose_backend(self._options)

    def _get_executor(self, max_workers: int) -> Executor | None:
        """Unused: Prefect's task runner plays the executor's part."""
        return None

    def _run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
    ) -> None:
        """Run ``pipeline`` in a new Prefect flow run.

        Raises:
            Exception: The exception of the first node that failed, after the resume hint
                has been logged.
        """
        if not self._is_async:
            # as SequentialRunner does, in the installed Kedro's words
            self._logger.info(sequential_runner_sync_message(SYNC_MODE_MESSAGE))
        self._apply_project_defaults()
        if not pipeline.nodes:
            self._logger.info("No nodes to run.")
            return
        with contextlib.ExitStack() as started:
            if not _in_flow_run():  # first: a local Dask cluster starts now, in the background
                started.enter_context(self._backend.starting(pipeline, catalog))
            self._run_started(pipeline, catalog, hook_manager, run_id)

    def _run_started(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None,
        run_id: str | None,
    ) -> None:
        keep_project_log_handlers()
        from prefect import flow

        hook_manager = hook_manager or null_hook_manager()
        flow_name, flow_run_name = self._flow_names(run_id)
        tasks_config = self._project_config.tasks
        self._task_options = resolve_task_options(
            pipeline, self._options.model_dump(), tasks_config
        )
        self._grouping = None
        infrastructure = self._infrastructure()
        if self._options.group_by != "none" or infrastructure:
            self._grouping, group_options = run_grouping(
                pipeline,
                catalog,
                self._options.group_by,
                self._task_options,
                resource_tags,
                infrastructure,
            )
            self._task_options.update(group_options)
        self._secrets = secrets = project_secrets(run_params_recorder.config_loader)
        self._cancellation = cancellation = Cancellation()
        outcome: dict[str, BaseException | None] = {"error": None}
        groups = group_of_nodes(self._grouping)

        self._pool_runs = prepare_pool_runs(  # before any node: a missing pool is one line
            pool_groups(self._grouping),
            api_url=configured_api_url(),
            flow_names=(flow_name, flow_run_name),
            run_params=run_params_recorder.get(run_id),
            options=self._options,
            cancellation=cancellation,
            task_options=self._task_options,
        )

        def body() -> None:
            with (
                self._backend.task_runner(pipeline) as runner,
                pool_task_runner(self._pool_runs) as self._pool_runner,
            ):
                execution = self._node_execution(pipeline, catalog, hook_manager, run_id, runner)
                worker_label = self._backend.worker_label(runner)
                with observe_run(
                    pipeline,
                    worker_label,
                    flow_name,
                    run_id,
                    catalog,
                    cancellation,
                    groups,
                    pool_places(self._grouping),
                ) as self._observer:
                    self._run_nodes(pipeline, catalog, run_id, runner, execution)

        if _in_flow_run():
            # Already inside a flow run (a deployment of kedro_prefect.deploy.kedro_pipeline):
            # submit the node tasks into that flow run instead of starting a second flow.
            with node_logs_to_prefect(_package_name()), redacted_logs(secrets):
                with LimitedTags(tasks_config) as limits, slots_only_for_limited_tags(limits):
                    body()
            return

        flow_options: dict[str, Any] = {
            "name": flow_name,
            "flow_run_name": flow_run_name,
            "persist_result": False,
            "validate_parameters": False,
            "log_prints": False,
            **local_result_storage(),  # nothing is persisted: no read of the server's default
        }
        prefect_flow = flow(pipeline_flow, **flow_options)
        api_url = configured_api_url()
        if api_url:
            ensure_api_reachable(api_url)

        def flow_body() -> Any:
            state, outcome["error"] = run_flow_body(body, cancellation, secrets)
            return state

        token = RUN_BODY.set(flow_body)
        try:
            with (
                prefect_run_settings() as api_url,
                run_client(api_url),
                node_logs_to_prefect(_package_name()),
                redacted_logs(secrets),
                quiet_terminal(dask=self._backend.quiet_dask_logs),
            ):
                with LimitedTags(tasks_config) as limits, slots_only_for_limited_tags(limits):
                    prefect_flow(return_state=True)
        finally:
            RUN_BODY.reset(token)
        if outcome["error"] is not None:
            raise outcome["error"]

    def _node_execution(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager,
        run_id: str | None,
        task_runner: TaskRunner,
    ) -> NodeExecution:
        """The backend's node execution, before any node runs (a Dask cluster starts here)."""
        events = None
        if self._options.dataset_events:
            events = dataset_events_for_run(
                _package_name(),
                run_params_recorder.get(run_id),
                run_params_recorder.config_loader,
                run_id,
            )
        return self._backend.node_execution(
            task_runner, pipeline, catalog, hook_manager, self._is_async, run_id, events
        )

    def _run_nodes(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        run_id: str | None,
        task_runner: TaskRunner,
        execution: NodeExecution,
    ) -> None:
        """Run the nodes (:func:`kedro_prefect.scheduling.run_nodes`); raise the first failure."""
        skip = None
        if self._options.skip_unchanged:
            from kedro_prefect.cache.skip import start_skipping

            cache_config = self._project_config.cache
            skip, execution = start_skipping(
                pipeline,
                catalog,
                execution,
                cache_config,
                self._secrets,
                _package_name(),
                execution.versions,  # the versions its workers load: the ones fingerprinted
            )
        task_fn = protect_secrets(execution.task_fn, self._secrets)

        def task_of(node: Any) -> Any:
            task = node_task(node, task_fn, **self._task_options[node.name].prefect_kwargs())
            return skip.keyed_task(task, node) if skip else task

        group_fn = getattr(execution, "group_fn", None)
        group_fn = group_fn and protect_secrets(group_fn, self._secrets)

        def group_task_of(unit: Any) -> Any:
            assert group_fn is not None  # a backend that runs groups has a group body
            task = group_task(
                unit.name, unit.nodes, group_fn, **self._task_options[unit.name].prefect_kwargs()
            )
            return skip.keyed_group_task(task, unit.nodes) if skip else task

        pools = self._pool_runs
        outcome = run_nodes(
            pipeline,
            catalog,
            task_runner,
            execution,
            task_of,
            self._observer,
            self._cancellation,
            self._logger,
            self._grouping,
            group_task_of,
            functools.partial(pools.submit, self._pool_runner) if pools else None,
        )
        expect_recorded(outcome.final_states)
        failed = outcome.failed
        if failed and self._cancellation.requested and failed[1].is_cancelled():
            failed = None  # a group's child flow run, cancelled with the run
        if failed or self._cancellation.requested:
            self._suggest_resume_scenario(pipeline, outcome.done, catalog)
            if skip is not None:
                self._logger.warning(skip.RESUME_HINT)
        if failed:
            if failed[1].name == "TimedOut":
                unit = self._grouping.group_of(failed[0]) if self._grouping else None
                raise timeout_error(failed[0], self._task_options.get(unit or failed[0].name))
            failed[1].result(raise_on_failure=True)
            raise RuntimeError(f"Node {failed[0].name} ended {failed[1].name}")
        signum = self._cancellation.signum
        if signum is not None:  # cancellation requested
            raise RunCancelledError(signum, completed=len(outcome.done), total=len(pipeline.nodes))

    def _infrastructure(self) -> dict[str, Any]:
        """Groups on work pools: prefect.yml's ``infrastructure:``, the option's mapping over it
        (``infrastructure=false``: none)."""
        option = self._options.infrastructure
        if option is False:
            return {}
        return {**self._project_config.infrastructure, **(option or {})}

    def _flow_names(self, run_id: str | None) -> tuple[str, str]:
        """Flow name (option ``flow_name``, else the project package) and flow run name."""
        project = _package_name() or "kedro"
        pipelines = run_pipeline_names(run_params_recorder.get(run_id)) or ["__default__"]
        run_name = f"{project}-{'+'.join(pipelines)}"
        if run_id:
            run_name += f"-{run_id}"
        return self._options.flow_name or project, run_name


def missing_input_error(pipeline: Pipeline, message: str) -> MissingPipelineInputError:
    """Kedro's "Pipeline input(s) {...} not found in the DataCatalog" error, with a hint after it.

    A ``ValueError`` whose first line is Kedro's own message (so code and tests written against
    Kedro's runners keep matching it); the second line names the nodes needing the inputs.
    """
    import ast

    try:
        missing = sorted(ast.literal_eval(message[message.index("{") : message.index("}") + 1]))
    except (ValueError, SyntaxError):
        return MissingPipelineInputError(f"{message}\nNo node was run.")
    users = sorted(
        node.name for node in pipeline.nodes if any(name in node.inputs for name in missing)
    )
    return MissingPipelineInputError(
        f"{message}\nNeeded by {', '.join(users)}; no node was run. Declare "
        f"{', '.join(missing)} in conf/<env>/catalog.yml, or include the nodes that produce "
        "them in the run (check --pipeline, --from-nodes, --to-nodes, --tags)."
    )


def _follow_kedro_log_level() -> None:
    """Log at the ``kedro`` logger's level unless the project configured ``kedro_prefect``.

    A project's ``logging.yml`` sets the level of ``kedro`` (INFO by default), not of this
    package; without this, "Completed node" lines would be hidden where Kedro's runners show them.
    """
    import logging

    ours = logging.getLogger("kedro_prefect")
    if ours.level == logging.NOTSET:
        ours.setLevel(logging.getLogger("kedro").getEffectiveLevel())


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def _package_name() -> str | None:
    from kedro.framework.project import PACKAGE_NAME

    return PACKAGE_NAME


__all__ = ["PrefectRunner"]
