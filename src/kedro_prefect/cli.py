"""``kedro prefect init|deploy|serve``: Kedro project commands (``kedro.project_commands``).

* ``init`` writes a commented ``conf/base/prefect.yml``.
* ``deploy`` creates or updates the deployments of ``prefect.yml`` (or one given by flags) on the
  Prefect API at ``PREFECT_API_URL``.
* ``serve`` runs the project's deployments in the foreground (Prefect's ``serve``): scheduled and
  triggered runs execute on this machine, no work pool needed. Ctrl-C stops it; schedules stay
  active (``pause_on_shutdown=False``), runs due while it is down wait as Late until it is back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from kedro.framework.startup import ProjectMetadata
    from prefect.deployments.runner import RunnerDeployment

    from kedro_prefect.config import DeploymentConfig, ProjectConfig

PREFECT_YML_TEMPLATE = """\
# kedro-prefect settings for this project, read per Kedro environment (conf/base, conf/local,
# conf/<env>) through the project's config loader: ${{...}} resolvers and environment overrides
# work as in catalog.yml. Full reference: docs/prefect-yml.md in kedro-prefect.

# Defaults for PrefectRunner options, for `kedro run --runner=kedro_prefect.PrefectRunner` and
# for deployments; --runner-params override them.
runner:
  task_runner: thread          # thread | dask | import path of a Prefect TaskRunner class
  # max_workers: 4             # most nodes running at once
  # flow_name: {package}       # Prefect flow name (default: the package name)

# Deployments: `kedro prefect deploy` creates or updates them on the Prefect API at
# PREFECT_API_URL; `kedro prefect serve` runs them on this machine.
deployments:
  nightly:
    pipeline: __default__      # a pipeline of pipeline_registry.py
    # env: prod                # Kedro environment of the runs (default: the one deployed with)
    schedule:                  # leave out to run only on demand (`prefect deployment run`)
      cron: "0 2 * * *"        # every day at 02:00...
      timezone: UTC            # ...in this IANA time zone, e.g. Europe/Amsterdam
      # interval: 3600         # or: every hour (seconds, or an ISO 8601 duration "PT1H")
      # rrule: "FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=6;BYMINUTE=0"   # or: an iCalendar rule
    # parameters:              # Kedro runtime parameters, like `kedro run --params`
    #   min_quantity: 2
    # runner:                  # PrefectRunner options of this deployment only
    #   max_workers: 2
    tags: [kedro]
    description: Nightly run of the {package} pipelines
    # work_pool: my-pool       # deploy for a Prefect worker instead of `kedro prefect serve`

# Prefect task options per node (retries, timeouts...): see docs/reliability.md.
"""

_SCHEDULE_FLAGS = ("cron", "interval", "rrule")


@click.group(name="kedro-prefect")
def commands() -> None:
    """kedro-prefect project commands."""


@commands.group(name="prefect")
def prefect_commands() -> None:
    """Deploy, schedule and serve this project's pipelines with Prefect."""


def _env_option(func: Any) -> Any:
    return click.option(
        "--env",
        "-e",
        envvar="KEDRO_ENV",
        default=None,
        help="Kedro environment whose prefect.yml is read (and that the runs use).",
    )(func)


@prefect_commands.command()
@click.option("--force", is_flag=True, help="Overwrite an existing conf/base/prefect.yml.")
@click.pass_obj
def init(metadata: ProjectMetadata, force: bool) -> None:
    """Write a commented conf/base/prefect.yml (runner defaults and a nightly deployment)."""
    target = Path(metadata.project_path) / "conf" / "base" / "prefect.yml"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists already; use --force to overwrite it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(PREFECT_YML_TEMPLATE.format(package=metadata.package_name))
    click.echo(f"Wrote {target}")
    click.echo("Next: set PREFECT_API_URL, then `kedro prefect deploy` and `kedro prefect serve`.")


@prefect_commands.command()
@_env_option
@click.option("--pipeline", "-p", default=None, help="Pipeline to deploy (default __default__).")
@click.option("--name", "-n", default=None, help="Deployment name (default: from the pipeline).")
@click.option("--cron", default=None, help='Cron schedule, e.g. "0 2 * * *".')
@click.option("--interval", default=None, type=float, help="Seconds between runs.")
@click.option("--rrule", default=None, help='iCalendar RRULE, e.g. "FREQ=DAILY;BYHOUR=2".')
@click.option("--timezone", default=None, help="IANA time zone of the schedule (default UTC).")
@click.option("--params", default="", help="Kedro runtime parameters: key=value,key2=value2.")
@click.option("--tags", default="", help="Deployment tags: t1,t2.")
@click.option("--work-pool", default=None, help="Deploy for this work pool instead of serve.")
@click.pass_obj
def deploy(metadata: ProjectMetadata, env: str | None, **flags: Any) -> None:
    """Create or update deployments on the Prefect API at PREFECT_API_URL.

    With no flags, every deployment of prefect.yml; with flags, one deployment (the prefect.yml
    entry of that --name, if any, with the flags applied). Re-running updates in place.
    """
    from kedro_prefect.deploy import check_api_reachable, check_work_pool, load_project

    with _clear_errors():
        check_api_reachable()
        project = load_project(Path(metadata.project_path), env)
        config = project.config
        ctx = click.get_current_context()
        flags["params"] = _parse_params(ctx, flags["params"])
        flags["tags"] = [tag.strip() for tag in flags["tags"].split(",") if tag.strip()]
        selected = _select_deployments(config, flags, metadata)
        for name, deployment in selected.items():
            project.check_pipeline(name, deployment.pipeline)
        deployments = {
            name: project.deployment(name, deployment, default_env=env)
            for name, deployment in selected.items()
        }
        for pool in {d.work_pool for d in selected.values() if d.work_pool}:
            check_work_pool(pool)
        for name, runner_deployment in deployments.items():
            pool = selected[name].work_pool
            runner_deployment.apply(work_pool_name=pool)
            where = f"work pool {pool!r}" if pool else "`kedro prefect serve`"
            click.echo(
                f"Deployed {runner_deployment.full_name!r} "
                f"({_describe_schedule(selected[name])}), run by {where}"
            )


@prefect_commands.command()
@_env_option
@click.option(
    "--name", "-n", "names", multiple=True, help="Serve only this deployment (repeatable)."
)
@click.option("--limit", default=None, type=int, help="Most flow runs at once.")
@click.pass_obj
def serve(
    metadata: ProjectMetadata, env: str | None, names: tuple[str, ...], limit: int | None
) -> None:
    """Serve this project's deployments in the foreground until Ctrl-C.

    Creates or updates the deployments of prefect.yml that have no work_pool, then runs their
    scheduled and triggered flow runs on this machine. Stopping leaves the schedules active.
    """
    from prefect import serve as prefect_serve

    from kedro_prefect.deploy import check_api_reachable, load_project

    with _clear_errors():
        check_api_reachable()
        project = load_project(Path(metadata.project_path), env)
        config = project.config
        served = {n: d for n, d in config.deployments.items() if not d.work_pool}
        unknown = [n for n in names if n not in served]
        if unknown:
            raise click.ClickException(
                f"no deployment {unknown[0]!r} to serve in prefect.yml (deployments without "
                f"work_pool: {', '.join(served) or 'none'})"
            )
        if names:
            served = {n: served[n] for n in names}
        if not served:
            raise click.ClickException(
                "prefect.yml has no deployments to serve (without work_pool); "
                "run `kedro prefect init` and edit conf/base/prefect.yml"
            )
        for name, deployment in served.items():
            project.check_pipeline(name, deployment.pipeline)
        deployments: list[RunnerDeployment] = [
            project.deployment(name, deployment, default_env=env)
            for name, deployment in served.items()
        ]
    prefect_serve(*deployments, pause_on_shutdown=False, limit=limit)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Turn configuration and API errors into one ``Error: ...`` line, no traceback."""
    from prefect.deployments.runner import DeploymentApplyError

    from kedro_prefect.errors import KedroPrefectError

    try:
        yield
    except KedroPrefectError:
        raise  # a click.ClickException already: one "Error: ..." line
    except DeploymentApplyError as exc:
        raise click.ClickException(str(exc)) from None


def _parse_params(ctx: click.Context, value: str) -> dict[str, Any]:
    from kedro_prefect._upstream.kedro import split_params

    param = next(p for p in ctx.command.params if p.name == "params")
    return split_params(ctx, param, value) if value else {}


def _select_deployments(
    config: ProjectConfig, flags: dict[str, Any], metadata: ProjectMetadata
) -> dict[str, DeploymentConfig]:
    """All deployments of prefect.yml, or the one the flags describe."""
    from kedro_prefect.deploy import validate_deployment
    from kedro_prefect.errors import ProjectConfigError

    given = {key: value for key, value in flags.items() if value not in (None, "", [], {})}
    if not given:
        if not config.deployments:
            raise ProjectConfigError(
                "prefect.yml lists no deployments: add some under `deployments:` "
                "(`kedro prefect init` writes an example) or describe one with flags, "
                'e.g. `kedro prefect deploy --name nightly --cron "0 2 * * *"`'
            )
        return dict(config.deployments)

    pipeline = flags["pipeline"]
    name = flags["name"] or (pipeline if pipeline and pipeline != "__default__" else "default")
    base = config.deployments.get(name)
    raw: dict[str, Any] = base.model_dump(exclude_unset=True, mode="json") if base else {}
    if pipeline:
        raw["pipeline"] = pipeline
    kinds = {kind: flags[kind] for kind in _SCHEDULE_FLAGS if flags[kind] is not None}
    if kinds:
        raw["schedule"] = dict(kinds)
        if flags["timezone"]:
            raw["schedule"]["timezone"] = flags["timezone"]
    elif flags["timezone"]:
        if not raw.get("schedule"):
            raise ProjectConfigError("--timezone needs --cron, --interval or --rrule")
        raw["schedule"]["timezone"] = flags["timezone"]
    if flags["params"]:
        raw["parameters"] = {**raw.get("parameters", {}), **flags["params"]}
    if flags["tags"]:
        raw["tags"] = flags["tags"]
    if flags["work_pool"]:
        raw["work_pool"] = flags["work_pool"]
    return {name: validate_deployment(name, raw)}


def _describe_schedule(deployment: DeploymentConfig) -> str:
    schedule = deployment.schedule
    if schedule is None:
        return "no schedule, runs on demand"
    if schedule.cron is not None:
        text = f"cron {schedule.cron!r}"
    elif schedule.interval is not None:
        text = f"every {schedule.interval.total_seconds():g} s"
    else:
        text = f"rrule {schedule.rrule!r}"
    return f"{text} {schedule.timezone or 'UTC'}"


# --- the lingering ephemeral API (kedro prefect api status|stop) ------------------------------


@prefect_commands.group(name="api")
def api_commands() -> None:
    """The ephemeral Prefect API that lingers between runs (KEDRO_PREFECT_API_IDLE_SECONDS)."""


@api_commands.command(name="status")
def api_status() -> None:
    """Show the lingering ephemeral API of this PREFECT_HOME: URL, PID, idle time."""
    from kedro_prefect.api.lingering import server_status

    home = _prefect_home()
    status = server_status(home)
    if status is None:
        click.echo(f"No ephemeral Prefect API is running for PREFECT_HOME={home}.")
        return
    if status["clients"]:
        pids = ", ".join(map(str, status["clients"]))
        use = f"in use by {len(status['clients'])} run(s) (PID {pids})"
    elif status["idle_for"] is None:
        use = "in use (its launching run, or recording a run's task run states)"
    else:
        left = max(0.0, status["idle_seconds"] - status["idle_for"])
        use = f"idle for {status['idle_for']:.0f} s (stops in {left:.0f} s)"
    click.echo(f"Ephemeral Prefect API for PREFECT_HOME={home}")
    click.echo(f"  URL:     {status['url']}")
    click.echo(f"  PID:     {status['pid']}")
    click.echo(f"  Prefect: {status['prefect_version']}")
    click.echo(f"  State:   {use}; idle time {status['idle_seconds']:.0f} s")


@api_commands.command(name="stop")
def api_stop() -> None:
    """Stop the lingering ephemeral API of this PREFECT_HOME (the next run starts one)."""
    from kedro_prefect.api.lingering import stop_server

    home = _prefect_home()
    info = stop_server(home)
    if info is None:
        click.echo(f"No ephemeral Prefect API is running for PREFECT_HOME={home}.")
    else:
        click.echo(f"Stopped the ephemeral Prefect API at {info.url} (PID {info.pid}).")


def _prefect_home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home)
