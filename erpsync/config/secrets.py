"""Secrets of the configuration: registered with the log scrubber, masked when the settings are shown.

Registered twice on purpose: as written (before validation, so a value that fails to validate is
masked in the error message too) and as validated (so secrets read from ``*_file`` keys are masked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import make_url

from erpsync.config.database import DatabaseSettings
from erpsync.observability.scrub import MASK, is_secret_key, register_secret, register_url_secrets, scrub

if TYPE_CHECKING:
    from erpsync.config.settings import Settings

REDACTED = MASK


def register_raw_secrets(data: Any, key: str = "") -> None:
    """Register secrets as written, before validation: a value that does not validate is masked too."""
    if isinstance(data, dict):
        for name, value in data.items():
            register_raw_secrets(value, f"{key}.{name}".lower())
    elif isinstance(data, str):
        if is_secret_key(key) and not key.endswith("_file"):
            register_secret(data)
        elif "url" in key:
            register_url_secrets(data)


def register_settings_secrets(settings: Settings) -> None:
    """Register every secret of validated settings (from the file, the environment or a secret file)."""
    if settings.mm.api_key is not None:
        register_secret(settings.mm.api_key.get_secret_value())
    for db in (settings.state, settings.source, settings.writeback.database):
        if db is None:
            continue
        register_url_secrets(db.url)
        if db.password is not None:
            register_secret(db.password.get_secret_value())
        password = make_url(db.url).password
        if password:
            register_secret(str(password))


def redact(data: Any, model: Any) -> Any:
    """`data` (a model's JSON dump) with the model's secrets masked and every URL scrubbed."""
    if isinstance(model, DatabaseSettings) and isinstance(data, dict):
        data = {**data, "url": model.redacted_url()}
    if isinstance(model, BaseModel) and isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            attr = getattr(model, key, None)
            if isinstance(attr, SecretStr):
                out[key] = REDACTED
            else:
                out[key] = redact(value, attr)
        return out
    if isinstance(data, str):
        return scrub(data)
    return data
