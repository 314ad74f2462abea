"""``python -m benchmarks.invariance``: see :mod:`benchmarks.invariance.benchmark`."""

from benchmarks.invariance.benchmark import main

if __name__ == "__main__":
    main()
