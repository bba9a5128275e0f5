"""kedro-prefect: run Kedro pipelines as Prefect flows.

``kedro run --runner=kedro_prefect.PrefectRunner`` runs the pipeline as one Prefect flow run with
one task run per node, each node starting as soon as the nodes producing its inputs are done.
``kedro_deployment(...)`` wraps the same runner in a Prefect deployment.
"""

from typing import Any

from kedro_prefect.config import PrefectRunnerConfigError, ProjectConfigError, RunnerOptions
from kedro_prefect.runner import PrefectRunner

__version__ = "0.1.0"

__all__ = [
    "PrefectRunner",
    "PrefectRunnerConfigError",
    "ProjectConfigError",
    "RunnerOptions",
    "__version__",
    "kedro_deployment",
]


def __getattr__(name: str) -> Any:
    # The deploy module imports prefect at import time; `kedro run` should not pay for it.
    if name == "kedro_deployment":
        from kedro_prefect.deploy import kedro_deployment

        return kedro_deployment
    raise AttributeError(f"module 'kedro_prefect' has no attribute {name!r}")
