"""The Inspect AI front end: the benchmark as Inspect tasks, over the same protocol core
the lm-eval task pack uses.

- ``dataset.py``: one ``Sample`` per episode from a builder directory or the Hub (the row
  in its metadata, every row checked before any model call), and the demonstrations.
- ``solver.py``: plays each session turn by turn through the protocol's ``SessionRun``,
  every turn's budget as that ``generate`` call's ``max_tokens``.
- ``scorer.py``: ``score_episode`` per sample, under the lm-eval task's metric names.
- ``tasks.py``: the registered tasks (``inspect eval interrupt_bench/interrupt_bench``),
  loaded through the ``inspect_ai`` entry point (``_registry.py``)."""
