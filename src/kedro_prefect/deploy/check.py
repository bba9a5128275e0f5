"""``kedro prefect check`` and the grouping check of ``kedro prefect deploy``.

Both build the units a run would submit (``group_by``, :mod:`kedro_prefect.execution.grouping`)
from the project's registered pipeline and its catalog configuration, and refuse a grouping
that cannot run with the line a run would raise, before anything is deployed or run.
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
    """The units of ``pipeline_name`` under ``runner_options['group_by']``, checked.

    Raises:
        NodeGroupingError: The grouping cannot run (a cycle between groups, mixed Dask
            resources, conflicting task options in a group).
    """
    from kedro.framework.project import pipelines

    from kedro_prefect.config import parse_runner_options
    from kedro_prefect.dask.resources import resource_tags
    from kedro_prefect.deploy.triggers import project_datasets
    from kedro_prefect.execution.grouping import check_units, group_nodes
    from kedro_prefect.execution.task_options import group_task_options, resolve_task_options

    options = parse_runner_options(runner_options)
    if pipeline_name not in pipelines:
        from kedro_prefect.errors import ProjectConfigError

        allowed = ", ".join(sorted(pipelines)) or "(none registered)"
        raise ProjectConfigError(
            f"unknown pipeline {pipeline_name!r}; the project's pipelines are: {allowed}"
        )
    pipeline = pipelines[pipeline_name]
    datasets = project_datasets(project.path, project.package_name, env)
    grouping = group_nodes(pipeline, options.group_by, lambda n: bool(datasets.in_memory(n)))
    check_units(pipeline, grouping, resource_tags)
    resolved = resolve_task_options(pipeline, options.model_dump(), project.config.tasks)
    for unit in grouping.units:
        if unit.is_group:
            group_task_options(unit.name, list(unit.nodes), resolved)
    return pipeline, grouping


def check_deployment_grouping(
    project: Project, name: str, config: DeploymentConfig, env: str | None
) -> None:
    """Refuse a deployment whose ``group_by`` makes groups that cannot run."""
    options = {**project.config.runner, **config.runner}
    if options.get("group_by", "none") == "none":
        return
    from kedro_prefect.errors import NodeGroupingError

    try:
        checked_grouping(project, config.pipeline, options, config.env or env)
    except NodeGroupingError as exc:
        raise NodeGroupingError(f"deployment {name!r}: {exc}") from None


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
        if unit.is_group:
            lines.append(f"  group {unit.name} ({unit.kind}, {len(unit.nodes)} nodes): {names}")
        else:
            lines.append(f"  node {unit.name}")
    crossings = grouping.crossings(pipeline)
    lines.append(f"Datasets passed between task runs: {sum(map(len, crossings.values()))}")
    lines.extend(
        f"  {source} -> {target}: {', '.join(names)}"
        for (source, target), names in crossings.items()
    )
    lines.append("OK: the grouping can run (no cycle between groups, no conflicting settings).")
    return lines
