"""Benchmarks, each run from the repository root as ``python -m benchmarks.NAME`` (``--help`` lists the options).

Every benchmark writes a JSON under ``benchmarks/results/`` with the provenance of :mod:`benchmarks.provenance`,
and has a ``--quick`` mode (tiny sizes, seconds) whose outputs go to a temporary folder. ``benchmarks/README.md``
gives the command behind every reported number.

Importing this package reads the code's commit and working-tree state (:mod:`core.provenance`), so the record
names the code as the process started, not as the checkout stands when a report is written.
"""

import core.provenance  # noqa: F401  (the code's state is read now, at process start)
