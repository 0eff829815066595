"""erpsync: keeps an ERP and MachineMetrics job runs in step, exactly once, with an audit trail."""

from __future__ import annotations

from functools import cache


@cache
def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - start-up time

    try:
        return version("erpsync")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    """`erpsync.__version__`, read from the installed metadata on first use (not at import)."""
    if name == "__version__":
        return _installed_version()
    raise AttributeError(f"module 'erpsync' has no attribute {name!r}")
