"""Loading the configuration: the TOML file and ``ERPSYNC_*`` variables, checked, secrets registered.

Every failure is a ConfigError whose message says what to fix, secrets scrubbed.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import ValidationError

from erpsync.config.messages import format_validation_error
from erpsync.config.secrets import register_raw_secrets, register_settings_secrets
from erpsync.config.settings import Settings
from erpsync.domain.errors import ConfigError
from erpsync.observability.scrub import scrub

CONFIG_ENV_VAR = "ERPSYNC_CONFIG"


def load_settings(config_file: Path | None = None) -> Settings:
    """Load and validate the configuration, raising ConfigError with a readable message."""
    if config_file is None and os.environ.get(CONFIG_ENV_VAR):
        config_file = Path(os.environ[CONFIG_ENV_VAR])
    where = str(config_file) if config_file else "the environment"
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist (from --config or {CONFIG_ENV_VAR})")
        try:
            with config_file.open("rb") as fh:
                register_raw_secrets(tomllib.load(fh))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: not valid TOML: {exc}") from None
    register_raw_secrets({k: v for k, v in os.environ.items() if k.startswith("ERPSYNC_")})
    _check_env_sections()
    settings_cls = type("Settings", (Settings,), {"toml_file": config_file})
    try:
        loaded: Settings = settings_cls()
    except ValidationError as exc:
        raise ConfigError(scrub(format_validation_error(exc, where))) from None
    register_settings_secrets(loaded)
    return loaded


def _check_env_sections() -> None:
    """`ERPSYNC_<SECTION>__<KEY>` variables must name a section; pydantic-settings ignores others.

    Without this a typo in the section (`ERPSYNC_STAT__URL`) would silently do nothing.
    """
    sections = set(Settings.model_fields)
    for variable in sorted(os.environ):
        head, nested, _ = variable.upper().removeprefix("ERPSYNC_").partition("__")
        if variable.upper().startswith("ERPSYNC_") and nested and head.lower() not in sections:
            raise ConfigError(
                f"environment variable {variable}: unknown section {head.lower()!r}; expected "
                f"ERPSYNC_<SECTION>__<KEY> with a section of {', '.join(sorted(sections))}"
            )
