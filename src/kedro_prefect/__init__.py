"""kedro-prefect: run Kedro pipelines as Prefect flows.

``kedro run --runner=kedro_prefect.PrefectRunner`` runs the pipeline as one Prefect flow run with
one task run per node, each node starting as soon as the nodes producing its inputs are done.
"""

from kedro_prefect.config import PrefectRunnerConfigError, RunnerOptions
from kedro_prefect.runner import PrefectRunner

__version__ = "0.1.0"

__all__ = ["PrefectRunner", "PrefectRunnerConfigError", "RunnerOptions", "__version__"]
