"""Wording a person reads: the end-of-run summary, the node table's description, a misspelt
runner name."""

from __future__ import annotations

import pytest
from kedro.pipeline import Pipeline, node
from prefect.states import Completed, Failed
from rich.console import Console

from kedro_prefect.observe.base import PipelineRun
from kedro_prefect.observe.progress import summary


def _same(x):
    return x


def _run(states: list) -> PipelineRun:
    names = [f"n{i}" for i in range(len(states))]
    pipeline = Pipeline(
        [node(_same, f"d{i}", f"d{i + 1}", name=name) for i, name in enumerate(names)]
    )
    run = PipelineRun(pipeline, None, "flow", ["__default__"])
    for name, state in zip(names, states, strict=True):
        run.nodes[name].state = state
        if state is not None and state.name != "Cached":
            run.nodes[name].attempts = 1
        run.nodes[name].submitted_at, run.nodes[name].finished_at = 0.0, 0.25
    run.ended_at = run.started_at + 0.6
    return run


def _text(run: PipelineRun) -> str:
    console = Console(width=200, record=True)
    console.print(summary(run))
    return console.export_text()


@pytest.mark.parametrize(
    ("states", "headline"),
    [
        ([Completed()] * 3, "Pipeline completed: 3/3 nodes completed in 0.6 s"),
        (
            [Completed(name="Cached")] * 9,
            "Pipeline completed: 9/9 nodes completed, all skipped as unchanged, in 0.6 s",
        ),
        (
            [Completed(name="Cached"), Completed(), Completed()],
            "Pipeline completed: 3/3 nodes completed, 1 of them skipped as unchanged, in 0.6 s",
        ),
        (
            [Completed(name="Cached"), Failed(), None],
            "Pipeline failed: 1/3 nodes completed, 1 of them skipped as unchanged, 1 failed, "
            "1 not run in 0.6 s",
        ),
    ],
)
def test_the_headline_reads_as_one_sentence(states, headline):
    text = _text(_run(states))
    assert text.splitlines()[0] == headline
    assert "(unchanged))" not in text


def test_skipped_nodes_are_not_among_the_slowest_and_no_attempt_count_is_a_question_mark():
    run = _run([Completed(name="Cached"), Completed(name="Cached"), Completed()])
    text = _text(run)
    table = text.split("slowest nodes", 1)[1]
    assert "n2" in table  # the node that ran
    assert "n0" not in table and "n1" not in table  # skipped: they did not run
    assert "?" not in text


def test_the_node_table_description_shows_underscores_as_written():
    import markdown_it

    from kedro_prefect.observe.artifacts import _markdown_text

    name = "spaceflights-__default__-2026-12-06T02.00.00Z"
    html = markdown_it.MarkdownIt().render(f"Kedro nodes of {_markdown_text(name)}")
    assert "<strong>" not in html and name in html


def test_a_misspelt_runner_name_says_which_name_was_meant():
    from kedro.utils import load_obj

    import kedro_prefect
    from kedro_prefect.errors import KedroPrefectError

    with pytest.raises(KedroPrefectError) as error:  # `kedro run` prints it as one Error: line
        load_obj("kedro_prefect.PrefectRuner")
    assert str(error.value) == (
        "kedro_prefect has no 'PrefectRuner'; did you mean kedro_prefect.PrefectRunner?"
    )
    assert isinstance(error.value, AttributeError)  # as Kedro's own lookup raises
    assert not hasattr(kedro_prefect, "PrefectRuner")
    assert not hasattr(kedro_prefect, "__wrapped__")  # other names: a plain AttributeError
