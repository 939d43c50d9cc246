"""Benchmarks of dify_runs against its baselines; run with ``nox -s bench``."""
