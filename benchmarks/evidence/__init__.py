"""The invariance benchmark's parts: encoder recipes, synthetic tasks, scores, measured invariance and the report.

Run it with ``python benchmarks/invariance_benchmark.py --modality vision|audio`` (see that script).
"""
