"""Terminal output of a run: live progress while nodes run, and a compact summary at the end.

Shown only when standard output is a terminal (``rich`` decides, so ``TERM=dumb``,
``NO_COLOR`` and friends are respected); in pipes, CI logs and files the run's log records are
left alone. Log records printed while the progress bar is on screen appear above it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from kedro_prefect.observe.base import PipelineRun, RunObserver

if TYPE_CHECKING:
    from kedro.pipeline.node import Node
    from prefect.futures import PrefectFuture
    from rich.console import Console
    from rich.progress import Progress, TaskID

#: Nodes listed in the summary as the slowest.
SLOWEST = 5
#: Completed nodes named in the summary of a cancelled run, before "+N more".
COMPLETED_SHOWN = 20
#: Node names shown after "running:" before "+N more".
RUNNING_SHOWN = 3


class TerminalProgress(RunObserver):
    """A rich progress bar (done/total, nodes running now) and an end-of-run summary."""

    def __init__(self, console: Console | None = None):
        from rich import get_console

        self.console = console or get_console()
        self.enabled = self.console.is_terminal and not self.console.is_dumb_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._running: dict[str, None] = {}  # insertion-ordered set
        self._lock = threading.Lock()
        self._streams: Any = None

    def on_run_start(self, run: PipelineRun) -> None:
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        # The flow run's link and the Dask dashboard are logged (above the bar) by the recorder
        # and the Dask driver.
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("nodes"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[running]}"),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task(
            run.flow_name, total=len(run.pipeline.nodes), running=""
        )
        self._progress.start()
        self._streams = _redirect_streams(self.console)
        self._streams.__enter__()

    def on_node_submitted(self, node: Node, future: PrefectFuture[Any]) -> None:
        if self._progress is None:
            return
        with self._lock:
            self._running[node.name] = None
            self._update()

    def on_node_finished(self, node: Node, future: PrefectFuture[Any]) -> None:
        if self._progress is None or self._task is None:
            return
        with self._lock:
            self._running.pop(node.name, None)
            self._progress.advance(self._task)
            self._update()

    def on_node_not_run(self, node: Node) -> None:
        if self._progress is None:
            return
        with self._lock:
            self._running.pop(node.name, None)
            self._update()

    def _update(self) -> None:
        if self._progress is None or self._task is None:
            return
        names = list(self._running)
        text = ""
        if names:
            text = "running: " + ", ".join(names[:RUNNING_SHOWN])
            if len(names) > RUNNING_SHOWN:
                text += f" +{len(names) - RUNNING_SHOWN} more"
        self._progress.update(self._task, running=text)

    def close(self) -> None:
        """Take the bar off the screen and give the log handlers their streams back."""
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.stop()
        streams, self._streams = self._streams, None
        if streams is not None:
            streams.__exit__(None, None, None)

    def on_run_end(self, run: PipelineRun) -> None:
        self.close()
        if self.enabled:
            self.console.print(summary(run))


def summary(run: PipelineRun) -> Any:
    """A compact rich renderable: counts, the slowest nodes, failures, the flow run's and the
    graph artifact's pages."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from kedro_prefect.errors import RunCancelledError

    records = list(run.nodes.values())
    completed = [r for r in records if r.state is not None and r.state.is_completed()]
    done = len(completed)
    failed = [r for r in records if r.failed]
    not_run = sum(1 for r in records if r.state is None)
    skipped = sum(1 for r in records if r.skipped)
    cancelled = isinstance(run.error, RunCancelledError | KeyboardInterrupt)
    if cancelled:
        outcome, style = "cancelled", "bold yellow"
    elif run.error or failed:
        outcome, style = "failed", "bold red"
    else:
        outcome, style = "completed", "bold green"
    headline = Text.assemble(
        ("Pipeline ", "bold"),
        (outcome, style),
        f": {done}/{len(records)} nodes completed",
        f", {_skipped_words(skipped, done)}" if skipped else "",
        f", {len(failed)} failed" if failed else "",
        f", {not_run} not run" if not_run else "",
        ("," if skipped and not (failed or not_run) else "") + f" in {run.elapsed:.1f} s",
    )
    parts: list[Any] = [headline]
    if _on_the_local_api(run):
        parts.append(
            Text(
                f"({run.elapsed:.1f} s is the flow run; Kedro's time also counts starting "
                "Prefect's local API and recording the run in it)",
                style="dim",
            )
        )
    if cancelled and completed:
        names = [r.node.name for r in completed]
        more = f" +{len(names) - COMPLETED_SHOWN} more" if len(names) > COMPLETED_SHOWN else ""
        parts.append(
            Text.assemble(("completed: ", "bold"), ", ".join(names[:COMPLETED_SHOWN]), more)
        )

    timed = sorted(  # skipped nodes did not run: their time is Prefect's cache look-up
        (r for r in records if r.seconds is not None and r.state is not None and not r.skipped),
        key=lambda r: r.seconds or 0.0,
        reverse=True,
    )
    if timed:
        table = Table(box=None, pad_edge=False, title_justify="left", show_edge=False)
        table.add_column("slowest nodes", style="bold")
        table.add_column("duration", justify="right")
        table.add_column("attempts", justify="right")
        for record in timed[:SLOWEST]:
            table.add_row(record.node.name, f"{record.seconds:.2f} s", _attempts(record))
        parts.append(table)
    for record in failed:
        reason = _failure_reason(record)
        parts.append(
            Text.assemble(
                ("failed: ", "bold red"),
                (record.node.name, "bold"),
                f" ({record.state_name}, {_attempts(record)} attempt(s))",
                f": {reason}" if reason else "",
            )
        )
    if run.ui_url:
        parts.append(Text.assemble(("Prefect flow run: ", "bold"), run.ui_url))
    if run.graph_url:
        parts.append(Text.assemble(("Pipeline graph: ", "bold"), run.graph_url))
    return Group(*parts)


def _skipped_words(skipped: int, completed: int) -> str:
    """``all skipped as unchanged`` or ``3 of them skipped as unchanged``."""
    if skipped == completed and skipped > 1:
        return "all skipped as unchanged"
    return f"{skipped} of them skipped as unchanged"


def _on_the_local_api(run: PipelineRun) -> bool:
    """The run reported to the ephemeral API this process started (or reused)."""
    from kedro_prefect.local_api import EPHEMERAL_API

    return bool(run.api_url) and EPHEMERAL_API.running and run.api_url == EPHEMERAL_API.url


def _attempts(record: Any) -> str:
    return str(record.attempts) if record.attempts is not None else "?"


def _failure_reason(record: Any) -> str:
    """The node's exception as ``Type: message``, from its final state."""
    state = record.state
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}"
        return text if len(text) <= 200 else text[:197] + "..."
    return state.message or ""


@contextmanager
def _redirect_streams(console: Console) -> Iterator[None]:
    """Route log handlers writing straight to the terminal through ``console``.

    Prefect's console handler and plain ``StreamHandler`` objects hold the real ``sys.stdout``
    / ``sys.stderr``; writes from them would tear the live progress bar apart.
    """
    import sys

    from rich.file_proxy import FileProxy

    out = getattr(sys.stdout, "rich_proxied_file", sys.stdout)
    err = getattr(sys.stderr, "rich_proxied_file", sys.stderr)
    proxies = {id(out): FileProxy(console, out), id(err): FileProxy(console, err)}
    undo: list[Any] = []
    known = logging.Logger.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(item for item in known if isinstance(item, logging.Logger))]
    seen: set[int] = set()
    for logger_ in loggers:
        for handler in logger_.handlers:
            if id(handler) in seen:
                continue
            seen.add(id(handler))
            handler_console = getattr(handler, "console", None)
            if handler_console is not None and handler_console is not console:
                file = getattr(handler_console, "_file", None)
                if file is not None and id(file) in proxies:
                    handler_console.file = proxies[id(file)]
                    undo.append(lambda c=handler_console, f=file: setattr(c, "file", f))
            elif (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and id(handler.stream) in proxies
            ):
                original = handler.setStream(proxies[id(handler.stream)])
                undo.append(lambda h=handler, s=original: h.setStream(s))
    try:
        yield
    finally:
        for restore in reversed(undo):
            with suppress(Exception):
                restore()
        for proxy in proxies.values():
            with suppress(Exception):
                proxy.flush()
