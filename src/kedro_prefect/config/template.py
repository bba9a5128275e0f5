"""The commented ``conf/base/prefect.yml`` that ``kedro prefect init`` writes, for one project.

The examples are the project's own: its package name, its registered pipelines and one of its
parameters (where they can be read), so that uncommenting a line gives a working setting.
Comments start in one column whatever the names' lengths.
"""

from __future__ import annotations

from typing import Any

#: The column comments start at (after the setting, padded).
COMMENT_COLUMN = 31

_HEADER = """\
# kedro-prefect settings for this project, read per Kedro environment (conf/base, conf/local,
# conf/<env>) through the project's config loader: ${...} resolvers and environment overrides
# work as in catalog.yml. Full reference: docs/prefect-yml.md in kedro-prefect.
"""


def _line(setting: str, comment: str = "") -> tuple[str, str]:
    return setting, comment


def _aligned(lines: list[str | tuple[str, str]]) -> list[str]:
    """The lines, each ``(setting, comment)`` with its comment in one column for all."""
    settings = [line[0] for line in lines if isinstance(line, tuple) and line[1]]
    column = max(COMMENT_COLUMN, *(len(setting) + 2 for setting in settings))
    out = []
    for line in lines:
        if isinstance(line, tuple):
            setting, comment = line
            line = f"{setting.ljust(column - 1)} # {comment}" if comment else setting
        out.append(line)
    return out


def _scalar(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


def example_parameter(parameters: dict[str, Any]) -> list[tuple[str, Any]] | None:
    """The key path and value of the project's first scalar parameter, or None."""

    def walk(mapping: dict[str, Any], path: list[str]) -> list[tuple[str, Any]] | None:
        for key, value in mapping.items():
            if isinstance(value, dict):
                found = walk(value, [*path, str(key)])
                if found:
                    return found
            elif isinstance(value, str | int | float | bool):
                return [*((p, None) for p in path), (str(key), value)]
        return None

    return walk(parameters or {}, [])


def prefect_yml_template(
    package: str, pipelines: list[str] | None = None, parameters: dict[str, Any] | None = None
) -> str:
    """The text of ``conf/base/prefect.yml`` for ``package`` (its pipelines and parameters)."""
    names = [p for p in (pipelines or []) if p != "__default__"]
    lines: list[str | tuple[str, str]] = [
        _HEADER,
        "# Defaults for PrefectRunner options, for `kedro run --runner=kedro_prefect.PrefectRunner`"
        " and",
        "# for deployments; --runner-params override them.",
        "runner:",
        _line("  task_runner: thread", "thread | dask | import path of a Prefect TaskRunner class"),
        _line("  # max_workers: 4", "most nodes running at once"),
        _line(f"  # flow_name: {package}", "Prefect flow name (default: the package name)"),
        "",
        "# Deployments: `kedro prefect deploy` creates or updates them on the Prefect API at",
        "# PREFECT_API_URL; `kedro prefect serve` runs them on this machine.",
        "deployments:",
        "  nightly:",
        *([f"    # the project's pipelines: __default__, {', '.join(names)}"] if names else []),
        _line("    pipeline: __default__", "a pipeline of pipeline_registry.py"),
        _line("    # env: prod", "Kedro environment of the runs (default: the one deployed with)"),
        _line("    schedule:", "leave out to run only on demand (`prefect deployment run`)"),
        _line('      cron: "0 2 * * *"', "every day at 02:00..."),
        _line("      timezone: UTC", "...in this IANA time zone, e.g. Europe/Amsterdam"),
        _line("      # interval: 3600", 'or: every hour (seconds, or an ISO 8601 duration "PT1H")'),
        _line('      # rrule: "FREQ=WEEKLY;BYDAY=MO"', "or: an iCalendar rule"),
        _line("    # parameters:", "Kedro runtime parameters, like `kedro run --params`"),
    ]
    example = example_parameter(parameters or {})
    if example:
        for depth, (key, value) in enumerate(example, start=1):
            text = f"{key}:" if value is None else f"{key}: {_scalar(value)}"
            lines.append("    #" + " " * (1 + 2 * depth) + text)
    else:
        lines.append("    #   <parameter>: <value>")
    lines += [
        _line("    # runner:", "PrefectRunner options of this deployment only"),
        "    #   max_workers: 2",
        "    tags: [kedro]",
        f"    description: Nightly run of the {package} pipelines",
        _line(
            "    # work_pool: my-pool",
            "deploy for a Prefect worker instead of `kedro prefect serve`",
        ),
        "",
        "# Prefect task options per node (retries, timeouts...): see docs/reliability.md.",
        "",
        "# Groups of nodes (a namespace, a tag or a pipeline) run on their own Prefect work",
        "# pool, as child flow runs: see docs/beyond-one-machine.md in kedro-prefect.",
        "# infrastructure:",
        _line("#   training:", "the nodes of namespace, tag or pipeline `training`"),
        _line("#     work_pool: gpu-pool", "a work pool on the Prefect server"),
        _line("#     job_variables: {image: my-image:1.0}", "overrides of its job template"),
        "",
    ]
    return "\n".join(_aligned(lines))


def project_facts(package: str, project_path: Any) -> tuple[list[str], dict[str, Any]]:
    """The registered pipelines and the parameters of the project ``kedro`` bootstrapped, or
    empty ones where they cannot be read (the template then shows placeholders)."""
    import kedro.framework.project as project

    if getattr(project, "PACKAGE_NAME", None) != package:
        return [], {}
    try:
        pipelines = sorted(project.pipelines)
    except Exception:  # a registry that fails to import: init still writes the file
        pipelines = []
    try:
        from kedro.framework.session import KedroSession

        from kedro_prefect.config.project import read_config

        session = KedroSession.create(project_path=project_path, save_on_close=False)
        with session:
            parameters = dict(read_config(session.load_context().config_loader, "parameters"))
    except Exception:
        parameters = {}
    return pipelines, parameters
