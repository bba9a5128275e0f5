"""``kedro prefect check`` and the grouping check of ``kedro prefect deploy``.

Both build the units a run would submit (``group_by`` and the groups on work pools of
``infrastructure:``, :mod:`kedro_prefect.execution.units`) from the project's registered
pipeline and its catalog configuration, and refuse units that cannot run with the line a run
would raise, before anything is deployed or run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kedro.pipeline import Pipeline

    from kedro_prefect.config import DeploymentConfig
    from kedro_prefect.deploy.deployments import Project
    from kedro_prefect.execution.grouping import Grouping


def checked_grouping(
    project: Project,
    pipeline_name: str,
    runner_options: dict[str, Any],
    env: str | None = None,
) -> tuple[Pipeline, Grouping]:
    """The units of ``pipeline_name`` under ``runner_options['group_by']`` and the project's
    ``infrastructure:`` (with ``runner_options['infrastructure']`` over it), checked.

    Raises:
        NodeGroupingError: The grouping cannot run (a cycle between groups, mixed Dask
            resources, conflicting task options in a group).
        InfrastructureError: In-memory data would cross into or out of a group on a work pool.
    """
    from kedro.framework.project import pipelines

    from kedro_prefect.config import parse_runner_options
    from kedro_prefect.dask.resources import resource_tags
    from kedro_prefect.deploy.triggers import project_datasets
    from kedro_prefect.execution.task_options import group_task_options, resolve_task_options
    from kedro_prefect.execution.units import plan_units

    options = parse_runner_options(runner_options)
    if pipeline_name not in pipelines:
        from kedro_prefect.errors import ProjectConfigError

        allowed = ", ".join(sorted(pipelines)) or "(none registered)"
        raise ProjectConfigError(
            f"unknown pipeline {pipeline_name!r}; the project's pipelines are: {allowed}"
        )
    pipeline = pipelines[pipeline_name]
    datasets = project_datasets(project.path, project.package_name, env)
    infrastructure = {}
    if options.infrastructure is not False:
        infrastructure = {**project.config.infrastructure, **(options.infrastructure or {})}
    grouping = plan_units(
        pipeline,
        options.group_by,
        lambda n: bool(datasets.in_memory(n)),
        infrastructure,
        resource_tags,
    )
    resolved = resolve_task_options(pipeline, options.model_dump(), project.config.tasks)
    for unit in grouping.units:
        if unit.is_group:
            group_task_options(unit.name, list(unit.nodes), resolved)
    return pipeline, grouping


def check_deployment_grouping(
    project: Project, name: str, config: DeploymentConfig, env: str | None
) -> None:
    """Refuse a deployment whose ``group_by`` makes groups that cannot run, or whose groups on
    work pools (``infrastructure:``) would pass in-memory data or name a missing pool."""
    options = {**project.config.runner, **config.runner}
    if config.infrastructure:
        options["infrastructure"] = config.infrastructure
    if options.get("group_by", "none") == "none" and not (
        project.config.infrastructure or config.infrastructure
    ):
        return
    from kedro_prefect.errors import InfrastructureError, NodeGroupingError

    try:
        _, grouping = checked_grouping(project, config.pipeline, options, config.env or env)
    except (NodeGroupingError, InfrastructureError) as exc:
        raise type(exc)(f"deployment {name!r}: {exc}") from None
    if grouping.pools:
        from kedro_prefect.deploy.deployments import check_work_pool

        for where in grouping.pools.values():
            check_work_pool(where.work_pool)


def describe_grouping(pipeline: Pipeline, grouping: Grouping, group_by: str) -> list[str]:
    """The lines ``kedro prefect check`` prints: units, their nodes, what crosses between them."""
    groups = [unit for unit in grouping.units if unit.is_group]
    singles = len(grouping.units) - len(groups)
    lines = [
        f"group_by={group_by}: {len(pipeline.nodes)} nodes run as {len(grouping.units)} task "
        f"runs ({len(groups)} groups, {singles} single nodes)"
    ]
    for unit in grouping.units:
        names = ", ".join(node.name for node in unit.nodes)
        if unit.name in grouping.pools:
            where = grouping.pools[unit.name]
            lines.append(
                f"  group {unit.name} (work pool {where.work_pool!r}, a child flow run, "
                f"{len(unit.nodes)} nodes): {names}"
            )
        elif unit.is_group:
            lines.append(f"  group {unit.name} ({unit.kind}, {len(unit.nodes)} nodes): {names}")
        else:
            lines.append(f"  node {unit.name}")
    crossings = grouping.crossings(pipeline)
    lines.append(f"Datasets passed between task runs: {sum(map(len, crossings.values()))}")
    lines.extend(
        f"  {source} -> {target}: {', '.join(names)}"
        for (source, target), names in crossings.items()
    )
    if grouping.pools:
        lines.append(
            "OK: the grouping can run (no cycle between groups, no conflicting settings, only "
            "persisted data crosses into and out of the groups on work pools)."
        )
    else:
        lines.append("OK: the grouping can run (no cycle between groups, no conflicting settings).")
    return lines
