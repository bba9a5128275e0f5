"""The ``deployments:`` section of prefect.yml: what is accepted, and the errors for the rest."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

from kedro_prefect.cli import commands
from kedro_prefect.config import ProjectConfigError, validate_project_config
from kedro_prefect.config.template import prefect_yml_template
from kedro_prefect.deploy import DeployError, check_api_reachable


def _deployment(raw: dict):
    return validate_project_config({"deployments": {"nightly": raw}}).deployments["nightly"]


def _error(raw: dict) -> str:
    with pytest.raises(ProjectConfigError) as info:
        validate_project_config({"deployments": {"nightly": raw}})
    return str(info.value)


def test_a_full_deployment_is_accepted_with_its_values():
    deployment = _deployment(
        {
            "pipeline": "reporting",
            "env": "prod",
            "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Amsterdam", "day_or": False},
            "parameters": {"top_n": 5},
            "runner": {"max_workers": 2},
            "tags": ["nightly"],
            "description": "Nightly",
            "version": "3",
            "work_pool": "pool",
            "work_queue": "default",
            "job_variables": {"env": {"A": "1"}},
            "paused": False,
            "concurrency_limit": 1,
        }
    )
    assert deployment.pipeline == "reporting"
    schedule = deployment.schedule.to_prefect()
    assert isinstance(schedule, CronSchedule)
    assert (schedule.cron, schedule.timezone, schedule.day_or) == (
        "0 2 * * *",
        "Europe/Amsterdam",
        False,
    )


def test_defaults_run_the_default_pipeline_on_demand():
    deployment = _deployment({})
    assert deployment.pipeline == "__default__"
    assert deployment.schedule is None
    assert deployment.parameters == {}


@pytest.mark.parametrize(
    ("interval", "expected"),
    [(3600, timedelta(hours=1)), ("PT90M", timedelta(minutes=90)), (0.5, timedelta(seconds=0.5))],
)
def test_interval_takes_seconds_or_iso_8601(interval, expected):
    schedule = _deployment({"schedule": {"interval": interval}}).schedule.to_prefect()
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.interval == expected


def test_rrule_keeps_its_rule_and_time_zone():
    rule = "FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=6;BYMINUTE=0"
    schedule = _deployment(
        {"schedule": {"rrule": rule, "timezone": "America/New_York"}}
    ).schedule.to_prefect()
    assert isinstance(schedule, RRuleSchedule)
    assert (schedule.rrule, schedule.timezone) == (rule, "America/New_York")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"shedule": {"cron": "0 2 * * *"}},
            "deployments.nightly: unknown deployment key 'shedule' (value {'cron': '0 2 * * *'});"
            " did you mean 'schedule'? allowed keys: pipeline, env, schedule,",
        ),
        (
            {"schedule": {"cron": "0 2 * * *", "tz": "UTC"}},
            "deployments.nightly.schedule: unknown schedule key 'tz' (value 'UTC'); "
            "allowed keys: cron, interval, rrule, timezone,",
        ),
        (
            {"schedule": {"cron": "0 25 * * *"}},
            "deployments.nightly.schedule: bad cron '0 25 * * *': Invalid cron string",
        ),
        (
            {"schedule": {"rrule": "FREQ=SOMETIMES"}},
            "deployments.nightly.schedule: bad rrule 'FREQ=SOMETIMES': Invalid RRule string",
        ),
        (
            {"schedule": {"cron": "0 2 * * *", "timezone": "Europe/Amsterdm"}},
            "deployments.nightly.schedule.timezone: unknown time zone 'Europe/Amsterdm'; use an "
            "IANA name such as UTC",
        ),
        (
            {"schedule": {"interval": 0}},
            "deployments.nightly.schedule: bad interval 0 seconds: Input should be greater than 0",
        ),
        (
            {"schedule": {"cron": "0 2 * * *", "interval": 60}},
            "deployments.nightly.schedule: give exactly one of cron, interval or rrule "
            "(got cron, interval)",
        ),
        (
            {"schedule": {"timezone": "UTC"}},
            "give exactly one of cron, interval or rrule (got none)",
        ),
        (
            {"schedule": {"cron": "0 2 * * *", "anchor_date": "2026-01-01T00:00:00"}},
            "anchor_date is only allowed with interval",
        ),
        (
            {"runner": {"task_runner": "threads"}},
            "deployments.nightly.runner: Invalid PrefectRunner options: PrefectRunner option "
            "task_runner='threads': unknown task runner 'threads'",
        ),
        ({"work_queue": "q"}, "work_queue needs work_pool (got 'q')"),
        ({"tags": ["ok", " "]}, "tags must not be empty strings, got ['ok', ' ']"),
        ({"concurrency_limit": 0}, "deployments.nightly.concurrency_limit: Input should be"),
    ],
)
def test_bad_deployment_config_names_key_value_and_what_is_allowed(raw, expected):
    message = _error(raw)
    assert message.startswith("Invalid prefect.yml:")
    assert expected in message


def test_bad_deployment_name_is_refused():
    with pytest.raises(ProjectConfigError, match="bad deployment name 'nightly/eu'"):
        validate_project_config({"deployments": {"nightly/eu": {}}})


def test_the_init_template_is_valid_and_schedules_a_nightly_run():
    config = validate_project_config(yaml.safe_load(prefect_yml_template("demo")))
    assert config.runner == {"task_runner": "thread"}
    (name,) = config.deployments
    assert name == "nightly"
    assert config.deployments[name].schedule.cron == "0 2 * * *"


def test_init_writes_prefect_yml_once(tmp_path: Path):
    from kedro.framework.startup import ProjectMetadata

    metadata = ProjectMetadata(
        config_file=tmp_path / "pyproject.toml",
        package_name="demo",
        project_name="demo",
        project_path=tmp_path,
        source_dir=tmp_path / "src",
        kedro_init_version="1.0.0",
        tools=[],
        example_pipeline="False",
    )
    runner = CliRunner()
    first = runner.invoke(commands, ["prefect", "init"], obj=metadata)
    assert first.exit_code == 0, first.output
    written = tmp_path / "conf" / "base" / "prefect.yml"
    assert "Nightly run of the demo pipelines" in written.read_text()
    written.write_text("runner: {}\n")
    again = runner.invoke(commands, ["prefect", "init"], obj=metadata)
    assert again.exit_code == 1
    assert "exists already; use --force" in again.output
    assert written.read_text() == "runner: {}\n"
    forced = runner.invoke(commands, ["prefect", "init", "--force"], obj=metadata)
    assert forced.exit_code == 0
    assert "deployments:" in written.read_text()


def test_deploying_without_prefect_api_url_says_how_to_set_it():
    with pytest.raises(DeployError, match="PREFECT_API_URL is not set"):
        check_api_reachable()


def test_an_environment_merges_with_base_per_deployment(tmp_path: Path):
    """conf/prod/prefect.yml changes, adds and removes deployments; base's others stay."""
    from kedro.config import OmegaConfigLoader

    from kedro_prefect.config import load_project_config

    for env, content in {
        "base": {
            "runner": {"max_workers": 2},
            "deployments": {
                "nightly": {"schedule": {"cron": "0 2 * * *"}, "tags": ["kedro"]},
                "weekly": {"pipeline": "ingest"},
                "experiments": {"pipeline": "reporting"},
            },
        },
        "prod": {
            "deployments": {
                "nightly": {"schedule": {"interval": 3600}},
                "experiments": None,
                "backfill": {"paused": True},
            }
        },
    }.items():
        (tmp_path / env).mkdir()
        (tmp_path / env / "prefect.yml").write_text(yaml.safe_dump(content))

    def loader(env):
        return OmegaConfigLoader(str(tmp_path), env=env, base_env="base", default_run_env="local")

    prod = load_project_config(loader("prod"))
    assert set(prod.deployments) == {"nightly", "weekly", "backfill"}
    assert prod.deployments["nightly"].schedule.interval == timedelta(hours=1)
    assert prod.deployments["nightly"].schedule.cron is None  # schedule: replaced, not mixed
    assert prod.deployments["nightly"].tags == ["kedro"]  # from base
    assert prod.deployments["weekly"].pipeline == "ingest"
    assert prod.deployments["backfill"].paused is True
    assert prod.runner == {"max_workers": 2}

    base = load_project_config(loader("base"))
    assert set(base.deployments) == {"nightly", "weekly", "experiments"}


def test_the_init_template_is_the_projects_own_with_its_comments_in_one_column():
    text = prefect_yml_template(
        "spaceflights_pandas",
        ["__default__", "data_processing", "data_science"],
        {"model_options": {"test_size": 0.2, "features": ["engines"]}},
    )
    assert "min_quantity" not in text  # the bundled example's parameter
    assert "# the project's pipelines: __default__, data_processing, data_science" in text
    settings = [line for line in text.splitlines() if " # " in line and line.strip()[0] != "#"]
    settings += [
        line for line in text.splitlines() if line.startswith("  # ") and " # " in line[4:]
    ]
    assert len({line.index(" # ", 3) for line in settings}) == 1, "comments not aligned"
    # uncommenting the parameters example gives the project's parameter as a runtime parameter
    uncommented = text.replace("    # parameters:", "    parameters:")
    uncommented = uncommented.replace("    #   model_options:", "      model_options:")
    uncommented = uncommented.replace("    #     test_size: 0.2", "        test_size: 0.2")
    config = validate_project_config(yaml.safe_load(uncommented))
    assert config.deployments["nightly"].parameters == {"model_options": {"test_size": 0.2}}
