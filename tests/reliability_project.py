"""A small Kedro project written to disk for the reliability tests (package ``reliability_demo``).

Pipelines:

* ``flaky``: ``flaky_node`` fails on its first two attempts (counted in ``data/attempts.txt``),
  then succeeds and saves ``data/flaky.txt``.
* ``sleepy``: ``sleepy_node`` sleeps 60 s in small steps (interruptible by a timeout).
* ``chain``: ``step_1`` ... ``step_8`` in a chain, each sleeping ``STEP_SECONDS`` and saving
  ``data/step_<i>.txt``.
* ``secrets_ok`` / ``secrets_fail``: read a dataset holding credentials; ``leak_node`` fails
  with an error message containing the credential (like a driver echoing a connection string).
* ``parallel``: ``pause_1`` ... ``pause_3``, independent, each sleeping ``STEP_SECONDS``.
* ``needs_input``: needs ``missing_input``, which is not in the catalog.
* ``signal_in_node``: ``interrupted_node`` has SIGINT delivered to its own thread (as the kernel
  may hand a process's Ctrl-C to any thread) and waits up to 60 s for the run's "Received
  SIGINT" line, failing if it does not come; ``after_signal`` needs its output.

A project hook appends ``<hook> <node>`` lines to ``data/events.log``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

SECRET = "s3cr3t-TOKEN-4f9c1d7e-kedro-prefect"
PACKAGE = "reliability_demo"
STEP_SECONDS = 1.5

#: The logging.yml of the test projects: Kedro's lines on standard output, plain format.
LOGGING_YML = """
        version: 1
        disable_existing_loggers: False
        formatters:
          simple:
            format: "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
        handlers:
          console:
            class: logging.StreamHandler
            level: INFO
            formatter: simple
            stream: ext://sys.stdout
        loggers:
          kedro:
            level: INFO
        root:
          handlers: [console]
        """

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
        project_name = "reliability-demo"
        kedro_init_version = "1.0.0"
        source_dir = "src"
        """,
    "conf/base/catalog.yml": """
        flaky_output:
          type: {package}.datasets.TextDataset
          filepath: data/flaky.txt
        secret_source:
          type: {package}.datasets.TokenDataset
          filepath: data/source.txt
          credentials: service
        secret_copy:
          type: {package}.datasets.TextDataset
          filepath: data/secret_copy.txt
        """,
    "conf/base/parameters.yml": "step_seconds: {step_seconds}\n",
    "conf/local/credentials.yml": f"""
        service:
          token: {SECRET}
        """,
    "conf/logging.yml": LOGGING_YML,
    "data/source.txt": "some data\n",
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


        def _record(event, node):
            with _lock, open(Path("data") / "events.log", "a") as stream:
                stream.write(f"{{event}} {{node.name}}\\n")


        class EventRecorder:
            @hook_impl
            def before_node_run(self, node):
                _record("before_node_run", node)

            @hook_impl
            def after_node_run(self, node):
                _record("after_node_run", node)

            @hook_impl
            def on_node_error(self, node):
                _record("on_node_error", node)
        """,
    "src/{package}/datasets.py": """
        from pathlib import Path

        from kedro.io import AbstractDataset


        class TextDataset(AbstractDataset):
            def __init__(self, filepath):
                self._filepath = Path(filepath)

            def load(self):
                return self._filepath.read_text()

            def save(self, data):
                self._filepath.parent.mkdir(parents=True, exist_ok=True)
                self._filepath.write_text(data)

            def _describe(self):
                return {{"filepath": str(self._filepath)}}


        class TokenDataset(TextDataset):
            \"\"\"Needs a token (from credentials.yml) to read its file.\"\"\"

            def __init__(self, filepath, credentials):
                super().__init__(filepath)
                self._token = credentials["token"]

            def load(self):
                return {{"token": self._token, "text": super().load()}}
        """,
    "src/{package}/nodes.py": """
        import logging
        import signal
        import threading
        import time
        from pathlib import Path

        logger = logging.getLogger(__name__)


        def flaky():
            counter = Path("data") / "attempts.txt"
            attempt = int(counter.read_text()) + 1 if counter.exists() else 1
            counter.write_text(str(attempt))
            if attempt <= 2:
                raise RuntimeError(f"flaky failure on attempt {{attempt}}")
            return f"succeeded on attempt {{attempt}}"


        def sleepy():
            for _ in range(1200):
                time.sleep(0.05)
            return "woke up"


        def first_step(seconds):
            time.sleep(seconds)
            return "step done\\n"


        def step(previous, seconds):
            time.sleep(seconds)
            return previous + "step done\\n"


        def pause(seconds):
            time.sleep(seconds)
            return "paused"


        def copy_text(source):
            logger.info("copying %d characters", len(source["text"]))
            return source["text"]


        def leak(source):
            raise ConnectionError(f"service refused token={{source['token']}}")


        def needs(value):
            return value


        def interrupted():
            noticed = threading.Event()

            class Notice(logging.Handler):
                def emit(self, record):
                    if record.getMessage().startswith("Received SIGINT"):
                        noticed.set()

            notice = Notice()
            logging.getLogger().addHandler(notice)
            try:
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                if not noticed.wait(60):
                    raise RuntimeError("the run did not notice the SIGINT within 60 s")
            finally:
                logging.getLogger().removeHandler(notice)
            return "noticed"
        """,
    "src/{package}/pipeline_registry.py": """
        from kedro.pipeline import Pipeline, node

        from {package} import nodes


        def _step(index):
            if index == 1:
                return node(nodes.first_step, "params:step_seconds", "step_1", name="step_1")
            return node(
                nodes.step,
                [f"step_{{index - 1}}", "params:step_seconds"],
                f"step_{{index}}",
                name=f"step_{{index}}",
            )


        def register_pipelines():
            chain = Pipeline([_step(i) for i in range(1, 9)])
            return {{
                "flaky": Pipeline(
                    [node(nodes.flaky, None, "flaky_output", name="flaky_node", tags=["flaky"])]
                ),
                "sleepy": Pipeline([node(nodes.sleepy, None, "sleepy_output", name="sleepy_node")]),
                "chain": chain,
                "secrets_ok": Pipeline(
                    [node(nodes.copy_text, "secret_source", "secret_copy", name="copy_node")]
                ),
                "secrets_fail": Pipeline(
                    [
                        node(nodes.copy_text, "secret_source", "secret_copy", name="copy_node"),
                        node(nodes.leak, "secret_source", "leaked", name="leak_node"),
                    ]
                ),
                "parallel": Pipeline(
                    [
                        node(
                            nodes.pause,
                            "params:step_seconds",
                            f"pause_{{i}}",
                            name=f"pause_{{i}}",
                            tags=["pause"],
                        )
                        for i in (1, 2, 3)
                    ]
                ),
                "needs_input": Pipeline([node(nodes.needs, "missing_input", "x", name="needs")]),
                "signal_in_node": Pipeline(
                    [
                        node(nodes.interrupted, None, "noticed", name="interrupted_node"),
                        node(nodes.needs, "noticed", "after", name="after_signal"),
                    ]
                ),
                "__default__": chain,
            }}
        """,
}


def write_project(root: Path, *, step_seconds: float = STEP_SECONDS) -> Path:
    """Write the project under ``root`` (created) and return its path."""
    write_files(root, FILES, package=PACKAGE, step_seconds=step_seconds)
    # step_* outputs are persisted so that a cancelled run leaves them on disk
    catalog = root / "conf/base/catalog.yml"
    catalog.write_text(
        catalog.read_text()
        + "".join(
            f"step_{i}:\n  type: {PACKAGE}.datasets.TextDataset\n  filepath: data/step_{i}.txt\n"
            for i in range(1, 9)
        )
    )
    return root


def write_files(root: Path, files: dict[str, str], **fields: object) -> None:
    """Write ``files`` (relative path -> dedented text) under ``root``, filling ``{field}``s."""
    for relative, content in files.items():
        path = root / relative.format(**fields)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(content).lstrip("\n")
        if "{{" in text or any(f"{{{name}}}" in text for name in fields):
            text = text.format(**fields)
        path.write_text(text)


def write_prefect_yml(root: Path, text: str, env: str = "base") -> None:
    (root / "conf" / env / "prefect.yml").write_text(textwrap.dedent(text).lstrip("\n"))
