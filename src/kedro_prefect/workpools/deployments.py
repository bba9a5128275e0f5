"""The deployment behind a group's child flow runs, checked and written before any node runs.

A child flow run on a work pool is a flow run of a deployment (that is how Prefect hands work to
a pool's workers, in every 3.x version): one deployment per mapped group, named
``group-<group>`` (``-<env>`` with a Kedro environment), of the run's flow, with the deployable
flow's entrypoint (``kedro_prefect.deploy.kedro_pipeline``, a module path: the worker imports it
from the installed package). The run creates or updates it each time, so it always says what
prefect.yml says; what changes per run (nodes, parameters) goes in the flow run's parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kedro_prefect.errors import InfrastructureError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

    from kedro_prefect.config.infrastructure import InfrastructureConfig

#: The entrypoint of every kedro-prefect deployment (the deployable flow, ``deploy/flow.py``).
FLOW_ENTRYPOINT = "kedro_prefect.deploy.kedro_pipeline"

#: Tag of the deployments made for groups (``kedro prefect list`` leaves them out).
GROUP_DEPLOYMENT_TAG = "kedro-prefect:group"


def group_deployment_name(group: str, env: str | None) -> str:
    """``group-<group>``, with ``-<env>`` for a Kedro environment (as named deployments are)."""
    name = f"group-{group}".replace("/", "-")
    return f"{name}-{env}" if env else name


def require_server(api_url: str | None, groups: list[str]) -> str:
    """The API URL the pools' workers must reach too; refuse the ephemeral local API.

    Raises:
        InfrastructureError: ``PREFECT_API_URL`` is not set.
    """
    if api_url:
        return api_url
    raise InfrastructureError(
        f"infrastructure: group(s) {', '.join(map(repr, groups))} run on work pools, which "
        "need a Prefect server that this run and the pools' workers both reach: set "
        "PREFECT_API_URL (e.g. `prefect server start`), or run every node here with "
        "--runner-params=infrastructure=false (or keep infrastructure: in the environment you "
        "deploy, e.g. conf/prod/prefect.yml). No node has run."
    )


def check_work_pools(client: SyncPrefectClient, pools: dict[str, InfrastructureConfig]) -> None:
    """Raise :class:`InfrastructureError` naming each mapped work pool that does not exist."""
    from prefect.exceptions import ObjectNotFound

    missing: list[tuple[str, str]] = []  # (pool, group)
    for group, where in pools.items():
        try:
            client.read_work_pool(where.work_pool)
        except ObjectNotFound:
            missing.append((where.work_pool, group))
    if missing:
        existing = ", ".join(sorted(p.name for p in client.read_work_pools())) or "none"
        named = ", ".join(f"{pool!r} (group {group!r})" for pool, group in missing)
        first = missing[0][0]
        raise InfrastructureError(
            f"infrastructure: work pool(s) {named} do not exist on the Prefect "
            f"server (existing pools: {existing}); create one with `prefect work-pool create "
            f"{first} --type process` and start a worker with `prefect worker start --pool "
            f"{first}`. No node has run."
        )


def apply_group_deployment(
    flow_name: str,
    group: str,
    where: InfrastructureConfig,
    env: str | None,
    project_path: str,
) -> Any:
    """Create or update the deployment of ``group``'s child flow runs; return its id."""
    from prefect.deployments.runner import RunnerDeployment

    deployment = RunnerDeployment(
        name=group_deployment_name(group, env),
        flow_name=flow_name,
        entrypoint=FLOW_ENTRYPOINT,  # a module path: workers import the installed package
        parameters={"project_path": where.project_path or project_path},
        work_pool_name=where.work_pool,
        work_queue_name=where.work_queue,
        job_variables=dict(where.job_variables),
        tags=[GROUP_DEPLOYMENT_TAG],
        description=(
            f"The nodes of group {group!r} of {flow_name}, run on work pool "
            f"{where.work_pool!r} as child flow runs (prefect.yml infrastructure:)."
        ),
        enforce_parameter_schema=False,
    )
    return deployment.apply()
