"""Observability every layer may use without importing the runtime: secret scrubbing (scrub.py),
correlation ids (correlation.py), Prometheus metrics (metrics.py), named crash points for the crash
tests (crashpoints.py) and the garbage-collector pause of a large plan (collector.py).

A leaf package: it imports nothing else of erpsync, so adapters and the domain's neighbours can use
it while the runtime (scheduler, leader lease, health) stays at the top, wiring things together.
"""
