"""Reporting: fan the per-region summaries back in, and rank products."""

import pandas as pd
from kedro.pipeline import Pipeline, node

from sales_demo.pipelines.regions import REGIONS


def combine_regions(*summaries: pd.DataFrame) -> pd.DataFrame:
    report = pd.concat(summaries, ignore_index=True)
    return report.sort_values("region").reset_index(drop=True)


def rank_products(lines: pd.DataFrame, top_n: int) -> pd.DataFrame:
    revenue = lines.groupby("name", as_index=False)["revenue"].sum().round(2)
    return revenue.sort_values(["revenue", "name"], ascending=[False, True]).head(top_n)


def create_pipeline() -> Pipeline:
    return Pipeline(
        [
            node(
                combine_regions,
                [f"regions.{region}.summary" for region in REGIONS],
                "region_report",
                name="combine_regions",
            ),
            node(rank_products, ["order_lines", "params:top_n"], "top_products", name="rank_products"),
        ]
    )
