"""Ingest: clean the raw CSV files and join them into order lines (namespace ``ingest``)."""

import pandas as pd
from kedro.pipeline import Pipeline, node


def clean_orders(orders: pd.DataFrame, min_quantity: int) -> pd.DataFrame:
    orders = orders.dropna(subset=["order_id", "product_id", "region"])
    orders = orders[orders["quantity"] >= min_quantity]
    return orders.assign(region=orders["region"].str.strip().str.lower()).reset_index(drop=True)


def clean_products(products: pd.DataFrame) -> pd.DataFrame:
    return products.assign(name=products["name"].str.strip()).drop_duplicates("product_id")


def join_lines(orders: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    lines = orders.merge(products, on="product_id", how="inner")
    return lines.assign(revenue=lines["quantity"] * lines["unit_price"])


def create_pipeline() -> Pipeline:
    return Pipeline(
        [
            node(clean_orders, ["orders_raw", "params:min_quantity"], "orders", name="clean_orders"),
            node(clean_products, "products_raw", "products", name="clean_products"),
            node(join_lines, ["orders", "products"], "order_lines", name="join_lines"),
        ],
        namespace="ingest",
        inputs={"orders_raw", "products_raw"},
        outputs={"order_lines"},
        parameters={"params:min_quantity"},
    )
