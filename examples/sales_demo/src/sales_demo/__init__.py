"""sales_demo: the example Kedro project of kedro-prefect."""

__version__ = "0.1.0"
