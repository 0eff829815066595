"""What every configuration section shares: strict keys, positive durations, secrets read from files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, SecretStr


def _plain(number: float) -> str:
    """A bound as a person types it: 10000000000, not 1e+10; 0.1 stays 0.1."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


class Range:
    """A number in [low, high], finite: `inf`, `nan`, `1e300` or a negative value is refused with
    one message naming the range, so `config check` catches what `serve` would choke on later
    (APScheduler, `threading.Event.wait` and `timedelta` overflow on huge values)."""

    def __init__(self, low: float, high: float, unit: str) -> None:
        self.low, self.high = low, high
        self.expected = f"expected a finite number of {unit} from {_plain(low)} to {_plain(high)}"
        self.before = BeforeValidator(self._finite)
        self.after = AfterValidator(self._in_range)

    def _finite(self, value: Any) -> Any:
        # before parsing: `1e300` for a whole number would otherwise fail as "exceeded maximum size"
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                number = float(value)
            except (ValueError, OverflowError):
                return value  # not a number: pydantic says so, naming the type
            if not math.isfinite(number) or not self.low <= number <= self.high:
                raise ValueError(self.expected)
        return value

    def _in_range(self, value: Any) -> Any:
        if not self.low <= value <= self.high:
            raise ValueError(self.expected)
        return value


# The ranges of every duration (docs/configuration.md, "Ranges"):
# - intervals, deadlines and ages (cycles, renewals, retries, job timeout): 0.1 s to 1 day
# - network and database timeouts: 0.1 s to 10 minutes
# - backoff between retries: 0.001 s to 1 hour
_SECONDS = Range(0.1, 86_400, "seconds")
_TIMEOUT = Range(0.1, 600, "seconds")
_BACKOFF = Range(0.001, 3_600, "seconds")
Seconds = Annotated[float, _SECONDS.before, _SECONDS.after]
TimeoutSeconds = Annotated[float, _TIMEOUT.before, _TIMEOUT.after]
BackoffSeconds = Annotated[float, _BACKOFF.before, _BACKOFF.after]
PositiveSeconds = Seconds  # the name the sections used before ranges


def bounded_int(low: int, high: int, unit: str) -> Range:
    """The range of a whole-number setting (days, minutes, counts)."""
    return Range(low, high, unit)


class Section(BaseModel):
    """Base for every section: unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def read_secret_file(path: Path, key: str) -> SecretStr:
    """Read a secret from a file (Docker/Kubernetes secrets style); trailing newline dropped."""
    try:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ValueError(f"cannot read {key} from {path}: {exc.strerror}") from None
