"""A small Kedro project written to disk for the ``skip_unchanged`` tests (package ``skip_demo``).

Pipeline (``__default__``)::

    raw.txt --clean--> cleaned (memory) --scale(params:factor)--> scaled (memory)
                                        --report--> report.txt --final(stamp.txt)--> final.txt
            cleaned --count--> count.txt --summary--> summary.txt
    params:suffix --stamp--> stamp.txt

``clean`` parses through ``parsing.parse_lines`` (another module, calling a helper of its own)
and ``summary`` through ``_describe`` (a helper in ``nodes.py``). ``count`` fails when the
environment variable ``SKIP_DEMO_FAIL`` is set. A project hook appends
``<hook> <node>`` lines to ``data/events.log`` (node hooks) and ``load <dataset>`` /
``save <dataset>`` lines (dataset hooks).
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability_project import LOGGING_YML, write_files

PACKAGE = "skip_demo"
NODES = ("clean", "scale", "report", "count", "summary", "stamp", "final")

FILES = {
    "pyproject.toml": f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{PACKAGE}"
        version = "0.1.0"
        requires-python = ">=3.11"

        [tool.kedro]
        package_name = "{PACKAGE}"
        project_name = "skip-demo"
        kedro_init_version = "1.0.0"
        source_dir = "src"
        """,
    "conf/base/catalog.yml": """
        raw:
          type: text.TextDataset
          filepath: data/raw.txt
        report:
          type: text.TextDataset
          filepath: data/report.txt
        count:
          type: text.TextDataset
          filepath: data/count.txt
        summary:
          type: text.TextDataset
          filepath: data/summary.txt
        stamp:
          type: text.TextDataset
          filepath: data/stamp.txt
        final:
          type: text.TextDataset
          filepath: data/final.txt
        """,
    "conf/base/parameters.yml": "factor: 2\nsuffix: '!'\n",
    "conf/local/.gitkeep": "",
    "conf/logging.yml": LOGGING_YML,
    "data/raw.txt": "3\n1\n2\n",
    "src/{package}/__init__.py": "",
    "src/{package}/settings.py": """
        from {package}.hooks import EventRecorder

        HOOKS = (EventRecorder(),)
        """,
    "src/{package}/hooks.py": """
        import threading
        from pathlib import Path

        from kedro.framework.hooks import hook_impl

        _lock = threading.Lock()


        def _record(line):
            with _lock, open(Path("data") / "events.log", "a") as stream:
                stream.write(line + "\\n")


        class EventRecorder:
            @hook_impl
            def before_node_run(self, node):
                _record(f"before_node_run {{node.name}}")

            @hook_impl
            def after_node_run(self, node):
                _record(f"after_node_run {{node.name}}")

            @hook_impl
            def before_dataset_loaded(self, dataset_name):
                _record(f"load {{dataset_name}}")

            @hook_impl
            def before_dataset_saved(self, dataset_name):
                _record(f"save {{dataset_name}}")
        """,
    "src/{package}/parsing.py": """
        def parse_lines(text):
            return [_to_int(line) for line in text.split()]


        def _to_int(line):
            return int(line)
        """,
    "src/{package}/nodes.py": """
        import os

        from {package} import parsing


        def clean(raw):
            return sorted(parsing.parse_lines(raw))


        def scale(cleaned, factor):
            return [value * factor for value in cleaned]


        def report(scaled):
            return ",".join(str(value) for value in scaled)


        def count(cleaned):
            if os.environ.get("SKIP_DEMO_FAIL"):
                raise RuntimeError("count failed on purpose")
            return str(len(cleaned))


        def summary(count):
            return _describe(count)


        def _describe(count):
            return f"{{count}} values"


        def stamp(suffix):
            return "stamp" + suffix


        def final(report, stamp):
            return report + " " + stamp
        """,
    "src/{package}/pipeline_registry.py": """
        from kedro.pipeline import Pipeline, node

        from {package} import nodes


        def register_pipelines():
            pipeline = Pipeline(
                [
                    node(nodes.clean, "raw", "cleaned", name="clean"),
                    node(nodes.scale, ["cleaned", "params:factor"], "scaled", name="scale"),
                    node(nodes.report, "scaled", "report", name="report"),
                    node(nodes.count, "cleaned", "count", name="count"),
                    node(nodes.summary, "count", "summary", name="summary"),
                    node(nodes.stamp, "params:suffix", "stamp", name="stamp"),
                    node(nodes.final, ["report", "stamp"], "final", name="final"),
                ]
            )
            return {{"__default__": pipeline}}
        """,
}


def write_project(root: Path) -> Path:
    """Write the project under ``root`` (created) and return its path."""
    write_files(root, FILES, package=PACKAGE)
    return root


def take_events(root: Path) -> list[str]:
    """The hook events recorded since the last call (the log is emptied)."""
    log = root / "data" / "events.log"
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    log.unlink()
    return lines


def ran(events: list[str]) -> set[str]:
    """Names of the nodes whose ``before_node_run`` hook fired."""
    return {line.split()[1] for line in events if line.startswith("before_node_run ")}
