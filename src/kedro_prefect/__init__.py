"""kedro-prefect: run Kedro pipelines as Prefect flows.

``kedro run --runner=kedro_prefect.PrefectRunner`` runs the pipeline as one Prefect flow run with
one task run per node, each node starting as soon as the nodes producing its inputs are done.
``kedro_deployment(...)`` wraps the same runner in a Prefect deployment.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kedro_prefect.config import RunnerOptions
    from kedro_prefect.deploy import kedro_deployment
    from kedro_prefect.errors import KedroPrefectError, PrefectRunnerConfigError, ProjectConfigError
    from kedro_prefect.runner import PrefectRunner

__version__ = "0.1.0"

#: Public name -> module defining it. Imported on first use: the ephemeral API server process
#: imports ``kedro_prefect.local_api.server_app`` and must not pay for Kedro (and ``kedro run`` must
#: not pay for the deploy module, which imports Prefect).
_EXPORTS = {
    "PrefectRunner": "kedro_prefect.runner",
    "KedroPrefectError": "kedro_prefect.errors",
    "PrefectRunnerConfigError": "kedro_prefect.errors",
    "ProjectConfigError": "kedro_prefect.errors",
    "RunnerOptions": "kedro_prefect.config.options",
    "kedro_deployment": "kedro_prefect.deploy",
}

__all__ = [
    "KedroPrefectError",
    "PrefectRunner",
    "PrefectRunnerConfigError",
    "ProjectConfigError",
    "RunnerOptions",
    "__version__",
    "kedro_deployment",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        import difflib

        close = difflib.get_close_matches(name, _EXPORTS, n=1, cutoff=0.85)
        if close:  # a misspelt public name (`--runner=kedro_prefect.PrefectRuner`)
            from kedro_prefect.errors import UnknownNameError

            raise UnknownNameError(
                f"kedro_prefect has no {name!r}; did you mean kedro_prefect.{close[0]}?"
            )
        raise AttributeError(f"module 'kedro_prefect' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
