"""Prefect deployments: the parameter form of a deployment, serving what the server has, and the
link of a group's child flow run to its parent.

Relies on:

* ``RunnerDeployment._parameter_openapi_schema`` (a ``ParameterSchema``, Prefect's schema of
  the flow function's signature), which ``apply()`` sends as the deployment's
  ``parameter_openapi_schema``: :func:`set_parameter_schema` replaces it with the schema built
  from the project (one field per Kedro parameter), so the UI's *Custom run* form shows the
  project's parameters and the server (``enforce_parameter_schema``) refuses unknown keys and
  wrong types. A subclass of ``ParameterSchema`` carries ``additionalProperties`` (Prefect's
  model has no such field); descriptions are plain JSON schema, stored by every 3.x server.
* ``Runner``'s registered deployment ids (``_deployment_registry._deployment_ids`` from Prefect
  3.9, ``_deployment_ids`` before), which its poller reads on each loop: :func:`serve_following`
  adds deployments deployed while ``kedro prefect serve`` runs (through the public
  ``add_deployment``) and takes deleted ones out of that set.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from kedro_prefect._upstream import Contract

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient

CONTRACTS = (
    Contract(
        "prefect.client.orchestration:SyncPrefectClient.request",
        "a group's child flow run is linked under a task run of its parent, posted as JSON "
        "(Prefect 3.4's create_task_run sends no JSON content type: its server answers 422)",
        check=lambda method: any(
            p.kind is p.VAR_KEYWORD for p in inspect.signature(method).parameters.values()
        ),
    ),
    Contract(
        "prefect.deployments.runner:RunnerDeployment",
        "the deployment's parameter form: the schema apply() sends, built from the project",
        check=lambda cls: "_parameter_openapi_schema" in cls.__private_attributes__,
    ),
    Contract(
        "prefect.runner:Runner",
        "serve follows the server: deleted deployments leave the runner's deployment ids",
        check=lambda cls: _has_deployment_ids(cls),
    ),
)

logger = logging.getLogger("kedro_prefect.deploy")


def create_subflow_link(
    client: SyncPrefectClient, flow_run_id: UUID | None, parent_task_run_id: UUID, name: str
) -> Any:
    """A task run of flow run ``flow_run_id`` standing for a subflow, child of task run
    ``parent_task_run_id``, as ``run_deployment`` creates one (the server keeps its state the
    subflow's); returns its id.

    Posted through the client's ``request`` with a JSON body: Prefect 3.4's ``create_task_run``
    posts the same body without a JSON content type, which its server refuses (422).
    """
    import uuid

    from prefect.client.schemas.actions import TaskRunCreate
    from prefect.client.schemas.objects import TaskRunResult
    from prefect.states import Pending, to_state_create

    body = TaskRunCreate(
        id=None,
        name=name,
        flow_run_id=flow_run_id,
        task_key=f"kedro_prefect.workpools.{name}",
        dynamic_key=uuid.uuid4().hex,
        state=to_state_create(Pending()),
        task_inputs={"__parents__": [TaskRunResult(id=parent_task_run_id)]},
    )
    response = client.request(
        "POST", "/task_runs/", json=body.model_dump(mode="json", exclude={"id"})
    )
    response.raise_for_status()
    return uuid.UUID(response.json()["id"])


def _has_deployment_ids(cls: Any) -> bool:
    source = inspect.getsource(cls.__init__)
    return "_deployment_registry" in source or "_deployment_ids" in source


def set_parameter_schema(deployment: Any, schema: dict[str, Any]) -> None:
    """Make ``schema`` (a JSON schema of the flow's parameters) the deployment's form."""
    from prefect.utilities.callables import ParameterSchema

    class _Schema(ParameterSchema):
        additionalProperties: bool = False

    deployment._parameter_openapi_schema = _Schema(
        title=schema.get("title", "Parameters"),
        type="object",
        properties=schema["properties"],
        required=schema.get("required", []),
        definitions=schema.get("definitions", {}),
        additionalProperties=schema.get("additionalProperties", False),
    )


def parameter_schema_of(deployment: Any) -> dict[str, Any]:
    """The schema ``apply()`` sends for a deployment (as the server then stores it)."""
    return deployment._parameter_openapi_schema.model_dump(exclude_unset=True)


def _registered_ids(runner: Any) -> set[Any]:
    registry = getattr(runner, "_deployment_registry", None)
    return registry._deployment_ids if registry is not None else runner._deployment_ids


def serve_following(
    current: Callable[[], list[tuple[Any, str, str]]],
    initial: list[tuple[Any, str, str]],
    limit: int | None,
    every: float,
    echo: Callable[[str], None],
) -> None:
    """Serve ``(id, name, flow name)`` deployments until Ctrl-C, following the server.

    ``current()`` is called every ``every`` seconds: deployments it lists that are not served
    yet are added, served ones it no longer lists are dropped; each change is echoed as one
    line. Nothing on the server changes; stopping leaves the schedules active.
    """
    import asyncio

    from prefect.runner import Runner

    from kedro_prefect._upstream.prefect import _Deployed

    runner = Runner(pause_on_shutdown=False, limit=limit)

    async def add(item: tuple[Any, str, str]) -> None:
        adding = getattr(runner, "aadd_deployment", None) or runner.add_deployment
        result = adding(cast(Any, _Deployed(*item)))  # what add_deployment reads of one
        if inspect.isawaitable(result):
            await result

    async def follow(served: dict[Any, tuple[Any, str, str]]) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                now = {item[0]: item for item in await asyncio.to_thread(current)}
            except Exception as exc:  # the server may be restarting: try again next time
                logger.warning("Could not read the deployments on the server: %s", exc)
                continue
            for deployment_id, item in now.items():
                if deployment_id not in served:
                    await add(item)
                    served[deployment_id] = item
                    echo(f"Serving '{item[2]}/{item[1]}' (deployed while serving)")
            for deployment_id in [d for d in served if d not in now]:
                item = served.pop(deployment_id)
                _registered_ids(runner).discard(deployment_id)
                echo(f"Stopped serving '{item[2]}/{item[1]}' (no longer on the server)")

    async def main() -> None:
        for item in initial:
            await add(item)
        watcher = asyncio.ensure_future(follow({item[0]: item for item in initial}))
        try:
            await runner.start()
        finally:
            watcher.cancel()

    from prefect.exceptions import TerminationSignal

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        logger.info("Received %s, shutting down...", type(exc).__name__)
