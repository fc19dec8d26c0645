"""Benchmarks (not tests): `python -m benchmarks` measures every contender in one run, one process."""
