"""Project settings."""

from sales_demo.hooks import NodeTimingHooks

HOOKS = (NodeTimingHooks(),)
