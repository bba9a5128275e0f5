"""Prefect artifacts of a pipeline run: the pipeline graph at the start, a node table at the end.

Both have keys that stay the same from run to run of a flow and pipeline
(``<flow>-<pipelines>-graph`` and ``<flow>-<pipelines>-nodes``), so Prefect's UI shows their
history under *Artifacts*.
"""

from __future__ import annotations

import contextvars
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from kedro_prefect.observe.base import SKIPPED, PipelineRun, RunObserver

if TYPE_CHECKING:
    from kedro.pipeline import Pipeline


class ArtifactWriter(RunObserver):
    """Creates the graph (markdown) and node table artifacts of a flow run.

    The graph is sent from a background thread while the first nodes run: it is not worth
    delaying them by an API round trip.
    """

    _graph: Future[Any] | None = None

    def on_run_start(self, run: PipelineRun) -> None:
        from prefect.artifacts import create_markdown_artifact

        self._graph = run_in_background(
            create_markdown_artifact,
            markdown=graph_markdown(run.pipeline, run.pipeline_names),
            key=graph_key(run),
            description=f"Kedro pipeline {'+'.join(run.pipeline_names)}: nodes and datasets",
        )

    def on_run_end(self, run: PipelineRun) -> None:
        from prefect.artifacts import create_table_artifact

        if self._graph is not None:
            self._graph.result()  # a failure is reported (and this writer switched off) here
        create_table_artifact(
            table=node_table(run),
            key=table_key(run),
            description=f"Kedro nodes of {run.flow_run_name or run.flow_name}" + _skipped_note(run),
        )


def _skipped_note(run: PipelineRun) -> str:
    """``: 3 of 7 skipped (unchanged)`` when ``skip_unchanged`` skipped nodes, else nothing."""
    skipped = sum(1 for record in run.nodes.values() if record.skipped)
    return f": {skipped} of {len(run.nodes)} {SKIPPED}" if skipped else ""


def graph_key(run: PipelineRun) -> str:
    return f"{run.key_stem}-graph"


def table_key(run: PipelineRun) -> str:
    return f"{run.key_stem}-nodes"


def node_table(run: PipelineRun) -> list[dict[str, Any]]:
    """One row per node, in the pipeline's topological order."""
    rows = []
    for record in run.nodes.values():
        seconds = record.seconds
        rows.append(
            {
                "node": record.node.name,
                "state": record.state_name,
                "attempts": record.attempts if record.attempts is not None else "",
                "start": record.start.isoformat(timespec="milliseconds") if record.start else "",
                "duration": f"{seconds:.3f} s" if seconds is not None else "",
                "worker": record.worker or "",
            }
        )
    return rows


def graph_markdown(pipeline: Pipeline, pipeline_names: list[str] | None = None) -> str:
    """Markdown with the pipeline as a Mermaid flowchart.

    Nodes are rounded boxes, datasets cylinders (parameters are left out), and every
    namespace (``regions.north``) is a subgraph nested in its parent namespace's subgraph.
    """
    title = "+".join(pipeline_names or ["__default__"])
    lines = [
        f"# Kedro pipeline `{title}`",
        "",
        f"{len(pipeline.nodes)} nodes, {len(_datasets(pipeline))} datasets.",
        "",
        "```mermaid",
        *mermaid_flowchart(pipeline),
        "```",
        "",
    ]
    return "\n".join(lines)


def mermaid_flowchart(pipeline: Pipeline) -> list[str]:
    """The lines of a Mermaid ``flowchart LR`` of ``pipeline``."""
    node_ids = {node.name: f"n{i}" for i, node in enumerate(pipeline.nodes)}
    datasets = _datasets(pipeline)
    dataset_ids = {name: f"d{i}" for i, name in enumerate(datasets)}

    # namespace -> the Mermaid lines declaring its nodes and datasets
    members: dict[str, list[str]] = defaultdict(list)
    for node in pipeline.nodes:
        members[node.namespace or ""].append(f'{node_ids[node.name]}("{_label(node.name)}")')
    namespaces = {ns for node in pipeline.nodes for ns in _prefixes(node.namespace)}
    for name in datasets:
        namespace = max((ns for ns in _prefixes(name) if ns in namespaces), key=len, default="")
        members[namespace].append(f'{dataset_ids[name]}[("{_label(name)}")]')

    tree: dict[str, set[str]] = defaultdict(set)  # namespace -> child namespaces
    for namespace in list(members):
        while namespace:
            parent = namespace.rpartition(".")[0]
            tree[parent].add(namespace)
            namespace = parent
    subgraph_ids: dict[str, str] = {}

    def emit(namespace: str, depth: int) -> list[str]:
        pad = "    " * depth
        out = [pad + line for line in members.get(namespace, [])]
        for child in sorted(tree.get(namespace, ())):
            subgraph_ids[child] = f"ns{len(subgraph_ids)}"
            label = _label(child.rpartition(".")[2])
            out.append(f'{pad}subgraph {subgraph_ids[child]}["{label}"]')
            out.extend(emit(child, depth + 1))
            out.append(f"{pad}end")
        return out

    lines = ["flowchart LR", *emit("", 1)]
    for node in pipeline.nodes:
        for name in node.inputs:
            if name in dataset_ids:
                lines.append(f"    {dataset_ids[name]} --> {node_ids[node.name]}")
        for name in node.outputs:
            lines.append(f"    {node_ids[node.name]} --> {dataset_ids[name]}")
    lines.append("    classDef dataset fill:#eef,stroke:#99c")
    if dataset_ids:
        lines.append(f"    class {','.join(dataset_ids.values())} dataset")
    return lines


def _prefixes(name: str | None) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b", "a.b.c"]``."""
    if not name:
        return []
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _datasets(pipeline: Pipeline) -> list[str]:
    """Datasets of the pipeline in a stable order, without parameters."""
    return sorted(
        name
        for name in pipeline.datasets()
        if name != "parameters" and not name.startswith("params:")
    )


def _label(text: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def run_in_background(fn: Callable[..., Any], /, **kwargs: Any) -> Future[Any]:
    """Call ``fn`` in a daemon thread that sees this context (the flow run, its API client)."""
    future: Future[Any] = Future()
    context = contextvars.copy_context()

    def call() -> None:
        try:
            future.set_result(context.run(fn, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=call, name="kedro-prefect-artifact", daemon=True).start()
    return future
