"""A project hook: logs how long each node took, through the project's own logger."""

import logging
import time

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class NodeTimingHooks:
    def __init__(self):
        self._started = {}

    @hook_impl
    def before_node_run(self, node):
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node):
        elapsed = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        logger.info("sales_demo hook: node %s took %.3f s", node.name, elapsed)
