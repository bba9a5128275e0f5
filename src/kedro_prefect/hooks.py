"""A Kedro plugin hook that lets the runner know which project, env and pipeline it runs.

Registered through the ``kedro.hooks`` entry point, so it is active in every project where
kedro-prefect is installed. The session creates the context (``after_context_created``) and calls
``before_pipeline_run`` just before ``runner.run(...)``; the runner reads what was recorded to name
the Prefect flow run and to read ``conf/<env>/prefect.yml`` through the project's config loader.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from kedro.framework.hooks import hook_impl

from kedro_prefect._upstream.kedro import run_params_run_id


class RunParamsRecorder:
    """Keeps the ``run_params`` of recent Kedro runs, keyed by run id (the session id)."""

    def __init__(self) -> None:
        self._by_run_id: dict[str, dict[str, Any]] = {}
        self.context: Any = None
        self._on_context: list[weakref.WeakMethod[Callable[[], None]]] = []

    def when_context_created(self, callback: Callable[[], None]) -> None:
        """Call the bound method ``callback`` once, when the next Kedro context is created
        (``kedro run`` builds the runner just before the session creates the context), unless
        its object is gone by then. It must not raise."""
        self._on_context.append(weakref.WeakMethod(callback))

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self.context = context
        waiting, self._on_context = self._on_context, []
        for reference in waiting:
            callback = reference()
            if callback is not None:
                callback()

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        run_id = run_params_run_id(run_params)
        if run_id:
            self._by_run_id[run_id] = run_params

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self._forget(run_params)

    @hook_impl
    def on_pipeline_error(self, run_params: dict[str, Any]) -> None:
        self._forget(run_params)

    def _forget(self, run_params: dict[str, Any]) -> None:
        self._by_run_id.pop(run_params_run_id(run_params) or "", None)
        self.context = None

    def get(self, run_id: str | None) -> dict[str, Any]:
        return self._by_run_id.get(run_id or "", {})

    @property
    def config_loader(self) -> Any:
        """The config loader of the latest Kedro context, or ``None`` outside a Kedro session."""
        return getattr(self.context, "config_loader", None)


run_params_recorder = RunParamsRecorder()
