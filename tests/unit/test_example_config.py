"""erpsync.example.toml documents every configuration key and loads as it is."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from erpsync.config import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "erpsync.example.toml"
SECTION = re.compile(r"^#?\s*\[([a-z_.]+)\]")
KEY = re.compile(r"^#?\s*([a-z_]+)\s*=")


def _model_of(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found:
                return found
    return None


def settings_keys(model: type[BaseModel] = Settings, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None:
            keys |= settings_keys(sub, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def documented_keys() -> set[str]:
    keys: set[str] = set()
    section = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if match := SECTION.match(line):
            section = match.group(1) + "."
        elif match := KEY.match(line):
            keys.add(section + match.group(1))
    return keys


def test_every_key_is_documented() -> None:
    missing = settings_keys() - documented_keys()
    assert not missing, f"add these keys to erpsync.example.toml: {sorted(missing)}"


def test_no_documented_key_is_unknown() -> None:
    unknown = documented_keys() - settings_keys()
    assert not unknown, f"erpsync.example.toml documents keys that do not exist: {sorted(unknown)}"


def test_example_loads() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.source is not None and settings.source.kind == "infor-visual"
    assert settings.writeback.sink == "staging"
