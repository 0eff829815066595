"""Benchmarks of erpsync; `python -m bench.campaign` runs them all and writes docs/performance.md."""
