"""What a person sees of a run: observers of the scheduling loop, and where node logs go.

* :mod:`.base`: :class:`~.base.RunObserver` (the interface), :class:`~.base.PipelineRun` and
  :class:`~.base.NodeRun`; imports no sibling;
* :mod:`.recorder`: keeps the run's record and wires the built-in observers (:func:`observe_run`);
* :mod:`.artifacts`: the pipeline graph and node table artifacts in Prefect;
* :mod:`.graph`: the pipeline as a graph (states, namespaces, collapsing) and its Mermaid;
* :mod:`.graph_layout`: where each box of the graph's picture goes (fitted to the UI's width);
* :mod:`.graph_svg`: the same graph drawn as an SVG picture;
* :mod:`.progress`: the terminal's progress bar and summary;
* :mod:`.logs`: node log records to the task run logs in Prefect.
"""
