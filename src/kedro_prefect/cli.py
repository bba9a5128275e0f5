"""``kedro prefect init|deploy|serve|list``: Kedro project commands (``kedro.project_commands``).

* ``init`` writes a commented ``conf/base/prefect.yml``.
* ``deploy`` creates or updates the deployments of ``prefect.yml`` (or one given by flags, applied
  to what the server has) on the Prefect API at ``PREFECT_API_URL``: the only command that writes.
* ``serve`` runs the project's deployments as they are on the server (those without a work pool)
  in the foreground: scheduled and triggered runs execute on this machine. Ctrl-C stops it;
  schedules stay active, runs due while it is down wait as Late until it is back.
* ``list`` shows the project's deployments on the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from kedro.framework.startup import ProjectMetadata

    from kedro_prefect.config import DeploymentConfig


@click.group(name="kedro-prefect")
def commands() -> None:
    """kedro-prefect project commands."""


@commands.group(name="prefect")
def prefect_commands() -> None:
    """Deploy, schedule and serve this project's pipelines with Prefect."""
    _quiet_upstream_deprecations()


def _quiet_upstream_deprecations() -> None:
    """Hide the one upstream warning a ``kedro prefect`` command would print before its result.

    Kedro 1.7's config loader calls OmegaConf's ``register_new_resolver``, deprecated in
    omegaconf 2.4: each project load prints the warning 3 to 5 times (~40 terminal lines). It
    says nothing a user of these commands can act on; ``kedro run`` keeps Kedro's behaviour.
    """
    import warnings

    warnings.filterwarnings(
        "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
    )


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
    from kedro_prefect.config.template import prefect_yml_template, project_facts

    package = metadata.package_name
    pipelines, parameters = project_facts(package, metadata.project_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(prefect_yml_template(package, pipelines, parameters))
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
@click.option(
    "--anchor-date",
    default=None,
    help="With --interval: the moment intervals count from (ISO 8601, e.g. 2026-01-01T00:30:00Z).",
)
@click.option("--params", default="", help="Kedro runtime parameters: key=value,key2=value2.")
@click.option("--tags", default="", help="Deployment tags: t1,t2.")
@click.option("--description", default=None, help="Deployment description (shown in the UI).")
@click.option("--version", "version", default=None, help="Deployment version label.")
@click.option("--work-pool", default=None, help="Deploy for this work pool instead of serve.")
@click.option("--work-queue", default=None, help="Work queue of the work pool.")
@click.option(
    "--job-variable",
    "job_variables",
    multiple=True,
    help="Work pool job variable key=value (value read as YAML); repeatable.",
)
@click.option(
    "--paused/--no-paused", default=None, help="Create or set the deployment paused (or not)."
)
@click.option(
    "--keep-schedule",
    is_flag=True,
    default=False,
    help="Keep the schedule each deployment has on the server (e.g. one set by flags).",
)
@click.option(
    "--on-dataset-saved",
    multiple=True,
    metavar="DATASET",
    help="Run when this dataset is saved (repeatable; <package>.<dataset> for another project).",
)
@click.pass_obj
def deploy(metadata: ProjectMetadata, env: str | None, **flags: Any) -> None:
    """Create or update deployments on the Prefect API at PREFECT_API_URL.

    With no flags, every deployment of prefect.yml; with flags, one deployment: the one on the
    server of that --name (else its prefect.yml entry) with only what the flags name changed.
    With --env, the deployments of that environment (named NAME-ENV), next to the others.
    """
    from kedro_prefect.deploy import check_api_reachable, load_project
    from kedro_prefect.deploy.apply import deploy as deploy_project

    with _clear_errors():
        check_api_reachable()
        project = load_project(Path(metadata.project_path), env)
        ctx = click.get_current_context()
        flags["params"] = _parse_params(ctx, flags["params"])
        flags["tags"] = [tag.strip() for tag in flags["tags"].split(",") if tag.strip()]
        flags["job_variables"] = _parse_job_variables(flags["job_variables"])
        flags["on_dataset_saved"] = list(flags["on_dataset_saved"])
        deploy_project(project, env, flags, click.echo)


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
    """Serve this project's deployed deployments in the foreground until Ctrl-C.

    Runs the scheduled and triggered flow runs of the deployments on the server that have no work
    pool (of this --env), exactly as deployed: serving changes nothing on the server. Deploy or
    change them with `kedro prefect deploy`: serve picks up new deployments and drops deleted
    ones while it runs. Stopping leaves the schedules active.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY

    from kedro_prefect._upstream.prefect_deploy import serve_following
    from kedro_prefect.deploy import check_api_reachable, load_project
    from kedro_prefect.deploy.deployments import env_label
    from kedro_prefect.deploy.server import describe_schedules, servable, served_deployments

    with _clear_errors():
        check_api_reachable()
        project = load_project(Path(metadata.project_path), env)
        flow_name = project.flow_name(_no_deployment())
        with get_client(sync_client=True) as client:
            served = served_deployments(client, flow_name, env, names)
    for deployment in served:
        click.echo(f"Serving '{flow_name}/{deployment.name}' ({describe_schedules(deployment)})")
    every = float(PREFECT_RUNNER_POLL_FREQUENCY.value())
    if not served:
        click.echo(
            f"No deployment of {flow_name!r} for {env_label(env)} to serve yet: serving each "
            f"one `kedro prefect deploy{f' --env {env}' if env else ''}` makes (checked every "
            f"{every:g} s)."
        )
    click.echo("Ctrl-C stops serving; the schedules stay active.")

    def current() -> list[tuple[Any, str, str]]:
        with get_client(sync_client=True) as client:
            return [(d.id, d.name, flow_name) for d in servable(client, flow_name, env, names)]

    serve_following(current, [(d.id, d.name, flow_name) for d in served], limit, every, click.echo)


@prefect_commands.command()
@_env_option
@click.option("--pipeline", "-p", default="__default__", help="Pipeline to check.")
@click.option(
    "--group-by",
    type=click.Choice(["none", "namespace", "memory"]),
    default=None,
    help="Grouping to check (default: prefect.yml runner: group_by, else none).",
)
@click.pass_obj
def check(metadata: ProjectMetadata, env: str | None, pipeline: str, group_by: str | None) -> None:
    """Check how a run groups the pipeline's nodes into task runs (group_by, infrastructure:).

    Prints the groups (and the work pool of each group in prefect.yml's infrastructure:), their
    nodes and the datasets passed between task runs; a grouping that cannot run (a cycle between
    groups, mixed Dask resources, in-memory data crossing into or out of a group on a work pool)
    fails with one line naming them.
    """
    from kedro_prefect.deploy import load_project
    from kedro_prefect.deploy.check import checked_grouping, describe_grouping

    with _clear_errors():
        project = load_project(Path(metadata.project_path), env)
        options = dict(project.config.runner)
        if group_by is not None:
            options["group_by"] = group_by
        group_by = options.setdefault("group_by", "none")
        checked, grouping = checked_grouping(project, pipeline, options, env)
    for line in describe_grouping(checked, grouping, group_by):
        click.echo(line)


@prefect_commands.command(name="list")
@click.option("--env", "-e", default=None, help="Only the deployments of this Kedro environment.")
@click.pass_obj
def list_deployments(metadata: ProjectMetadata, env: str | None) -> None:
    """This project's deployments on the Prefect server: schedule, who runs them, runs."""
    from rich.console import Console
    from rich.table import Table

    from kedro_prefect.deploy import check_api_reachable, load_project
    from kedro_prefect.deploy.apply import list_rows

    with _clear_errors():
        check_api_reachable()
        project = load_project(Path(metadata.project_path), env)
        rows = list_rows(project, env if env else ...)
    if not rows:
        click.echo(
            "No deployments of this project on the server: `kedro prefect deploy` makes them."
        )
        return
    table = Table(box=None, pad_edge=False)
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    Console(width=max(160, Console().width)).print(table)


def _no_deployment() -> DeploymentConfig:
    from kedro_prefect.config import DeploymentConfig

    return DeploymentConfig()


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


def _parse_job_variables(values: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    parsed: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"expected key=value, got {value!r}", param_hint="--job-variable"
            )
        parsed[key.strip()] = yaml.safe_load(text) if text else ""
    return parsed


# --- the lingering ephemeral API (kedro prefect api status|stop) ------------------------------


@prefect_commands.group(name="api")
def api_commands() -> None:
    """The ephemeral Prefect API that lingers between runs (KEDRO_PREFECT_API_IDLE_SECONDS)."""


@api_commands.command(name="status")
def api_status() -> None:
    """Show the lingering ephemeral API of this PREFECT_HOME: URL, PID, idle time."""
    from kedro_prefect.local_api import server_status

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
        if status["hibernating"]:
            use = f"hibernating (wakes on its next use); {use}"
    click.echo(f"Ephemeral Prefect API for PREFECT_HOME={home}")
    click.echo(f"  URL:     {status['url']}")
    click.echo(f"  PID:     {status['pid']}")
    click.echo(f"  Prefect: {status['prefect_version']}")
    click.echo(f"  State:   {use}; idle time {status['idle_seconds']:.0f} s")
    if status["services"] is not None:
        click.echo(f"  Services: {', '.join(status['services']) or 'none'}")


@api_commands.command(name="stop")
def api_stop() -> None:
    """Stop the lingering ephemeral API of this PREFECT_HOME (the next run starts one)."""
    from kedro_prefect.local_api import stop_server

    home = _prefect_home()
    info = stop_server(home)
    if info is None:
        click.echo(f"No ephemeral Prefect API is running for PREFECT_HOME={home}.")
    else:
        click.echo(f"Stopped the ephemeral Prefect API at {info.url} (PID {info.pid}).")


def _prefect_home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home)
