"""What a user configures: runner options, ``prefect.yml`` (``runner:``, ``tasks:``,
``deployments:``), all validated by pydantic models before anything runs.

* :mod:`.options`: :class:`RunnerOptions`, the options of ``PrefectRunner``;
* :mod:`.tasks`: the ``tasks:`` section (per-node retries, timeouts, tags, concurrency limits);
* :mod:`.deployments`: the ``deployments:`` section (schedules and deployment settings);
* :mod:`.project`: ``conf/<env>/prefect.yml`` as a whole, read through Kedro's config loader;
* :mod:`.locate`: the file and line of a key of ``prefect.yml``, for one-line errors;
* :mod:`.template`: the commented ``prefect.yml`` that ``kedro prefect init`` writes.
"""

from kedro_prefect.config.deployments import DeploymentConfig, ScheduleConfig, check_deployment_name
from kedro_prefect.config.options import RunnerOptions, parse_runner_options
from kedro_prefect.config.project import (
    ProjectConfig,
    load_project_config,
    validate_project_config,
)
from kedro_prefect.config.tasks import TaskRule, TasksConfig
from kedro_prefect.errors import PrefectRunnerConfigError, ProjectConfigError

__all__ = [
    "DeploymentConfig",
    "PrefectRunnerConfigError",
    "ProjectConfig",
    "ProjectConfigError",
    "RunnerOptions",
    "ScheduleConfig",
    "TaskRule",
    "TasksConfig",
    "check_deployment_name",
    "load_project_config",
    "parse_runner_options",
    "validate_project_config",
]
