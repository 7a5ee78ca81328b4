"""Benchmarks: run as `python -m bench.<name>` or `scripts/bench <name>`; speed goals live here, not in tests."""
