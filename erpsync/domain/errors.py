"""Error categories every layer agrees on; each one tells the caller what to do next.

- ConfigError: erpsync is set up wrong (bad config, rejected API key). Stop and tell a human.
- RecordError: this one record is bad (MM rejected it, the ERP row is invalid). Quarantine it, go on.
- RetryableError: a passing fault (timeout, 5xx, 429). Back off and try again.
"""


class ErpsyncError(Exception):
    """Base of erpsync's own errors; its message is written for the person who must act."""


class ConfigError(ErpsyncError):
    """Configuration is wrong or credentials were refused; retrying cannot help."""


class RecordError(ErpsyncError):
    """One record is invalid or was refused; it goes to quarantine and the rest carry on."""


class RetryableError(ErpsyncError):
    """A transient failure; the same call may succeed later."""


class FencedError(ErpsyncError):
    """This instance's fencing token is stale: another instance leads now, so it must not act."""
