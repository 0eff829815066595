"""Observability that every layer may use without importing the runtime: secret scrubbing."""
