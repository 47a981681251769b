"""Settings: the environment and ``.env`` parsed once into a frozen ``Settings``.

This is the only module that reads the environment.  Every value is validated here, and a bad
value raises ``ConfigError`` with one line naming the variable and the offending value (a
password or a URL's password is never echoed).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

from errors import ConfigError

# Chroma's own rule for collection names (1.x): 3-512 characters from [a-zA-Z0-9._-], starting and
# ending with an alphanumeric character.
COLLECTION_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{1,510})[A-Za-z0-9]$")
# BACKUP_TABLE is a prefix for several tables (<t>_snapshots, <t>_schema_version, ...): it must be
# a plain lower-case identifier short enough that every derived name fits PostgreSQL's 63 bytes.
TABLE_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")

TRUE_WORDS = {"1", "true", "yes", "on", "y", "t"}
FALSE_WORDS = {"0", "false", "no", "off", "n", "f"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# Every setting the program reads, its default, and its one-line meaning.  ``.env.example`` and
# the README's table are checked against this list by the test suite.
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "DB_NAME": ("chroma_backup", "PostgreSQL database holding the backups"),
    "DB_USER": ("postgres", "PostgreSQL user"),
    "DB_PASSWORD": ("", "PostgreSQL password (never logged)"),
    "DB_HOST": ("", "PostgreSQL host; empty (and no DATABASE_URL) = embedded PostgreSQL under DATA_DIR"),
    "DB_PORT": ("5432", "PostgreSQL port"),
    "DB_SSLMODE": ("", "libpq sslmode (disable, allow, prefer, require, verify-ca, verify-full); empty = libpq default"),
    "DATABASE_URL": ("", "postgresql:// URL; overrides the DB_* parts it contains"),
    "BACKUP_TABLE": ("chroma_data", "record table name; the catalog tables use it as a prefix"),
    "CHROMADB_HOST": ("localhost", "Chroma server host"),
    "CHROMADB_PORT": ("8000", "Chroma server port"),
    "CHROMADB_USE_SSL": ("false", "use https to reach Chroma"),
    "CHROMA_TENANT": ("default_tenant", "Chroma tenant"),
    "CHROMA_DATABASE": ("default_database", "Chroma database(s): one name, a comma-separated list, or * for every database of CHROMA_TENANT"),
    "CHROMA_AUTH_TOKEN": ("", "token sent to Chroma (never logged)"),
    "CHROMA_AUTH_HEADER": ("Authorization", "header carrying the token: Authorization (as Bearer) or X-Chroma-Token"),
    "CHROMA_TIMEOUT_SECONDS": ("60", "timeout of one Chroma HTTP request"),
    "CHROMA_COLLECTION_NAME": ("*", "collection(s) to back up: one name, a comma-separated list, or * for all"),
    "NEW_COLLECTION_NAME": ("{name}_restored", "restore target; {name} is replaced by the source collection's name"),
    "BATCH_SIZE": ("0", "records per Chroma request; 0 = automatic (reads 250; writes the server's maximum batch size)"),
    "READ_WORKERS": ("3", "concurrent Chroma clients reading a collection (backup, verify, restore verification)"),
    "RETENTION_DAYS": ("30", "prune deletes complete snapshots and failed runs older than this many days"),
    "RETENTION_MIN_SNAPSHOTS": ("7", "prune always keeps at least this many complete snapshots per collection"),
    "DATA_DIR": ("./data", "local state: the embedded PostgreSQL lives in DATA_DIR/postgres"),
    "LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    "LOG_FORMAT": ("text", "text or json (one JSON object per line)"),
    "EXPORT_INTERVAL_MINUTES": ("60", "daemon: minutes between scheduled backups (fractions allowed)"),
    "HEALTH_CHECK_INTERVAL_MINUTES": ("20", "daemon: minutes between health checks (fractions allowed)"),
    "HEALTH_MIN_RECORD_RATIO": ("0.5", "health: a count below this fraction of the last snapshot's is 'shrunk'"),
    "HEALTH_CONFIRM_SECONDS": ("30", "health: a failure is re-checked after this many seconds before recovery"),
    "HEALTH_TIMEOUT_SECONDS": ("30", "health: timeout of each step of the health ladder"),
    "HEALTH_SAMPLE_SIZE": ("20", "health: records sampled per check for read-back and self-recall (corrupt when >= 30% of them are not found)"),
    "AUTO_RESTORE": ("true", "restore a missing/corrupt/shrunk collection into NEW_COLLECTION_NAME"),
    "RETRY_MAX_ATTEMPTS": ("5", "attempts for an operation failing with a transient error"),
    "RETRY_MAX_SECONDS": ("120", "total time budget of those retries"),
    "HTTP_PORT": ("9464", "daemon: port of the HTTP server (status page, JSON API, /metrics, /healthz); 0 = off"),
    "HTTP_HOST": ("127.0.0.1", "daemon: address the HTTP server listens on; empty = 127.0.0.1, or 0.0.0.0 inside a container"),
    "API_TOKEN": ("", "bearer token the API's POST endpoints require (never logged); empty = POSTs answer 403"),
    "METRICS_PORT": ("", "old name of HTTP_PORT, used when HTTP_PORT is not set"),
    "HEARTBEAT_FILE": ("", "daemon: file touched each loop turn (the container HEALTHCHECK reads it); empty = DATA_DIR/heartbeat"),
    "UNREACHABLE_SECONDS": ("60", "daemon: /healthz answers 503 once PostgreSQL or Chroma has not answered its probe for this long"),
}


@dataclass(frozen=True)
class Settings:
    db_name: str = "chroma_backup"
    db_user: str = "postgres"
    db_password: str = field(default="", repr=False)
    db_host: str | None = None
    db_port: int = 5432
    db_sslmode: str | None = None
    database_url: str | None = field(default=None, repr=False)
    backup_table: str = "chroma_data"
    chromadb_host: str = "localhost"
    chromadb_port: int = 8000
    chromadb_use_ssl: bool = False
    chroma_tenant: str = "default_tenant"
    chroma_databases: tuple[str, ...] = ("default_database",)
    chroma_auth_token: str | None = field(default=None, repr=False)
    chroma_auth_header: str = "Authorization"
    chroma_timeout_seconds: float = 60.0
    collections: tuple[str, ...] = ("*",)
    new_collection_name: str = "{name}_restored"
    batch_size: int = 0
    read_workers: int = 2
    retention_days: float = 30.0
    retention_min_snapshots: int = 7
    data_dir: str = "./data"
    log_level: str = "INFO"
    log_format: str = "text"
    export_interval_minutes: float = 60.0
    health_check_interval_minutes: float = 20.0
    health_min_record_ratio: float = 0.5
    health_confirm_seconds: float = 30.0
    health_timeout_seconds: float = 30.0
    health_sample_size: int = 20
    auto_restore: bool = True
    retry_max_attempts: int = 5
    retry_max_seconds: float = 120.0
    http_port: int = 9464
    http_host: str = "127.0.0.1"
    api_token: str | None = field(default=None, repr=False)
    heartbeat_file: str | None = None
    unreachable_seconds: float = 60.0

    @property
    def all_collections(self) -> bool:
        return self.collections == ("*",)

    @property
    def all_databases(self) -> bool:
        return self.chroma_databases == ("*",)

    @property
    def several_databases(self) -> bool:
        """Two databases could share a collection name: collections are named database/collection."""
        return self.all_databases or len(self.chroma_databases) > 1

    @property
    def chroma_database(self) -> str:
        """The database a client opens first (the first one named; Chroma's default with *)."""
        return "default_database" if self.all_databases else self.chroma_databases[0]

    @property
    def embedded_postgres(self) -> bool:
        return not self.db_host and not self.database_url

    def target_name(self, source: str) -> str:
        """NEW_COLLECTION_NAME for ``source`` ({name} expanded)."""
        return self.new_collection_name.replace("{name}", source)

    @property
    def heartbeat_path(self) -> str:
        return self.heartbeat_file or os.path.join(self.data_dir, "heartbeat")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit(parts._replace(netloc=userinfo + "@" + netloc[1]))


class _Reader:
    """Reads and validates one variable at a time; every error names the variable and value."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value if value != "" else None

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def optional(self, name: str) -> str | None:
        return self.raw(name)

    def _bad(self, name: str, value: str, expected: str) -> ConfigError:
        return ConfigError(f"{name}: expected {expected}, got {value!r}")

    def integer(self, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        expected = f"an integer >= {low}" if high is None else f"an integer between {low} and {high}"
        try:
            number = int(value)
        except ValueError:
            raise self._bad(name, value, expected) from None
        if number < low or (high is not None and number > high):
            raise self._bad(name, value, expected)
        return number

    def number(self, name: str, default: float, low: float, *, strict_low: bool = False,
               high: float | None = None) -> float:
        value = self.raw(name)
        if value is None:
            return default
        bound = f"> {low:g}" if strict_low else f">= {low:g}"
        expected = f"a number {bound}" + (f" and <= {high:g}" if high is not None else "")
        try:
            number = float(value)
        except ValueError:
            raise self._bad(name, value, expected) from None
        if number != number or number in (float("inf"), float("-inf")):
            raise self._bad(name, value, expected)
        if number < low or (strict_low and number == low) or (high is not None and number > high):
            raise self._bad(name, value, expected)
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        word = value.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise self._bad(name, value, "true or false (also yes/no, on/off, 1/0)")

    def choice(self, name: str, default: str | None, choices: tuple[str, ...], *, upper: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        word = value.upper() if upper else value.lower()
        if word not in choices:
            raise self._bad(name, value, "one of " + ", ".join(choices))
        return word


def validate_collection_name(name: str, variable: str) -> str:
    if not COLLECTION_NAME_RE.match(name):
        raise ConfigError(
            f"{variable}: expected a Chroma collection name (3-512 characters from "
            f"[a-zA-Z0-9._-], starting and ending with a letter or digit), got {name!r}"
        )
    return name


def _collections(value: str) -> tuple[str, ...]:
    if value.strip() == "*":
        return ("*",)
    names = [part.strip() for part in value.split(",")]
    if not names or any(not part for part in names):
        raise ConfigError(f"CHROMA_COLLECTION_NAME: expected a name, a comma-separated list of names or *, got {value!r}")
    for part in names:
        validate_collection_name(part, "CHROMA_COLLECTION_NAME")
    return tuple(dict.fromkeys(names))


DATABASE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _databases(value: str) -> tuple[str, ...]:
    if value.strip() == "*":
        return ("*",)
    names = [part.strip() for part in value.split(",")]
    if any(not DATABASE_NAME_RE.match(part) for part in names):
        raise ConfigError(f"CHROMA_DATABASE: expected a database name, a comma-separated list of names or *, "
                          f"got {value!r}")
    return tuple(dict.fromkeys(names))


def _new_collection_name(value: str) -> str:
    probe = value.replace("{name}", "abc")
    if "{" in probe or "}" in probe or not COLLECTION_NAME_RE.match(probe):
        raise ConfigError(
            "NEW_COLLECTION_NAME: expected a collection name, optionally containing {name}, "
            f"got {value!r}"
        )
    return value


def _database_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("postgres", "postgresql") and (parts.hostname or "host=" in parts.query)
        parts.port  # raises ValueError on a non-numeric port
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"DATABASE_URL: expected postgresql://user:password@host:port/dbname, got {redact_url(value)!r}")
    return value


def in_container() -> bool:
    """Running in a Docker container (its engine creates /.dockerenv): the HTTP server must then
    listen on every interface of the container for a published port to reach it."""
    return os.path.exists("/.dockerenv")


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | None = ".env") -> Settings:
    """Parse ``environ`` (default: ``os.environ``) over the values of ``env_file`` (if it exists).

    Real environment variables win over ``.env``, as with docker compose.
    """
    env: dict[str, str] = {}
    if env_file and os.path.isfile(env_file):
        from dotenv import dotenv_values  # imported here: nothing is read at import time

        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    r = _Reader(env)

    table = r.text("BACKUP_TABLE", "chroma_data")
    if not TABLE_NAME_RE.match(table):
        raise ConfigError(
            "BACKUP_TABLE: expected a plain lower-case identifier (letters, digits, _; at most 48 "
            f"characters, not starting with a digit), got {table!r}"
        )
    token = r.optional("CHROMA_AUTH_TOKEN")
    header = r.text("CHROMA_AUTH_HEADER", "Authorization")
    if header.lower() not in ("authorization", "x-chroma-token"):
        raise ConfigError(f"CHROMA_AUTH_HEADER: expected Authorization or X-Chroma-Token, got {header!r}")
    metrics_port = r.integer("METRICS_PORT", None, 1, 65535)
    http_port = r.integer("HTTP_PORT", metrics_port if metrics_port is not None else 9464, 0, 65535)

    return Settings(
        db_name=r.text("DB_NAME", "chroma_backup"),
        db_user=r.text("DB_USER", "postgres"),
        db_password=env.get("DB_PASSWORD", "") or "",
        db_host=r.optional("DB_HOST"),
        db_port=r.integer("DB_PORT", 5432, 1, 65535),
        db_sslmode=r.choice("DB_SSLMODE", None, SSL_MODES),
        database_url=_database_url(r.optional("DATABASE_URL")),
        backup_table=table,
        chromadb_host=r.text("CHROMADB_HOST", "localhost"),
        chromadb_port=r.integer("CHROMADB_PORT", 8000, 1, 65535),
        chromadb_use_ssl=r.boolean("CHROMADB_USE_SSL", False),
        chroma_tenant=r.text("CHROMA_TENANT", "default_tenant"),
        chroma_databases=_databases(r.text("CHROMA_DATABASE", "default_database")),
        chroma_auth_token=token,
        chroma_auth_header="X-Chroma-Token" if header.lower() == "x-chroma-token" else "Authorization",
        chroma_timeout_seconds=r.number("CHROMA_TIMEOUT_SECONDS", 60.0, 0, strict_low=True),
        collections=_collections(r.text("CHROMA_COLLECTION_NAME", "*")),
        new_collection_name=_new_collection_name(r.text("NEW_COLLECTION_NAME", "{name}_restored")),
        batch_size=r.integer("BATCH_SIZE", 0, 0),
        read_workers=r.integer("READ_WORKERS", 3, 1, 16),
        retention_days=r.number("RETENTION_DAYS", 30.0, 0),
        retention_min_snapshots=r.integer("RETENTION_MIN_SNAPSHOTS", 7, 1),
        data_dir=r.text("DATA_DIR", "./data"),
        log_level=r.choice("LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
        log_format=r.choice("LOG_FORMAT", "text", ("text", "json")),
        export_interval_minutes=r.number("EXPORT_INTERVAL_MINUTES", 60.0, 0, strict_low=True),
        health_check_interval_minutes=r.number("HEALTH_CHECK_INTERVAL_MINUTES", 20.0, 0, strict_low=True),
        health_min_record_ratio=r.number("HEALTH_MIN_RECORD_RATIO", 0.5, 0, high=1),
        health_confirm_seconds=r.number("HEALTH_CONFIRM_SECONDS", 30.0, 0),
        health_timeout_seconds=r.number("HEALTH_TIMEOUT_SECONDS", 30.0, 0, strict_low=True),
        health_sample_size=r.integer("HEALTH_SAMPLE_SIZE", 20, 1, 1000),
        auto_restore=r.boolean("AUTO_RESTORE", True),
        retry_max_attempts=r.integer("RETRY_MAX_ATTEMPTS", 5, 1),
        retry_max_seconds=r.number("RETRY_MAX_SECONDS", 120.0, 0),
        http_port=http_port,
        http_host=r.text("HTTP_HOST", "0.0.0.0" if in_container() else "127.0.0.1"),
        api_token=r.optional("API_TOKEN"),
        heartbeat_file=r.optional("HEARTBEAT_FILE"),
        unreachable_seconds=r.number("UNREACHABLE_SECONDS", 60.0, 0, strict_low=True),
    )
