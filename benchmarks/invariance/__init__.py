"""The invariance benchmark: is it the conditioning that helps? Run it with ``python -m benchmarks.invariance``.

Its parts: :mod:`~benchmarks.invariance.recipes` (the encoders pre-trained), :mod:`~benchmarks.invariance.tasks`
(the synthetic tasks and their inputs), :mod:`~benchmarks.invariance.scores` (one readout for every encoder),
:mod:`~benchmarks.invariance.measured` (measured invariance per factor), :mod:`~benchmarks.invariance.claims`
(the seed-paired claims table), :mod:`~benchmarks.invariance.report` (summaries, tables, plots) and
:mod:`~benchmarks.invariance.benchmark` (the runner behind ``python -m benchmarks.invariance``).
"""
