"""erpsync's configuration: one TOML file, every key overridable from the environment.

Precedence, highest first: ``ERPSYNC_<SECTION>__<KEY>`` environment variables, the TOML file
(``--config FILE`` or ``ERPSYNC_CONFIG``), then the defaults below, which run an embedded SQLite
state database. Secrets (the MM API key, database passwords) may also come from files
(``*_file`` keys, e.g. Docker secrets under ``/run/secrets``) so they never sit in the TOML file.

Each section owns its keys; ``erpsync.example.toml`` documents every one of them.
"""

from __future__ import annotations

import codecs
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from erpsync.domain.errors import ConfigError
from erpsync.observability.scrub import (
    MASK,
    is_secret_key,
    register_secret,
    register_url_secrets,
    scrub,
)

CONFIG_ENV_VAR = "ERPSYNC_CONFIG"
REDACTED = MASK

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


class DatabaseSettings(Section):
    """A SQLAlchemy database URL plus a password kept out of the URL if you prefer."""

    url: str = "sqlite:///erpsync.db"
    password: SecretStr | None = None
    password_file: Path | None = None
    connect_timeout_seconds: PositiveSeconds = 10

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        try:
            make_url(value)
        except ValueError:
            # never the parser's own message: it quotes a piece of the URL, maybe of its password
            raise ValueError(
                "not a valid URL: is the port a number, and is every special character of the "
                "password percent-encoded (@ as %40, : as %3A, / as %2F, # as %23)?"
            ) from None
        except ArgumentError:
            raise ValueError(
                "not a SQLAlchemy URL; expected e.g. sqlite:///erpsync.db, "
                "postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db, "
                "mssql+pymssql://user@host/db"
            ) from None
        return value

    @model_validator(mode="after")
    def _password_from_file(self) -> DatabaseSettings:
        if self.password is None and self.password_file is not None:
            self.password = read_secret_file(self.password_file, "password_file")
        return self

    def sqlalchemy_url(self) -> URL:
        """The URL to connect with, password merged in."""
        url = make_url(self.url)
        if self.password is not None:
            url = url.set(password=self.password.get_secret_value())
        return url

    def redacted_url(self) -> str:
        """The URL safe to print or log: its password and secret query parameters masked."""
        return scrub(self.url)


class StateSettings(DatabaseSettings):
    """erpsync's own database: bindings, action journal, quarantine, audit, leader lease."""


class MMPaths(Section):
    """Path of each MachineMetrics operation, relative to ``base_url``.

    The job-dispatch paths are documented; the import path is not public (assumed, see
    docs/machinemetrics.md) and the current-docs paths may differ, so every one is configurable.
    """

    start: str = "/erp/jobdispatch/start"
    stop: str = "/erp/jobdispatch/stop"
    get: str = "/erp/jobdispatch/{erpJobOperationRunId}"
    import_jobs: str = "/erp/jobs/import"


class MMSettings(Section):
    """How to reach MachineMetrics and how politely to call it."""

    base_url: str = "https://api.machinemetrics.com"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    paths: MMPaths = MMPaths()
    connect_timeout_seconds: PositiveSeconds = 5
    read_timeout_seconds: PositiveSeconds = 15
    retry_deadline_seconds: PositiveSeconds = 60
    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_initial_seconds: PositiveSeconds = 0.5
    backoff_max_seconds: PositiveSeconds = 30
    rate_limit_per_second: PositiveSeconds = 50
    max_concurrency: int = Field(default=16, ge=1, le=256)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_seconds: PositiveSeconds = 60

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http(s) URL such as https://api.machinemetrics.com")
        if "@" in urlsplit(value).netloc:
            # refused rather than masked: a credential here would travel into logs, audit and
            # action rows with every URL erpsync records
            raise ValueError(
                "must not contain user:password@; put the API key in mm.api_key or mm.api_key_file, "
                "and an authenticating proxy in the HTTPS_PROXY environment variable"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _api_key_from_file(self) -> MMSettings:
        if self.api_key is None and self.api_key_file is not None:
            self.api_key = read_secret_file(self.api_key_file, "mm.api_key_file")
        return self


SourceKind = Literal["infor-visual", "generic-sql", "infor-visual-csv", "infor-ln-csv"]
SQL_SOURCE_KINDS: frozenset[str] = frozenset({"infor-visual", "generic-sql"})
CSV_SOURCE_KINDS: frozenset[str] = frozenset({"infor-visual-csv", "infor-ln-csv"})


class VisualPresetSettings(Section):
    """The ``infor-visual`` SQL preset.

    Labor tickets are runs by ticket TYPE (setup/run types), site and lookback; the status filters
    choose which work orders and operations are imported as jobs (an operator clocked in is a run
    whatever the statuses say). Rules: erpsync/adapters/erp/visual_source.py.
    """

    schema_name: str | None = None
    work_order_statuses: list[str] = ["R", "F"]
    excluded_operation_statuses: list[str] = ["C", "X"]
    setup_ticket_types: list[str] = ["S"]
    run_ticket_types: list[str] = ["R"]
    site_id: str | None = None
    closed_ticket_lookback_hours: int = Field(default=72, ge=1)
    # Between full reads a cycle reads only new tickets (TRANSACTION_ID above a watermark, less this
    # margin: ids commit out of order) and re-reads the open / recently closed ones by id.
    full_read_interval_minutes: int = Field(default=1440, ge=0)  # 0: every cycle is a full read
    transaction_id_margin: int = Field(default=100, ge=0)
    # Extra RUN_TYPE spellings of this site -> a canonical unit, e.g. {"PC/H" = "PCS/HR"}.
    run_type_aliases: dict[str, str] = {}


class GenericMappingSettings(Section):
    """The ``generic-sql`` mapping: a table/view (or a SELECT) and its columns per canonical field."""

    table: str | None = None
    query: str | None = None
    schema_name: str | None = None
    columns: dict[str, str] = {}
    # Unit of the run-time column when no run-unit column is mapped, e.g. "MIN/PC".
    run_time_unit: str | None = None
    setup_time_unit: Literal["hours", "minutes", "seconds"] = "hours"
    # Status value (case-insensitive) -> what it means for the run.
    status_map: dict[str, Literal["not_started", "setup", "production", "ended", "skip"]] = {}
    # A column that increases whenever a row changes (an increasing id or a last-modified time):
    # between full reads a cycle reads only rows above the last value seen (less the margin: ids
    # for a number, seconds for a time) plus the runs still open, by key. None: every read is full.
    watermark: str | None = None
    watermark_margin: float | None = Field(default=None, ge=0)  # None: 100 ids / 300 seconds
    full_read_interval_minutes: int = Field(default=1440, ge=0)

    @model_validator(mode="after")
    def _table_or_query(self) -> GenericMappingSettings:
        if self.table and self.query:
            raise ValueError("set source.generic.table or source.generic.query, not both")
        return self


class CsvSettings(Section):
    """CSV exports: one file, or an inbox folder watched for new files.

    ``header_overrides`` maps a canonical field of the preset (e.g. ``seq``, ``order``) to the
    header text in the file, or to a position as ``column:AP`` / ``column:3``.
    """

    path: Path | None = None
    inbox: Path | None = None
    header_overrides: dict[str, str] = {}
    encoding: str | None = None
    delimiter: str | None = None
    date_order: Literal["mdy", "dmy"] = "mdy"
    # None = decide per file: "," when the delimiter is ";" or a tab, else ".".
    decimal_separator: Literal[",", "."] | None = None
    # Units of time columns that carry no unit of their own (e.g. LN production/setup time).
    run_time_unit: str | None = None
    setup_time_unit: Literal["hours", "minutes", "seconds"] | None = None
    # Status text (case-insensitive) -> meaning; extends/overrides the built-in words.
    status_map: dict[str, Literal["not_started", "setup", "production", "ended", "skip"]] = {}
    # A file is read only once unchanged for this long (it may still be being written).
    settle_seconds: float = Field(default=5, ge=0)

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and value not in (",", ";", "\t", "|"):
            raise ValueError("expected one of ',', ';', '|' or a tab character")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError("unknown encoding; expected e.g. utf-8, utf-8-sig or cp1252") from None
        return value


class SourceSettings(DatabaseSettings):
    """Where job operations come from."""

    url: str = "sqlite:///erp.db"
    name: str = "erp"
    kind: SourceKind = "infor-visual"
    timezone: str = "UTC"
    batch_size: int = Field(default=5000, ge=100, le=100_000)
    visual: VisualPresetSettings = VisualPresetSettings()
    generic: GenericMappingSettings = GenericMappingSettings()
    csv: CsvSettings = CsvSettings()

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone; expected e.g. America/Chicago or UTC") from None
        return value

    @model_validator(mode="after")
    def _query_only_reads(self) -> SourceSettings:
        from erpsync.adapters.erp.readonly_sql import (  # noqa: PLC0415 - see WritebackSettings
            read_only_select_problem,
            without_trailing_semicolon,
        )

        if self.kind == "generic-sql" and self.generic.query:
            problem = read_only_select_problem(self.generic.query, make_url(self.url).get_backend_name())
            if problem:
                raise ValueError(f"source.generic.query: {problem}")
            self.generic.query = without_trailing_semicolon(self.generic.query)
        return self

    @model_validator(mode="after")
    def _csv_kinds_need_a_file(self) -> SourceSettings:
        if self.kind in CSV_SOURCE_KINDS and self.csv.path is None and self.csv.inbox is None:
            raise ValueError(f"source kind {self.kind!r} needs source.csv.path or source.csv.inbox")
        return self


class MachineSettings(Section):
    """ERP resource id → MachineMetrics ``erpMachineId``: identity unless overridden."""

    normalize: Literal["exact", "trim", "trim-casefold"] = "trim"
    overrides: dict[str, str] = {}
    ignore: list[str] = []


class ImportSettings(Section):
    """Job imports (the MM job CSV), uploaded only when their content changed."""

    enabled: bool = False
    mode: Literal["build", "passthrough"] = "build"
    auto_archive: bool = False
    interval_seconds: PositiveSeconds = 900


class SyncSettings(Section):
    """The reconcile-and-dispatch cycle."""

    interval_seconds: PositiveSeconds = 30
    vanished_runs: Literal["stop", "flag"] = "flag"
    max_action_attempts: int = Field(default=8, ge=1)
    in_doubt_after_seconds: PositiveSeconds = 30
    imports: ImportSettings = ImportSettings()


SinkKind = Literal["staging", "visual-labor-ticket", "sql", "csv", "none"]


class WritebackSettings(Section):
    """Part counts from MM written into the ERP."""

    sink: SinkKind = "staging"
    interval_seconds: PositiveSeconds = 60
    settle_window_minutes: int = Field(default=30, ge=0)
    allow_decrease: bool = False
    database: DatabaseSettings | None = None
    staging_table: str = "ERPSYNC_RUN_COUNTS"
    statement: str | None = None
    outbox_dir: Path | None = None
    batch_size: int = Field(default=500, ge=1, le=2000)

    @field_validator("staging_table")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        import re  # noqa: PLC0415 - local: only this class may change in this shared module

        # the name goes into DDL and SQL text, so only [schema.]table made of plain identifiers
        if not re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]{0,127}\.)?[A-Za-z_][A-Za-z0-9_]{0,127}", value):
            raise ValueError(
                "expected a plain table name, optionally schema-qualified, e.g. dbo.ERPSYNC_RUN_COUNTS"
            )
        return value

    @model_validator(mode="after")
    def _sink_needs(self) -> WritebackSettings:
        from erpsync.domain.writeback_rules import (  # noqa: PLC0415 - see _plain_identifier
            SQL_SINK_BINDS,
            sql_bind_names,
            unknown_sql_binds,
        )

        if self.sink == "sql" and not self.statement:
            raise ValueError("writeback.sink = 'sql' needs writeback.statement")
        if self.sink == "sql" and self.statement:
            unknown = unknown_sql_binds(self.statement)
            if unknown:
                raise ValueError(
                    "writeback.statement uses unknown bind name(s) "
                    + ", ".join(f":{name}" for name in unknown)
                    + "; known: "
                    + ", ".join(f":{name}" for name in sorted(SQL_SINK_BINDS))
                )
            if not sql_bind_names(self.statement):
                raise ValueError("writeback.statement has no :name binds; it could not write any count")
        if self.sink == "csv" and self.outbox_dir is None:
            raise ValueError("writeback.sink = 'csv' needs writeback.outbox_dir")
        return self


class ServiceSettings(Section):
    """The long-running service: leader lease, health endpoint, retention."""

    instance_name: str | None = None
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=9108, ge=0, le=65535)
    lease_ttl_seconds: PositiveSeconds = 15
    lease_renew_seconds: PositiveSeconds = 5
    lease_retry_seconds: PositiveSeconds = 2
    job_timeout_seconds: PositiveSeconds = 300
    max_cycle_age_seconds: PositiveSeconds = 600
    audit_retention_days: int = Field(default=395, ge=1)
    # finished run bindings, settled actions, cycles, closed quarantine entries, silent heartbeats
    history_retention_days: int = Field(default=395, ge=1)
    purge_batch_size: int = Field(default=1000, ge=1)
    purge_interval_seconds: PositiveSeconds = 3600
    # On SIGTERM: how long running jobs get to finish before they are abandoned. Keep it below the
    # container's stop timeout (docker stop: 10 s; compose stop_grace_period) so the lease is released.
    stop_grace_seconds: float = Field(default=7, gt=0, le=300)

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> ServiceSettings:
        if self.lease_renew_seconds >= self.lease_ttl_seconds:
            raise ValueError("service.lease_renew_seconds must be smaller than service.lease_ttl_seconds")
        return self


class LoggingSettings(Section):
    """Log level and format: JSON for machines, readable console output on a terminal."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="ERPSYNC_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    state: StateSettings = StateSettings()
    mm: MMSettings = MMSettings()
    source: SourceSettings | None = None
    machines: MachineSettings = MachineSettings()
    sync: SyncSettings = SyncSettings()
    writeback: WritebackSettings = WritebackSettings()
    service: ServiceSettings = ServiceSettings()
    logging: LoggingSettings = LoggingSettings()

    toml_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls.toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _history_outlives_the_lookback(self) -> Settings:
        # a binding purged while its closed ticket is still read would make that run look new
        if self.source is not None and self.source.kind == "infor-visual":
            lookback = self.source.visual.closed_ticket_lookback_hours
            if self.service.history_retention_days * 24 <= lookback:
                raise ValueError(
                    f"service.history_retention_days ({self.service.history_retention_days}) must be "
                    f"longer than source.visual.closed_ticket_lookback_hours ({lookback} h): finished "
                    "runs still read from the ERP keep their bindings"
                )
        return self

    def missing_for_service(self) -> list[str]:
        """Keys the sync service cannot run without, each as a one-line ``key: fix`` message."""
        problems = []
        if self.mm.api_key is None or not self.mm.api_key.get_secret_value():
            problems.append(
                "mm.api_key: required; set it in the config file, as ERPSYNC_MM__API_KEY, "
                "or point mm.api_key_file at a secret file"
            )
        if self.source is None:
            problems.append("source: required; add a [source] section (see erpsync.example.toml)")
        return problems

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets masked, safe to print."""
        data = self.model_dump(mode="json")
        redacted: dict[str, Any] = _redact(data, self)
        return redacted


def _redact(data: Any, model: Any) -> Any:
    if isinstance(model, DatabaseSettings) and isinstance(data, dict):
        data = {**data, "url": model.redacted_url()}
    if isinstance(model, BaseModel) and isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            attr = getattr(model, key, None)
            if isinstance(attr, SecretStr):
                out[key] = REDACTED
            else:
                out[key] = _redact(value, attr)
        return out
    if isinstance(data, str):
        return scrub(data)
    return data


def _format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: the key, the bad value, what is expected."""
    lines = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        variable = _env_variable(err["loc"])
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


def _env_variable(loc: tuple[int | str, ...]) -> str | None:
    """The ERPSYNC_* variable that set the key at `loc` (or a key below it), if one did.

    Environment variables win over the file, so when one names the key, the value came from it.
    Names are matched as pydantic-settings reads them: case-insensitively.
    """
    if not loc:
        return None
    name = ("ERPSYNC_" + "__".join(str(part) for part in loc)).upper()
    matches = sorted(v for v in os.environ if v.upper() == name or v.upper().startswith(name + "__"))
    return matches[0] if matches else None


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
                _register_raw_secrets(tomllib.load(fh))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: not valid TOML: {exc}") from None
    _register_raw_secrets({k: v for k, v in os.environ.items() if k.startswith("ERPSYNC_")})
    _check_env_sections()
    settings_cls = type("Settings", (Settings,), {"toml_file": config_file})
    try:
        loaded: Settings = settings_cls()
    except ValidationError as exc:
        raise ConfigError(scrub(_format_validation_error(exc, where))) from None
    register_settings_secrets(loaded)
    return loaded


def _register_raw_secrets(data: Any, key: str = "") -> None:
    """Register secrets as written, before validation: a value that does not validate is masked too."""
    if isinstance(data, dict):
        for name, value in data.items():
            _register_raw_secrets(value, f"{key}.{name}".lower())
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
