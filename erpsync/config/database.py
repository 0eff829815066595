"""Database connections (state, ERP source, write-back target): a URL checked without leaking it."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr, field_validator, model_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from erpsync.config.section import Section, TimeoutSeconds, read_secret_file
from erpsync.observability.scrub import scrub


class DatabaseSettings(Section):
    """A SQLAlchemy database URL plus a password kept out of the URL if you prefer."""

    url: str = "sqlite:///erpsync.db"
    password: SecretStr | None = None
    password_file: Path | None = None
    connect_timeout_seconds: TimeoutSeconds = 10

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
