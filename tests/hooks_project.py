"""A small Kedro project written to disk for the worker hook tests (package ``hooks_demo``).

Pipeline: ``params:factor --make--> numbers (memory) --left--> left.txt``,
``numbers --right--> right.txt``, ``left.txt + right.txt --join--> joined.txt``.

Two project hooks:

* ``Recorder`` appends ``<hook> <pid> <detail>`` to ``data/hooks.log`` for every run, node
  and dataset hook (the detail of ``after_context_created`` is the ``factor`` parameter the
  context sees, of ``after_catalog_created`` the run's save version);
* ``StatsHook``, written like kedro-viz's ``DatasetStatsHook``: it keeps the catalog from
  ``after_catalog_created`` and reads it in ``after_dataset_saved``, logging kedro-viz's
  warning ("Unable to create statistics ...") when it has none.
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability_project import LOGGING_YML, write_files

PACKAGE = "hooks_demo"
NODES = ("make", "left", "right", "join")

FILES = {
    "pyproject.toml": f"""
        [tool.kedro]
        package_name = "{PACKAGE}"
        project_name = "hooks-demo"
        kedro_init_version = "1.0.0"
        source_dir = "src"
        """,
    "conf/base/catalog.yml": """
        left:
          type: text.TextDataset
          filepath: data/left.txt
        right:
          type: text.TextDataset
          filepath: data/right.txt
        joined:
          type: text.TextDataset
          filepath: data/joined.txt
        """,
    "conf/base/parameters.yml": "factor: 2\n",
    "conf/local/.gitkeep": "",
    "data/.gitkeep": "",
    "conf/logging.yml": LOGGING_YML,
    "src/{package}/__init__.py": "",
    "src/{package}/settings.py": """
        from {package}.hooks import Recorder, StatsHook

        HOOKS = (Recorder(), StatsHook())
        """,
    "src/{package}/hooks.py": """
        import json
        import logging
        import os
        import threading
        from pathlib import Path

        from kedro.framework.hooks import hook_impl

        _lock = threading.Lock()
        logger = logging.getLogger(__name__)


        def _record(hook, detail="-"):
            with _lock, open(Path("data") / "hooks.log", "a") as stream:
                stream.write(f"{{hook}} {{os.getpid()}} {{detail}}\\n")


        def _run_id(run_params):
            return run_params.get("run_id") or run_params.get("session_id")  # Kedro < 1.3


        class Recorder:
            @hook_impl
            def after_context_created(self, context):
                _record("after_context_created", context.params.get("factor"))

            @hook_impl
            def after_catalog_created(self, save_version):
                _record("after_catalog_created", save_version)

            @hook_impl
            def before_pipeline_run(self):
                _record("before_pipeline_run")

            @hook_impl
            def after_pipeline_run(self):
                _record("after_pipeline_run")

            @hook_impl
            def before_node_run(self, node):
                _record("before_node_run", node.name)

            @hook_impl
            def after_node_run(self, node):
                _record("after_node_run", node.name)

            @hook_impl
            def before_dataset_loaded(self, dataset_name):
                _record("before_dataset_loaded", dataset_name)

            @hook_impl
            def after_dataset_saved(self, dataset_name):
                _record("after_dataset_saved", dataset_name)


        # kedro-viz-style: state from the run's start used in dataset hooks, and gathered there
        # for after_pipeline_run; carried between the driver and the workers by the methods
        # that docs/dask.md documents.
        class StatsHook:
            def __init__(self):
                self._stats = {{}}
                self.datasets = None

            @hook_impl
            def after_catalog_created(self, catalog):
                self.datasets = catalog

            @hook_impl
            def before_pipeline_run(self, run_params):
                self.run_label = _run_id(run_params)

            @hook_impl
            def after_dataset_saved(self, dataset_name, data):
                try:
                    self.datasets.get(dataset_name)
                    self._stats[dataset_name] = [len(str(data)), self.run_label]
                except Exception as exc:
                    _record("stats_failed", dataset_name)
                    logger.warning(
                        "[hook: after_dataset_saved] Unable to create statistics for the "
                        "dataset %s : %s",
                        dataset_name,
                        exc,
                    )

            @hook_impl
            def after_pipeline_run(self, run_params):
                stats = {{
                    name: [size, label == _run_id(run_params)]
                    for name, (size, label) in sorted(self._stats.items())
                }}
                self._stats.clear()
                _record("stats", json.dumps(stats, separators=(",", ":")))

            def state_for_workers(self):
                return self.run_label

            def use_driver_state(self, state):
                self.run_label = state

            def state_for_driver(self, nodes):
                names = {{name for node in nodes for name in node.outputs}}
                return {{name: self._stats.pop(name) for name in names if name in self._stats}}

            def merge_worker_state(self, state):
                self._stats.update(state)
        """,
    "src/{package}/pipeline_registry.py": """
        from kedro.pipeline import Pipeline, node


        def make(factor):
            return [1 * factor, 2 * factor]


        def left(numbers):
            return str(numbers[0])


        def right(numbers):
            return str(numbers[1])


        def join(left, right):
            return left + "," + right


        def register_pipelines():
            return {{
                "__default__": Pipeline(
                    [
                        node(make, "params:factor", "numbers", name="make"),
                        node(left, "numbers", "left", name="left"),
                        node(right, "numbers", "right", name="right"),
                        node(join, ["left", "right"], "joined", name="join"),
                    ]
                )
            }}
        """,
}


def write_project(root: Path) -> Path:
    """Write the project under ``root`` (created) and return its path."""
    write_files(root, FILES, package=PACKAGE)
    return root


def take_hook_lines(root: Path) -> list[tuple[str, int, str]]:
    """``(hook, pid, detail)`` recorded since the last call (the log is emptied)."""
    log = root / "data" / "hooks.log"
    if not log.exists():
        return []
    lines = [line.split(" ", 2) for line in log.read_text().splitlines()]
    log.unlink()
    return [(hook, int(pid), detail) for hook, pid, detail in lines]
