"""The task of a group on a work pool: start its child flow run, wait, report its end.

The task runs in a thread of the parent run (whatever its ``task_runner``): it creates the flow
run of the group's deployment as a subflow of this task run (so the UI draws it under the
parent), polls it until it ends, cancels it if the parent run is cancelled, and fails naming
the node that failed in it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kedro_prefect.errors import ChildFlowRunError
from kedro_prefect.execution.local import mark_failed_node

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient

    from kedro_prefect.execution.cancellation import Cancellation

logger = logging.getLogger("kedro_prefect.workpools")

#: Seconds between two reads of a child flow run's state.
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ChildRun:
    """The child flow run of one group: which deployment, with what, named how, where."""

    group: str
    deployment_id: Any
    parameters: dict[str, Any]
    flow_run_name: str
    work_pool: str
    work_queue: str | None = None


def run_child_flow(child: ChildRun, cancellation: Cancellation | None = None) -> Any:
    """Run the group's nodes as a child flow run on ``work_pool``; return its id and state
    (a ``Cancelled`` state when the run was cancelled, and the child with it).

    Raises:
        ChildFlowRunError: The child flow run did not complete: the node that failed in it,
            the child flow run's name and its work pool are named (the node is also noted on
            the exception for the parent's resume hint).
    """
    from prefect.client.orchestration import get_client

    group, flow_run_name, work_pool = child.group, child.flow_run_name, child.work_pool
    with get_client(sync_client=True) as client:
        child_run = _create_child_run(client, child)
    logger.info(
        "Group %s: child flow run '%s' on work pool '%s' (waiting for a worker of the pool)",
        group,
        flow_run_name,
        work_pool,
    )
    cancelled = False
    run: Any = None
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(child_run.id)
            if run.state is not None and run.state.is_final():
                break
            if cancellation is not None and cancellation.requested and not cancelled:
                from prefect.states import Cancelled, Cancelling

                # Not started yet: cancelled at once; running: its worker stops it.
                waiting = run.state is None or run.state.is_scheduled() or run.state.is_pending()
                client.set_flow_run_state(
                    child_run.id, Cancelled() if waiting else Cancelling(), force=True
                )
                cancelled = True
            time.sleep(POLL_SECONDS)
        if run.state.is_completed():
            return {"flow_run_id": str(child_run.id), "state": run.state.type.value}
        if cancelled and run.state.is_cancelled():
            from prefect.states import Cancelled

            return Cancelled(message=f"child flow run '{flow_run_name}' cancelled with the run")
        node = _failed_node(client, child_run.id)
    error = ChildFlowRunError(
        (f"Node {node!r} failed" if node else f"Group {group!r} ended {run.state.name}")
        + f" in child flow run '{flow_run_name}' on work pool '{work_pool}': "
        + (run.state.message or run.state.name)
    )
    if node:
        mark_failed_node(error, node)
    raise error


def _create_child_run(client: SyncPrefectClient, child: ChildRun) -> Any:
    """The group's flow run, a subflow of this task run (as ``run_deployment`` links one).

    Prefect shows a subflow under a task run of the parent that mirrors the subflow's state:
    one is created here, named after the group and the pool, its parent this task run.
    """
    from prefect.context import TaskRunContext

    from kedro_prefect._upstream.prefect_deploy import create_subflow_link

    task_run = TaskRunContext.get().task_run  # type: ignore[union-attr]
    link = create_subflow_link(
        client, task_run.flow_run_id, task_run.id, f"{child.group} on {child.work_pool}"
    )
    return client.create_flow_run_from_deployment(
        child.deployment_id,
        parameters=child.parameters,
        name=child.flow_run_name,
        parent_task_run_id=link,
        work_queue_name=child.work_queue,
    )


def _failed_node(client: SyncPrefectClient, flow_run_id: UUID) -> str | None:
    """The name of the first task run of the child that did not complete (a node's task)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(  # name=None: a required field in Prefect 3.4
                type=TaskRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED]), name=None
            )
        ),
    )
    return runs[0].name if runs else None
