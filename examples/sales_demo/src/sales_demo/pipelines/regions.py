"""Regions: the same two-node modular pipeline once per region (namespace ``regions.<name>``).

``order_lines`` fans out to one branch per region; each branch keeps its data in memory.
"""

import pandas as pd
from kedro.pipeline import Pipeline, node

REGIONS = ("north", "south", "east", "west")


def select_region(lines: pd.DataFrame, region: str) -> pd.DataFrame:
    return lines[lines["region"] == region].reset_index(drop=True)


def summarize_region(lines: pd.DataFrame, region: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region": [region],
            "orders": [lines["order_id"].nunique()],
            "units": [int(lines["quantity"].sum())],
            "revenue": [round(float(lines["revenue"].sum()), 2)],
        }
    )


def region_pipeline() -> Pipeline:
    return Pipeline(
        [
            node(select_region, ["order_lines", "params:name"], "lines", name="select"),
            node(summarize_region, ["lines", "params:name"], "summary", name="summarize"),
        ]
    )


def create_pipeline() -> Pipeline:
    return sum(
        (
            Pipeline(
                region_pipeline(),
                namespace=f"regions.{region}",
                inputs={"order_lines"},
                parameters={"params:name": f"params:regions.{region}.name"},
            )
            for region in REGIONS
        ),
        Pipeline([]),
    )
