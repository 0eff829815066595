"""The Dockerfile and docker-compose.yml, parsed (no Docker engine here): the properties we rely on,
and every erpsync command, option and ERPSYNC_* variable they use exists in our CLI and config.
The demo ERP they ship is loaded into a real PostgreSQL and read with the demo configuration.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import typer.main
import yaml
from pydantic import BaseModel
from sqlalchemy import create_engine

from erpsync.adapters.erp.factory import open_source
from erpsync.cli.app import app
from erpsync.config import CONFIG_ENV_VAR, ServiceSettings, Settings, load_settings
from erpsync.domain.model import BadRecord, JobOperationRun, RunState

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "docs" / "deploy" / "demo"


# --- a small Dockerfile parser ----------------------------------------------------------------------


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.image} has no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, `${VAR}` resolved, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def env_pairs(instruction: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(instruction))


# --- what our CLI and config accept ------------------------------------------------------------------

ROOT_COMMAND = typer.main.get_command(app)


def cli_envvars() -> set[str]:
    found: set[str] = set()

    def walk(command: Any) -> None:
        for param in command.params:
            envvar = param.envvar
            found.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(ROOT_COMMAND)
    return found


def assert_cli_accepts(argv: list[str]) -> None:
    """`erpsync <argv>` names an existing (sub)command, and every --option exists on it."""
    command: Any = ROOT_COMMAND
    options = {opt for p in command.params for opt in p.opts}
    rest = list(argv)
    while rest and not rest[0].startswith("-") and hasattr(command, "commands"):
        assert rest[0] in command.commands, f"erpsync has no command {' '.join(argv)!r}"
        command = command.commands[rest.pop(0)]
        options |= {opt for p in command.params for opt in p.opts}
    assert not hasattr(command, "commands"), f"{' '.join(argv)!r} names a group, not a command"
    for token in rest:
        if token.startswith("--"):
            assert token.split("=", 1)[0] in options, f"erpsync {' '.join(argv)}: unknown option {token}"


def _models(annotation: Any) -> list[type[BaseModel]]:
    if get_origin(annotation) in (Union, type(int | None)):
        return [m for arg in get_args(annotation) for m in _models(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def setting_exists(variable: str) -> bool:
    """ERPSYNC_<SECTION>__<KEY>... names a field of Settings (pydantic-settings' env mapping)."""
    if variable == CONFIG_ENV_VAR:
        return True
    path = variable.removeprefix("ERPSYNC_").lower().split("__")
    models: list[type[BaseModel]] = [Settings]
    for i, part in enumerate(path):
        fields = {name: f for m in models for name, f in m.model_fields.items()}
        if part not in fields:
            return False
        if i == len(path) - 1:
            return True
        models = _models(fields[part].annotation)
    return False


def test_the_checks_themselves_reject_unknown_names() -> None:
    assert setting_exists("ERPSYNC_MM__API_KEY_FILE")
    assert setting_exists("ERPSYNC_SOURCE__GENERIC__TABLE")
    assert not setting_exists("ERPSYNC_MM__API_KEYFILE")
    assert not setting_exists("ERPSYNC_SERVICE__HEALTH_PORT__X")
    with pytest.raises(AssertionError):
        assert_cli_accepts(["serve", "--migrat"])
    with pytest.raises(AssertionError):
        assert_cli_accepts(["sever"])
    with pytest.raises(AssertionError):
        assert_cli_accepts(["db"])


# --- Dockerfile -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def test_dockerfile_is_a_uv_multi_stage_build(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    assert len(stages) >= 3
    build = next(s for s in stages if s.name == "build")
    runtime = stages[-1]
    assert runtime.image == build.image, "the venv only works on the same Python base"
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", runtime.image)

    syncs = [shlex.split(run) for run in build.all("RUN") if "uv sync" in run]
    assert len(syncs) == 2, "dependencies first (cached layer), then the project"
    for tokens in syncs:
        assert {"--locked", "--no-dev"} <= set(tokens)
        extras = {tokens[i + 1] for i, t in enumerate(tokens) if t == "--extra"}
        assert extras == {"postgres", "mysql", "mssql"}
    assert "--no-install-project" in syncs[0]
    assert "--no-install-project" not in syncs[1] and "--no-editable" in syncs[1]
    build_env = {k: v for e in build.all("ENV") for k, v in env_pairs(e).items()}
    assert build_env["UV_COMPILE_BYTECODE"] == "1"
    assert build_env["UV_LINK_MODE"] == "copy"


def test_dockerfile_runtime_stage(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    runtime = stages[-1]
    copies = runtime.all("COPY")
    assert any("--from=build" in c and "/app/.venv" in c for c in copies)
    assert not any("--from=uv" in c for c in copies), "no build tooling in the runtime image"
    assert runtime.all("USER"), "runs as a non-root user"
    user = runtime.last("USER").split(":")[0]
    assert user not in ("root", "0")
    assert runtime.last("STOPSIGNAL") == "SIGTERM"
    healthcheck = runtime.last("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command == ["erpsync", "health"]
    assert json.loads(runtime.last("ENTRYPOINT")) == ["erpsync"]
    assert json.loads(runtime.last("CMD")) == ["serve"]
    assert_cli_accepts(command[1:])
    assert_cli_accepts(json.loads(runtime.last("CMD")))
    env = {k: v for e in runtime.all("ENV") for k, v in env_pairs(e).items()}
    erpsync_vars = [k for k in env if k.startswith("ERPSYNC_")]
    assert erpsync_vars
    for variable in erpsync_vars:
        assert setting_exists(variable), f"Dockerfile sets {variable}, which no setting reads"
    assert env["ERPSYNC_SERVICE__HEALTH_PORT"] in {p.split("/")[0] for p in runtime.last("EXPOSE").split()}


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("pyproject.toml", "uv.lock", "README.md", "erpsync", "migrations"):
        assert needed not in patterns and f"/{needed}" not in patterns
        assert (ROOT / needed).exists()
    assert {".git", ".venv", "tests", "secrets"} <= patterns


# --- docker-compose.yml -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * units[unit]
    return total


def uses_erpsync_image(service: dict[str, Any]) -> bool:
    return service.get("image", "").startswith("erpsync") or "build" in service


def test_compose_service_migrate_and_state_database(compose: dict[str, Any]) -> None:
    services = compose["services"]
    state_db = services["state-db"]
    assert state_db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(state_db["healthcheck"]["test"])

    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["depends_on"]["state-db"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no"

    app_service = services["erpsync"]
    assert app_service["command"] == ["serve"]
    assert app_service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert app_service["restart"] == "unless-stopped"
    assert app_service["init"] is True
    grace = seconds(app_service["stop_grace_period"])
    assert grace > ServiceSettings().stop_grace_seconds + 2, "SIGKILL must never cut a clean stop short"
    assert grace > 10
    env = app_service["environment"]
    assert env["ERPSYNC_STATE__URL"].startswith("postgresql+psycopg://")
    assert "@state-db:" in env["ERPSYNC_STATE__URL"]
    assert ":" not in env["ERPSYNC_STATE__URL"].split("//", 1)[1].split("@", 1)[0], "no password in the URL"


def test_compose_secrets_are_files_read_through_file_settings(compose: dict[str, Any]) -> None:
    defined = compose["secrets"]
    assert all(set(spec) == {"file"} for spec in defined.values())
    app_service = compose["services"]["erpsync"]
    env = app_service["environment"]
    assert env["ERPSYNC_MM__API_KEY_FILE"] == "/run/secrets/mm_api_key"
    assert env["ERPSYNC_STATE__PASSWORD_FILE"] == "/run/secrets/state_db_password"
    for name, service in compose["services"].items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(defined), f"{name} uses an undefined secret"
        for key, value in (service.get("environment") or {}).items():
            if str(value).startswith("/run/secrets/"):
                assert key.endswith(("_FILE", "_file")), (
                    f"{name}.{key} passes a secret path to a non-file key"
                )
                assert value.removeprefix("/run/secrets/") in mounted, f"{name}.{key}: secret not mounted"
            if "demo" not in service.get("profiles", []):  # the demo's values are demo values
                assert not re.search(r"(API_KEY|PASSWORD)$", key), (
                    f"{name}.{key}: secrets go in files, not environment values"
                )


def test_every_erpsync_command_and_variable_in_compose_exists(compose: dict[str, Any]) -> None:
    envvars = cli_envvars()
    checked = 0
    for name, service in compose["services"].items():
        if not uses_erpsync_image(service):
            continue
        command = service.get("command", ["serve"])
        assert isinstance(command, list), f"{name}: use the exec (list) form"
        assert_cli_accepts(command)
        healthcheck = service.get("healthcheck", {}).get("test", [])
        if healthcheck[:2] == ["CMD", "erpsync"]:
            assert_cli_accepts(healthcheck[2:])
        for variable in service.get("environment") or {}:
            if variable.startswith("ERPSYNC_"):
                assert setting_exists(variable) or variable in envvars, (
                    f"{name}: {variable} is read by nothing"
                )
                checked += 1
    assert checked >= 5


def test_demo_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    demo = {name for name, s in services.items() if "demo" in s.get("profiles", [])}
    assert {"simulator", "demo-erp", "erpsync-demo"} <= demo
    assert not {"state-db", "migrate", "erpsync"} & demo, "the production services have no profile"
    assert services["simulator"]["command"][0] == "simulator"
    assert services["erpsync-demo"]["depends_on"]["simulator"]["condition"] == "service_healthy"
    assert services["erpsync-demo"]["depends_on"]["demo-erp"]["condition"] == "service_healthy"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./docs/"):  # files we ship (./erpsync.toml is the user's own)
                assert (ROOT / source).exists(), f"compose mounts {source}, which is not in the repository"


def test_demo_config_matches_the_compose_demo(compose: dict[str, Any]) -> None:
    settings = load_settings(DEMO / "erpsync-demo.toml")
    services = compose["services"]
    assert not settings.missing_for_service()
    sim_port = services["simulator"]["command"][services["simulator"]["command"].index("--port") + 1]
    assert settings.mm.base_url == f"http://simulator:{sim_port}"
    assert settings.mm.api_key is not None
    assert (
        settings.mm.api_key.get_secret_value() == services["simulator"]["environment"]["ERPSYNC_SIM_API_KEY"]
    )
    erp_env = services["demo-erp"]["environment"]
    assert settings.source is not None
    assert settings.source.url.endswith(f"@demo-erp:5432/{erp_env['POSTGRES_DB']}")
    assert "/erpsync_state" in settings.state.url
    init_sql = (DEMO / "erp-init" / "01-state-database.sql").read_text(encoding="utf-8")
    assert "CREATE DATABASE erpsync_state" in init_sql


def test_demo_erp_is_read_by_the_demo_config(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql((DEMO / "erp-init" / "02-erp-tables.sql").read_text(encoding="utf-8"))
    finally:
        engine.dispose()
    monkeypatch.setenv("ERPSYNC_SOURCE__URL", pg_url)
    settings = load_settings(DEMO / "erpsync-demo.toml")
    assert settings.source is not None
    source = open_source(settings.source)
    try:
        snapshot = source.read_runs()
        assert snapshot is not None
        items = list(snapshot)
        operations = list(source.read_operations())
    finally:
        source.close()
    assert not [i for i in items if isinstance(i, BadRecord)]
    runs = {i.run_key: i.state for i in items if isinstance(i, JobOperationRun)}
    assert runs == {
        "W1001-10-1": RunState.PRODUCTION,
        "W1002-10-1": RunState.SETUP,
        "W1003-10-1": RunState.ENDED,
    }
    assert not [o for o in operations if isinstance(o, BadRecord)]
    assert len(operations) >= 3


def test_dockerfile_python_is_the_tested_python(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """The image runs the Python the project is typed and tested for: requires-python's floor."""
    _, stages = dockerfile
    image_version = re.fullmatch(r"python:(3\.\d+)-slim(-\w+)?", stages[-1].image)
    assert image_version, stages[-1].image
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    floor = re.fullmatch(r">=\s*(3\.\d+)", pyproject["project"]["requires-python"])
    assert floor, pyproject["project"]["requires-python"]
    assert image_version.group(1) == floor.group(1) == pyproject["tool"]["mypy"]["python_version"]
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + floor.group(1).replace(".", "")


def test_dockerfile_builds_from_a_mirror() -> None:
    """Every image it pulls is a build arg, and no `# syntax=` line makes BuildKit fetch a frontend."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert not re.search(r"^#\s*syntax\s*=", text, flags=re.MULTILINE | re.IGNORECASE)
    args = re.findall(r"^ARG (\w+)=", text, flags=re.MULTILINE)
    assert {"PYTHON_BASE", "UV_IMAGE"} <= set(args)
    for source in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE):
        assert re.fullmatch(r"\$\{(PYTHON_BASE|UV_IMAGE)\}", source), f"FROM {source} is not a build arg"
    copied = re.findall(r"COPY --from=(\S+)", text)
    stage_names = set(re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.MULTILINE))
    assert set(copied) <= stage_names, "COPY --from an image would bypass the build args"


def test_compose_says_who_must_read_the_secret_files(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """The uid named in docker-compose.yml's secrets note is the image's user."""
    _, stages = dockerfile
    uid = stages[-1].last("USER").split(":")[0]
    header = (ROOT / "docker-compose.yml").read_text(encoding="utf-8").split("\nname:", 1)[0]
    assert f"erpsync runs as uid {uid}" in header
    assert "chmod 444 secrets/*.txt" in header
