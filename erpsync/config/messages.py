"""Validation errors as a person can act on them: one line per problem, naming the key and its origin.

pydantic's own text names neither the environment variable a value came from nor the fix, and may
quote a secret; these messages do both and mask secrets.
"""

from __future__ import annotations

import os

from pydantic import ValidationError

from erpsync.config.secrets import REDACTED
from erpsync.observability.scrub import is_secret_key, scrub


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: the key, the bad value, what is expected."""
    lines = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        variable = env_variable(err["loc"])
        if err["type"] == "extra_forbidden":
            if variable:
                lines.append(
                    f"{key}: unknown key from environment variable {variable}; check its spelling "
                    f"(ERPSYNC_<SECTION>__<KEY>, keys as in erpsync.example.toml)"
                )
                continue
            lines.append(f"{key}: unknown key in {source}; check the spelling against erpsync.example.toml")
            continue
        if err["type"] == "missing":
            lines.append(f"{key}: required key is missing in {source}")
            continue
        shown = REDACTED if is_secret_key(key) else scrub(repr(err.get("input")))
        origin = f" (from environment variable {variable})" if variable else ""
        if isinstance(err.get("input"), dict):
            lines.append(f"{key}: {message}{origin}")
        else:
            lines.append(f"{key}: bad value {shown}{origin}: {message}")
    return "\n".join(lines)


def env_variable(loc: tuple[int | str, ...]) -> str | None:
    """The ERPSYNC_* variable that set the key at `loc` (or a key below it), if one did.

    Environment variables win over the file, so when one names the key, the value came from it.
    Names are matched as pydantic-settings reads them: case-insensitively.
    """
    if not loc:
        return None
    name = ("ERPSYNC_" + "__".join(str(part) for part in loc)).upper()
    matches = sorted(v for v in os.environ if v.upper() == name or v.upper().startswith(name + "__"))
    return matches[0] if matches else None
