"""Groups of nodes on Prefect work pools (``infrastructure:``), run as child flow runs.

Before any node runs, :func:`prepare_pool_runs` checks that the run reports to a Prefect server
(the pools' workers must reach it), that every mapped work pool exists, and writes each group's
deployment (:mod:`.deployments`). During the run, each group is one task of the parent, in a
thread of its own whatever the run's ``task_runner``; the task starts the group's child flow run
and waits for it (:mod:`.child`). The child flow run is a full Kedro session of the project on
the pool's worker, restricted to the group's nodes (``kedro run --nodes``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kedro_prefect.execution.tasks import group_task
from kedro_prefect.workpools.child import ChildRun, run_child_flow
from kedro_prefect.workpools.deployments import (
    FLOW_ENTRYPOINT,
    GROUP_DEPLOYMENT_TAG,
    apply_group_deployment,
    check_work_pools,
    group_deployment_name,
    require_server,
)

if TYPE_CHECKING:
    from prefect import Task
    from prefect.futures import PrefectFuture

    from kedro_prefect.config.infrastructure import InfrastructureConfig
    from kedro_prefect.config.options import RunnerOptions
    from kedro_prefect.execution.cancellation import Cancellation
    from kedro_prefect.execution.grouping import Unit


@dataclass
class PoolRuns:
    """The run's groups on work pools: their deployments, and how to submit each one's task."""

    pools: dict[str, InfrastructureConfig]
    deployment_ids: dict[str, Any]
    #: Flow parameters every child gets (project path, pipeline, env, params, runner options).
    parameters: dict[str, dict[str, Any]]
    flow_run_name: str
    cancellation: Cancellation | None = None
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def task_of(self, unit: Unit) -> Task:
        """The parent's task of a mapped group, named after it."""
        options = self.task_options.get(unit.name, {})
        return group_task(unit.name, unit.nodes, run_child_flow, **options)

    def arguments(self, unit: Unit) -> dict[str, Any]:
        """``TaskRunner.submit`` arguments of a mapped group's task."""
        where = self.pools[unit.name]
        return {
            "parameters": {
                "child": ChildRun(
                    unit.name,
                    self.deployment_ids[unit.name],
                    {**self.parameters[unit.name], "nodes": [node.name for node in unit.nodes]},
                    f"{self.flow_run_name}-{unit.name}",
                    where.work_pool,
                    where.work_queue,
                ),
                "cancellation": self.cancellation,
            }
        }

    def submit(
        self, runner: Any, unit: Unit, after: list[PrefectFuture[Any]]
    ) -> PrefectFuture[Any]:
        """Submit the group's task; ``after``: its producers' futures (done already: they give
        the UI its edges into the group)."""
        return runner.submit(self.task_of(unit), **self.arguments(unit), wait_for=after)


@contextmanager
def pool_task_runner(pools: PoolRuns | None) -> Iterator[Any]:
    """Threads for the tasks of the run's groups on work pools (they only wait on the API),
    whatever the run's ``task_runner``; ``None`` without such groups."""
    if pools is None:
        yield None
        return
    from prefect.task_runners import ThreadPoolTaskRunner

    runner: ThreadPoolTaskRunner[Any]
    with ThreadPoolTaskRunner(max_workers=len(pools.pools)) as runner:
        yield runner


def prepare_pool_runs(
    pools: dict[str, InfrastructureConfig],
    *,
    api_url: str | None,
    flow_names: tuple[str, str],
    run_params: dict[str, Any],
    options: RunnerOptions,
    cancellation: Cancellation | None,
    task_options: dict[str, Any],
) -> PoolRuns | None:
    """Check the server and pools, write each group's deployment: before any node runs.

    ``pools`` are the run's groups on work pools (none: ``None`` is returned); ``flow_names``
    the parent's flow and flow run names; ``options`` the run's runner options, which the child
    flow runs get too, under each group's ``runner:``.

    Raises:
        InfrastructureError: No Prefect server (``PREFECT_API_URL``), or a work pool missing.
    """
    if not pools:
        return None
    from prefect.client.orchestration import get_client

    from kedro_prefect._upstream.kedro import run_pipeline_names

    require_server(api_url, list(pools))
    flow_name, flow_run_name = flow_names
    env = run_params.get("env")
    project_path = str(run_params.get("project_path") or ".")
    names = run_pipeline_names(run_params)
    pipeline = names[0] if names and len(names) == 1 else "__default__"
    given = options.model_dump(
        include=options.model_fields_set, exclude={"infrastructure", "flow_name"}
    )
    with get_client(sync_client=True) as client:
        check_work_pools(client, pools)
    deployment_ids = {}
    parameters = {}
    for group, where in pools.items():
        deployment_ids[group] = apply_group_deployment(flow_name, group, where, env, project_path)
        parameters[group] = {
            "project_path": where.project_path or project_path,
            "pipeline": pipeline,
            "env": env,
            "params": dict(run_params.get("runtime_params") or {}),
            "runner_options": {**given, **where.runner, "infrastructure": False},
        }
    return PoolRuns(
        pools,
        deployment_ids,
        parameters,
        flow_run_name,
        cancellation,
        {group: task_options[group].prefect_kwargs() for group in pools},
    )


__all__ = [
    "FLOW_ENTRYPOINT",
    "GROUP_DEPLOYMENT_TAG",
    "PoolRuns",
    "group_deployment_name",
    "pool_task_runner",
    "prepare_pool_runs",
]
