"""What every configuration section shares: strict keys, positive durations, secrets read from files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

PositiveSeconds = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    """Base for every section: unknown keys are errors, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def read_secret_file(path: Path, key: str) -> SecretStr:
    """Read a secret from a file (Docker/Kubernetes secrets style); trailing newline dropped."""
    try:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ValueError(f"cannot read {key} from {path}: {exc.strerror}") from None
