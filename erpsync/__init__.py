"""erpsync: keeps an ERP and MachineMetrics job runs in step, exactly once, with an audit trail."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("erpsync")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
