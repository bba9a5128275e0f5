"""Prefect artifacts of a pipeline run: the pipeline graph (at the start, updated with each
node's outcome at the end) and a node table at the end.

Both have keys that stay the same from run to run of a flow and pipeline
(``<flow>-<pipelines>-graph`` and ``<flow>-<pipelines>-nodes``), so Prefect's UI shows their
history under *Artifacts*.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast

from kedro_prefect.observe.base import SKIPPED, PipelineRun, RunObserver
from kedro_prefect.observe.graph import (
    LEGEND_ORDER,
    MAX_PICTURE_ITEMS,
    STATES,
    build_graph,
    describe,
    mermaid_flowchart,
    pipeline_datasets,
    state_key,
)

logger = logging.getLogger(__name__)


class ArtifactWriter(RunObserver):
    """Creates the graph (markdown) and node table artifacts of a flow run.

    Both are created from a background thread while the first nodes run (the table listing
    every node as not yet run): it is not worth delaying them by an API round trip. At the end
    of the run (also after a failure or a cancel) both are updated, the graph with each node's
    final state and duration, the table with each node's outcome. The run waits for no answer
    where the API takes calls as files (the local API): at the end of a 1,000-node run the
    busy server took ~1 s to answer the two calls.
    """

    _graph: Future[Any] | None = None
    _table: Future[Any] | None = None

    def on_run_start(self, run: PipelineRun) -> None:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        self._graph = run_in_background(
            create_markdown_artifact,
            markdown=graph_markdown(run),
            key=graph_key(run),
            description=_description(run),
        )
        self._table = run_in_background(
            create_table_artifact,
            table=node_table(run),
            key=table_key(run),
            description=_table_description(run),
        )

    def on_run_end(self, run: PipelineRun) -> None:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact
        from prefect.client.schemas.actions import ArtifactUpdate

        graph_id = _created(self._graph, "graph")
        table_id = _created(self._table, "node table")
        updates = []
        markdown = graph_markdown(run, final=True)
        if graph_id is None:
            graph_id = create_markdown_artifact(
                markdown=markdown, key=graph_key(run), description=_description(run)
            )
        else:
            updates.append((graph_id, ArtifactUpdate(data=markdown)))
        table, description = node_table(run), _table_description(run)
        if table_id is None:
            create_table_artifact(table=table, key=table_key(run), description=description)
        else:
            updates.append(
                (table_id, ArtifactUpdate(data=_table_data(table), description=description))
            )
        if run.ui_root:
            run.graph_url = f"{run.ui_root}/artifacts/artifact/{graph_id}"
        _update(run, updates)


def _created(future: Future[Any] | None, what: str) -> Any:
    """The id of the artifact ``future`` created, or ``None`` if it failed."""
    if future is None:
        return None
    try:
        return future.result()
    except Exception as exc:  # the start's artifact is missing: it is created at the end
        logger.debug("kedro-prefect: %s artifact at start failed: %s", what, exc)
        return None


def _table_data(table: list[dict[str, Any]]) -> str:
    """A table artifact's data as Prefect's ``create_table_artifact`` sends it."""
    from prefect.artifacts import TableArtifact

    # called outside an event loop: Prefect's sync/async dispatch returns the string
    return cast(str, TableArtifact(table=table).format())


def _update(run: PipelineRun, updates: list[tuple[Any, Any]]) -> None:
    """Send ``(artifact id, ArtifactUpdate)``s as Prefect's ``update_artifact`` does: as files
    the local API's server or the courier takes (the run does not wait for the answer), else
    all at once, each from a thread of its own (the run waits for the slowest, not the sum)."""
    from prefect.events import emit_event

    from kedro_prefect.local_api import spool_call

    left = []
    for artifact_id, update in updates:
        body = update.model_dump(mode="json", exclude_unset=True)
        if run.api_url and spool_call(run.api_url, "PATCH", f"/artifacts/{artifact_id}", body):
            # what update_artifact emits once the API has answered
            emit_event(
                event="prefect.artifact.updated",
                resource={"prefect.resource.id": f"prefect.artifact.{artifact_id}"},
                payload=body,
            )
        else:
            left.append((artifact_id, update))
    sent = [run_in_background(_update_artifact, artifact_id=i, update=u) for i, u in left]
    for future in sent:
        future.result()  # its error, if any, is the observer's


def _update_artifact(artifact_id: Any, update: Any) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.update_artifact(artifact_id, update)


def _table_description(run: PipelineRun) -> str:
    return f"Kedro nodes of {_markdown_text(run.flow_run_name or run.flow_name)}" + _skipped_note(
        run
    )


def _markdown_text(text: str) -> str:
    """``text`` shown as is by Prefect's UI, which renders descriptions as Markdown: no
    ``__default__`` turned into a bold *default*."""
    import re

    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", text)


def _skipped_note(run: PipelineRun) -> str:
    """``: 3 of 7 skipped (unchanged)`` when ``skip_unchanged`` skipped nodes, else nothing."""
    skipped = sum(1 for record in run.nodes.values() if record.skipped)
    return f": {skipped} of {len(run.nodes)} {SKIPPED}" if skipped else ""


def graph_key(run: PipelineRun) -> str:
    return f"{run.key_stem}-graph"


def table_key(run: PipelineRun) -> str:
    return f"{run.key_stem}-nodes"


def node_table(run: PipelineRun) -> list[dict[str, Any]]:
    """One row per node, in the pipeline's topological order; columns node,
    (group,) state, duration, attempts, start, worker.

    With ``group_by``, a ``group`` column names each node's group (empty for a node run alone);
    attempts, start and duration of a grouped node are those of its group's task run.
    """
    rows = []
    for record in run.nodes.values():
        seconds = record.seconds
        group = {"group": run.groups.get(record.node.name, "")} if run.groups else {}
        rows.append(
            {
                "node": record.node.name,
                **group,
                "state": record.state_name,
                # before the long start time: in view without scrolling the table sideways
                "duration": f"{seconds:.3f} s" if seconds is not None else "",
                "attempts": record.attempts if record.attempts is not None else "",
                "start": record.start.isoformat(timespec="milliseconds") if record.start else "",
                "worker": record.worker or "",
            }
        )
    return rows


def node_states(run: PipelineRun) -> dict[str, tuple[str, float | None]]:
    """Node name -> (state key of :data:`~.graph.STATES`, seconds) at the end of ``run``."""
    states = {}
    for name, record in run.nodes.items():
        state_type = record.state.type.value if record.state is not None else None
        key = state_key(record.state_name, state_type)
        if key == "running" and run.error is not None:
            key = "cancelled"  # submitted, and stopped with the run (Ctrl-C, cancel)
        states[name] = (key, record.seconds if key not in ("not_run", "pending") else None)
    return states


def graph_markdown(run: PipelineRun, final: bool = False) -> str:
    """Markdown with the pipeline as a picture (an SVG image every Prefect UI shows) and as
    Mermaid (which Prefect's V2 UI draws), in a collapsed block to copy from.

    With ``final``, nodes are coloured by their final state and show their duration.
    """
    import base64

    from kedro_prefect.observe.graph_svg import render_svg

    title = "+".join(run.pipeline_names or ["__default__"])
    states = node_states(run) if final else None
    graph = build_graph(run.pipeline, title, states, run.persisted_datasets, groups=run.groups)
    persisted = len(run.persisted_datasets & set(pipeline_datasets(run.pipeline)))
    heading = f"# Kedro pipeline `{title}`"
    if final:
        heading += f": {_outcome(run)}"
    facts = f"{graph.node_count} nodes, {graph.dataset_count} datasets ({persisted} persisted)"
    if states:
        counts = Counter(state for state, _ in states.values())
        facts += ": " + ", ".join(
            f"{counts[key]} {STATES[key][0]}" for key in LEGEND_ORDER if counts.get(key)
        )
        facts += f", in {run.elapsed:.1f} s."
    else:
        facts += ". This graph is updated with each node's outcome when the run ends."
    lines = [heading, "", facts, ""]
    if len(graph.items) > MAX_PICTURE_ITEMS:
        lines += [
            f"Not drawn: even with its namespaces collapsed, this pipeline would be "
            f"{len(graph.items)} boxes (nodes and datasets), more than {MAX_PICTURE_ITEMS} "
            "that a picture can show legibly. The node table artifact lists every node.",
            "",
        ]
        return "\n".join(lines)
    if graph.collapsed:
        lines += [describe(graph), ""]
    svg = base64.b64encode(render_svg(graph).encode()).decode()
    lines += [
        f"![Kedro pipeline {title}](data:image/svg+xml;base64,{svg})",
        "",
        "<details><summary>Mermaid source (Prefect's V2 UI draws it as a diagram)</summary>",
        "",
        "```mermaid",
        *mermaid_flowchart(graph),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def _description(run: PipelineRun) -> str:
    return f"Kedro pipeline `{'+'.join(run.pipeline_names)}`: nodes, datasets, outcome"


def _outcome(run: PipelineRun) -> str:
    """``completed``, ``failed`` or ``cancelled`` (Ctrl-C, SIGTERM, a cancel from Prefect)."""
    from kedro_prefect.errors import RunCancelledError

    if isinstance(run.error, RunCancelledError | KeyboardInterrupt):
        return "cancelled"
    if run.error is not None or any(r.failed for r in run.nodes.values()):
        return "failed"
    return "completed"


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
