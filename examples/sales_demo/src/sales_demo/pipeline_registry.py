"""Project pipelines."""

from kedro.pipeline import Pipeline

from sales_demo.pipelines import ingest, regions, reporting


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {
        "ingest": ingest.create_pipeline(),
        "regions": regions.create_pipeline(),
        "reporting": reporting.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
