"""Prefect deployments of Kedro pipelines.

* :mod:`.flow`: :func:`~.flow.kedro_pipeline`, the flow every deployment runs (entrypoint
  ``kedro_prefect.deploy.kedro_pipeline``: existing deployments keep that path);
* :mod:`.deployments`: :func:`~.deployments.kedro_deployment` (the Python API) and the project's
  ``prefect.yml`` deployments, as ``kedro prefect deploy`` and ``serve`` use them
  (the commands themselves: :mod:`kedro_prefect.cli`).

Names are imported on first use: ``kedro prefect --help`` must not pay for importing Prefect.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FLOW_ENTRYPOINT": "kedro_prefect.workpools",
    "kedro_pipeline": "kedro_prefect.deploy.flow",
    "kedro_deployment": "kedro_prefect.deploy.deployments",
    "check_api_reachable": "kedro_prefect.deploy.deployments",
    "deployment_name": "kedro_prefect.deploy.deployments",
    "check_work_pool": "kedro_prefect.deploy.deployments",
    "load_project": "kedro_prefect.deploy.deployments",
    "validate_deployment": "kedro_prefect.deploy.deployments",
    "DeployError": "kedro_prefect.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kedro_prefect.deploy' has no attribute {name!r}")
    if name == "kedro_pipeline":  # the entrypoint: named after the flow of the run (if any)
        value = importlib.import_module(module).flow_of_this_run()
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
