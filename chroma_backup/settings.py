"""Settings: the environment and ``.env`` parsed once into a frozen ``Settings``.

This is the only module that reads the environment.  Every setting is declared once, as a field
of ``Settings`` made by ``setting(...)``: its variable, default, one-line help and parser.
``load_settings`` reads them in that order; ``.env.example`` and the README's table are checked
against them by the test suite.  A bad value raises ``ConfigError`` with one line naming the
variable and the offending value (a password or a URL's password is never echoed).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chroma_backup.cron import Cron, CronError
from chroma_backup.errors import ConfigError

# Chroma's own rule for collection names (1.x): 3-512 characters from [a-zA-Z0-9._-], starting and
# ending with an alphanumeric character.
COLLECTION_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{1,510})[A-Za-z0-9]$")
DATABASE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# BACKUP_TABLE is a prefix for several tables (<t>_snapshots, <t>_schema_version, ...): it must be
# a plain lower-case identifier short enough that every derived name fits PostgreSQL's 63 bytes.
TABLE_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")

TRUE_WORDS = {"1", "true", "yes", "on", "y", "t"}
FALSE_WORDS = {"0", "false", "no", "off", "n", "f"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

Env = Mapping[str, str]
Parse = Callable[[str, "str | None", Env], Any]  # (variable, value or None when unset/empty, whole env)


# -- parsers: each returns the typed value, or raises ConfigError naming the variable ---------------


def _bad(name: str, value: str, expected: str) -> ConfigError:
    return ConfigError(f"{name}: expected {expected}, got {value!r}")


def text(default: str | None) -> Parse:
    return lambda name, value, env: default if value is None else value


def integer(default: int | None, low: int, high: int | None = None) -> Parse:
    expected = f"an integer >= {low}" if high is None else f"an integer between {low} and {high}"

    def parse(name: str, value: str | None, env: Env) -> int | None:
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise _bad(name, value, expected) from None
        if number < low or (high is not None and number > high):
            raise _bad(name, value, expected)
        return number

    return parse


def number(default: float, low: float, *, strict_low: bool = False, high: float | None = None) -> Parse:
    bound = f"> {low:g}" if strict_low else f">= {low:g}"
    expected = f"a number {bound}" + (f" and <= {high:g}" if high is not None else "")

    def parse(name: str, value: str | None, env: Env) -> float:
        if value is None:
            return default
        try:
            result = float(value)
        except ValueError:
            raise _bad(name, value, expected) from None
        if result != result or result in (float("inf"), float("-inf")):
            raise _bad(name, value, expected)
        if result < low or (strict_low and result == low) or (high is not None and result > high):
            raise _bad(name, value, expected)
        return result

    return parse


def boolean(default: bool) -> Parse:
    def parse(name: str, value: str | None, env: Env) -> bool:
        if value is None:
            return default
        word = value.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise _bad(name, value, "true or false (also yes/no, on/off, 1/0)")

    return parse


def choice(default: str | None, choices: tuple[str, ...], *, upper: bool = False) -> Parse:
    def parse(name: str, value: str | None, env: Env) -> str | None:
        if value is None:
            return default
        word = value.upper() if upper else value.lower()
        if word not in choices:
            raise _bad(name, value, "one of " + ", ".join(choices))
        return word

    return parse


def validate_collection_name(name: str, variable: str) -> str:
    if not COLLECTION_NAME_RE.match(name):
        raise ConfigError(
            f"{variable}: expected a Chroma collection name (3-512 characters from "
            f"[a-zA-Z0-9._-], starting and ending with a letter or digit), got {name!r}"
        )
    return name


def _table(name: str, value: str | None, env: Env) -> str:
    table = value or "chroma_data"
    if not TABLE_NAME_RE.match(table):
        raise ConfigError(
            f"{name}: expected a plain lower-case identifier (letters, digits, _; at most 48 "
            f"characters, not starting with a digit), got {table!r}"
        )
    return table


def _collections(name: str, value: str | None, env: Env) -> tuple[str, ...]:
    if value is None or value == "*":
        return ("*",)
    names = [part.strip() for part in value.split(",")]
    if any(not part for part in names):
        raise ConfigError(f"{name}: expected a name, a comma-separated list of names or *, got {value!r}")
    for part in names:
        validate_collection_name(part, name)
    return tuple(dict.fromkeys(names))


def _databases(name: str, value: str | None, env: Env) -> tuple[str, ...]:
    if value is None:
        return ("default_database",)
    if value == "*":
        return ("*",)
    names = [part.strip() for part in value.split(",")]
    if any(not DATABASE_NAME_RE.match(part) for part in names):
        raise ConfigError(f"{name}: expected a database name, a comma-separated list of names or *, got {value!r}")
    return tuple(dict.fromkeys(names))


def _new_collection_name(name: str, value: str | None, env: Env) -> str:
    template = value or "{name}_restored"
    probe = template.replace("{name}", "abc")
    if "{" in probe or "}" in probe or not COLLECTION_NAME_RE.match(probe):
        raise ConfigError(f"{name}: expected a collection name, optionally containing {{name}}, got {template!r}")
    return template


def _cron(name: str, value: str | None, env: Env) -> str | None:
    if value is None:
        return None
    try:
        Cron.parse(value).next_after(datetime.now(timezone.utc))
    except CronError as error:
        raise ConfigError(
            f"{name}: expected a cron expression (minute hour day month weekday), got {value!r}: {error}"
        ) from None
    return value


def _urls(name: str, value: str | None, env: Env) -> tuple[str, ...]:
    """A comma-separated list of webhook URLs (never echoed: they carry tokens)."""
    if value is None:
        return ()
    urls = tuple(part.strip() for part in value.split(",") if part.strip())
    for position, url in enumerate(urls, 1):
        plain = url.removeprefix("slack+")
        parts = urlsplit(plain)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{name}: entry {position} is not an http(s):// or slack+https:// URL (not shown: it may hold a token)"
            )
    return urls


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


def _database_url(name: str, value: str | None, env: Env) -> str | None:
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("postgres", "postgresql") and bool(parts.hostname or "host=" in parts.query)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{name}: expected postgresql://user:password@host:port/dbname, got {redact_url(value)!r}")
    return value


def _password(name: str, value: str | None, env: Env) -> str:
    return env.get(name, "") or ""  # as given: a password may begin or end with spaces


def _auth_header(name: str, value: str | None, env: Env) -> str:
    header = value or "Authorization"
    if header.lower() not in ("authorization", "x-chroma-token"):
        raise ConfigError(f"{name}: expected Authorization or X-Chroma-Token, got {header!r}")
    return "X-Chroma-Token" if header.lower() == "x-chroma-token" else "Authorization"


def _http_port(name: str, value: str | None, env: Env) -> int:
    old = integer(None, 1, 65535)("METRICS_PORT", _present(env, "METRICS_PORT"), env)
    parsed: int = integer(old if old is not None else 9464, 0, 65535)(name, value, env)
    return parsed


def in_container() -> bool:
    """Running in a Docker container (its engine creates /.dockerenv): the HTTP server must then
    listen on every interface of the container for a published port to reach it."""
    return os.path.exists("/.dockerenv")


def _http_host(name: str, value: str | None, env: Env) -> str:
    return value or ("0.0.0.0" if in_container() else "127.0.0.1")


def setting(env: str, default: Any, help: str, parse: Parse, *, shown: str | None = None, secret: bool = False) -> Any:
    """A field of ``Settings``: read from variable ``env`` by ``parse``; ``shown`` is the default
    as the documentation writes it (default: ``default`` itself, empty for None)."""
    doc = (
        shown
        if shown is not None
        else ("" if default is None else str(default).lower() if isinstance(default, bool) else str(default))
    )
    return field(
        default=default,
        repr=not secret,
        metadata={"env": env, "help": help, "parse": parse, "shown": doc, "secret": secret},
    )


# -- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    db_name: str = setting("DB_NAME", "chroma_backup", "PostgreSQL database holding the backups", text("chroma_backup"))
    db_user: str = setting("DB_USER", "postgres", "PostgreSQL user", text("postgres"))
    db_password: str = setting("DB_PASSWORD", "", "PostgreSQL password (never logged)", _password, secret=True)
    db_host: str | None = setting(
        "DB_HOST", None, "PostgreSQL host; empty (and no DATABASE_URL) = embedded PostgreSQL under DATA_DIR", text(None)
    )
    db_port: int = setting("DB_PORT", 5432, "PostgreSQL port", integer(5432, 1, 65535))
    db_sslmode: str | None = setting(
        "DB_SSLMODE",
        None,
        "libpq sslmode (disable, allow, prefer, require, verify-ca, verify-full); empty = libpq default",
        choice(None, SSL_MODES),
    )
    database_url: str | None = setting(
        "DATABASE_URL", None, "postgresql:// URL; overrides the DB_* parts it contains", _database_url, secret=True
    )
    backup_table: str = setting(
        "BACKUP_TABLE", "chroma_data", "record table name; the catalog tables use it as a prefix", _table
    )
    chromadb_host: str = setting("CHROMADB_HOST", "localhost", "Chroma server host", text("localhost"))
    chromadb_port: int = setting("CHROMADB_PORT", 8000, "Chroma server port", integer(8000, 1, 65535))
    chromadb_use_ssl: bool = setting("CHROMADB_USE_SSL", False, "use https to reach Chroma", boolean(False))
    chroma_tenant: str = setting("CHROMA_TENANT", "default_tenant", "Chroma tenant", text("default_tenant"))
    chroma_databases: tuple[str, ...] = setting(
        "CHROMA_DATABASE",
        ("default_database",),
        "Chroma database(s): one name, a comma-separated list, or * for every database of CHROMA_TENANT",
        _databases,
        shown="default_database",
    )
    chroma_auth_token: str | None = setting(
        "CHROMA_AUTH_TOKEN", None, "token sent to Chroma (never logged)", text(None), secret=True
    )
    chroma_auth_header: str = setting(
        "CHROMA_AUTH_HEADER",
        "Authorization",
        "header carrying the token: Authorization (as Bearer) or X-Chroma-Token",
        _auth_header,
    )
    chroma_timeout_seconds: float = setting(
        "CHROMA_TIMEOUT_SECONDS",
        60.0,
        "timeout of one Chroma HTTP request",
        number(60.0, 0, strict_low=True),
        shown="60",
    )
    collections: tuple[str, ...] = setting(
        "CHROMA_COLLECTION_NAME",
        ("*",),
        "collection(s) to back up: one name, a comma-separated list, or * for all",
        _collections,
        shown="*",
    )
    new_collection_name: str = setting(
        "NEW_COLLECTION_NAME",
        "{name}_restored",
        "restore target; {name} is replaced by the source collection's name",
        _new_collection_name,
    )
    batch_size: int = setting(
        "BATCH_SIZE",
        0,
        "records per Chroma request; 0 = automatic (reads 250; writes the server's maximum batch size)",
        integer(0, 0),
    )
    read_workers: int = setting(
        "READ_WORKERS",
        1,
        "concurrent Chroma clients reading a collection (backup, verify, restore verification); 3 reads "
        "fastest, 1 leaves the application's queries room",
        integer(1, 1, 16),
    )
    read_page_size: int = setting(
        "READ_PAGE_SIZE",
        50,
        "records per read request of backups, verify, diff and the deep check (an application's query "
        "waits behind a large one); 0 = BATCH_SIZE's",
        integer(50, 0),
    )
    backup_concurrency: int = setting(
        "BACKUP_CONCURRENCY",
        1,
        "collections backed up at once in a round (each with connections of its own); more helps only with "
        "cores to spare",
        integer(1, 1, 32),
    )
    health_concurrency: int = setting(
        "HEALTH_CONCURRENCY",
        2,
        "collections checked at once in a health round",
        integer(2, 1, 64),
    )
    read_rate_limit: int = setting(
        "READ_RATE_LIMIT",
        0,
        "records per second that backups, verifies and deep checks read from Chroma, all readers together; 0 = off",
        integer(0, 0),
    )
    read_rate_adaptive: bool = setting(
        "READ_RATE_ADAPTIVE",
        True,
        "slow reads down while Chroma answers slower than usual, and back off on HTTP 429/503",
        boolean(True),
    )
    replica_name: str | None = setting(
        "REPLICA_NAME",
        None,
        "this daemon's name in logs, metrics and the catalog (several daemons on one catalog); empty = host name",
        text(None),
    )
    retention_days: float = setting(
        "RETENTION_DAYS",
        30.0,
        "prune keeps every snapshot younger than this many days (0: the KEEP rules alone decide) and deletes "
        "failed runs older",
        number(30.0, 0),
        shown="30",
    )
    retention_min_snapshots: int = setting(
        "RETENTION_MIN_SNAPSHOTS",
        7,
        "prune always keeps at least this many complete snapshots per collection",
        integer(7, 1),
    )
    retention_keep_last: int = setting(
        "RETENTION_KEEP_LAST", 0, "prune also keeps the newest N complete snapshots per collection", integer(0, 0)
    )
    retention_keep_hourly: int = setting(
        "RETENTION_KEEP_HOURLY",
        0,
        "prune also keeps the newest snapshot of each of the newest N hours that have one (UTC)",
        integer(0, 0),
    )
    retention_keep_daily: int = setting(
        "RETENTION_KEEP_DAILY", 0, "as RETENTION_KEEP_HOURLY, per day (UTC)", integer(0, 0)
    )
    retention_keep_weekly: int = setting(
        "RETENTION_KEEP_WEEKLY", 0, "as RETENTION_KEEP_HOURLY, per ISO week", integer(0, 0)
    )
    retention_keep_monthly: int = setting(
        "RETENTION_KEEP_MONTHLY", 0, "as RETENTION_KEEP_HOURLY, per month", integer(0, 0)
    )
    retention_keep_yearly: int = setting(
        "RETENTION_KEEP_YEARLY", 0, "as RETENTION_KEEP_HOURLY, per year", integer(0, 0)
    )
    data_dir: str = setting(
        "DATA_DIR", "./data", "local state: the embedded PostgreSQL lives in DATA_DIR/postgres", text("./data")
    )
    log_level: str = setting(
        "LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL", choice("INFO", LOG_LEVELS, upper=True)
    )
    log_format: str = setting(
        "LOG_FORMAT", "text", "text or json (one JSON object per line)", choice("text", ("text", "json"))
    )
    export_interval_minutes: float = setting(
        "EXPORT_INTERVAL_MINUTES",
        60.0,
        "daemon: minutes between scheduled backups (fractions allowed)",
        number(60.0, 0, strict_low=True),
        shown="60",
    )
    health_check_interval_minutes: float = setting(
        "HEALTH_CHECK_INTERVAL_MINUTES",
        20.0,
        "daemon: minutes between health checks (fractions allowed)",
        number(20.0, 0, strict_low=True),
        shown="20",
    )
    export_schedule: str | None = setting(
        "EXPORT_SCHEDULE",
        None,
        "daemon: when to back up, as a cron expression in UTC (e.g. 5 * * * *); empty = every EXPORT_INTERVAL_MINUTES",
        _cron,
    )
    health_schedule: str | None = setting(
        "HEALTH_SCHEDULE",
        None,
        "daemon: when to check health, as a cron expression in UTC (e.g. */20 * * * *); empty = every "
        "HEALTH_CHECK_INTERVAL_MINUTES",
        _cron,
    )
    deep_check_schedule: str | None = setting(
        "DEEP_CHECK_SCHEDULE",
        None,
        "daemon: when to deep-check, as a cron expression in UTC (e.g. 30 3 * * *); empty = every "
        "DEEP_CHECK_INTERVAL_HOURS",
        _cron,
    )
    schedule_jitter_seconds: float = setting(
        "SCHEDULE_JITTER_SECONDS",
        0.0,
        "daemon: each scheduled run starts up to this many seconds late, at random (several daemons)",
        number(0.0, 0),
        shown="0",
    )
    health_min_record_ratio: float = setting(
        "HEALTH_MIN_RECORD_RATIO",
        0.5,
        "health: a count below this fraction of the last snapshot's is 'shrunk'",
        number(0.5, 0, high=1),
    )
    health_confirm_seconds: float = setting(
        "HEALTH_CONFIRM_SECONDS",
        30.0,
        "health: a failure is re-checked after this many seconds before recovery",
        number(30.0, 0),
        shown="30",
    )
    health_timeout_seconds: float = setting(
        "HEALTH_TIMEOUT_SECONDS",
        30.0,
        "health: timeout of each step of the health ladder",
        number(30.0, 0, strict_low=True),
        shown="30",
    )
    health_sample_size: int = setting(
        "HEALTH_SAMPLE_SIZE",
        20,
        "health: records sampled per check for read-back and self-recall (corrupt when >= 30% of them are not found)",
        integer(20, 1, 1000),
    )
    deep_check_interval_hours: float = setting(
        "DEEP_CHECK_INTERVAL_HOURS",
        24.0,
        "daemon: hours between deep checks (every record read and found by the index; the first one "
        "this long after start); 0 = off",
        number(24.0, 0),
        shown="24",
    )
    deep_check_max_seconds: float = setting(
        "DEEP_CHECK_MAX_SECONDS",
        1800.0,
        "deep check and repair: time budget per collection (a partial check says so); 0 = none",
        number(1800.0, 0),
        shown="1800",
    )
    auto_restore: bool = setting(
        "AUTO_RESTORE", True, "restore a missing/corrupt/shrunk collection into NEW_COLLECTION_NAME", boolean(True)
    )
    auto_repair: bool = setting(
        "AUTO_REPAIR",
        False,
        "daemon: repair a collection in place (repair) when a deep check finds damage, instead of waiting "
        "for an operator",
        boolean(False),
    )
    wiped_server_recovery: str = setting(
        "WIPED_SERVER_RECOVERY",
        "original",
        "when every selected collection with backups is gone at once (a wiped server) and AUTO_RESTORE: "
        "original = one whole-server restore under the original names and databases; per_collection = "
        "each into NEW_COLLECTION_NAME",
        choice("original", ("original", "per_collection")),
    )
    restore_parallel: int = setting(
        "RESTORE_PARALLEL",
        2,
        "collections a whole-server restore (restore --all, wiped-server recovery) restores at once",
        integer(2, 1, 32),
    )
    notify_urls: tuple[str, ...] = setting(
        "NOTIFY_URLS",
        (),
        "daemon: webhook URLs (comma-separated) told of failed, stale and restored backups, unhealthy "
        "collections and pruning; slack+https://... sends Slack's body (never logged)",
        _urls,
        shown="",
        secret=True,
    )
    notify_secret: str | None = setting(
        "NOTIFY_SECRET",
        None,
        "signs every notification: X-Chroma-Backup-Signature: sha256=HMAC of the body (never logged)",
        text(None),
        secret=True,
    )
    on_event_command: str | None = setting(
        "ON_EVENT_COMMAND",
        None,
        "daemon: a command (no shell) run with each notification's JSON on its standard input",
        text(None),
    )
    on_event_timeout_seconds: float = setting(
        "ON_EVENT_TIMEOUT_SECONDS",
        10.0,
        "how long ON_EVENT_COMMAND may run",
        number(10.0, 0, strict_low=True),
        shown="10",
    )
    retry_max_attempts: int = setting(
        "RETRY_MAX_ATTEMPTS", 5, "attempts for an operation failing with a transient error", integer(5, 1)
    )
    retry_max_seconds: float = setting(
        "RETRY_MAX_SECONDS", 120.0, "total time budget of those retries", number(120.0, 0), shown="120"
    )
    http_port: int = setting(
        "HTTP_PORT",
        9464,
        "daemon: port of the HTTP server (status page, JSON API, /metrics, /healthz); 0 = off",
        _http_port,
    )
    http_host: str = setting(
        "HTTP_HOST",
        "127.0.0.1",
        "daemon: address the HTTP server listens on; empty = 127.0.0.1, or 0.0.0.0 inside a container",
        _http_host,
    )
    api_token: str | None = setting(
        "API_TOKEN",
        None,
        "bearer token the API's POST endpoints require (never logged); empty = POSTs answer 403",
        text(None),
        secret=True,
    )
    metrics_port: int | None = setting(
        "METRICS_PORT", None, "old name of HTTP_PORT, used when HTTP_PORT is not set", integer(None, 1, 65535)
    )
    heartbeat_file: str | None = setting(
        "HEARTBEAT_FILE",
        None,
        "daemon: file touched each loop turn (the container HEALTHCHECK reads it); empty = DATA_DIR/heartbeat",
        text(None),
    )
    unreachable_seconds: float = setting(
        "UNREACHABLE_SECONDS",
        60.0,
        "daemon: /healthz answers 503 once PostgreSQL or Chroma has not answered its probe for this long",
        number(60.0, 0, strict_low=True),
        shown="60",
    )

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
    def replica(self) -> str:
        """This process's name among several daemons on one catalog: REPLICA_NAME, or the host's."""
        return self.replica_name or socket.gethostname()

    @property
    def heartbeat_path(self) -> str:
        return self.heartbeat_file or os.path.join(self.data_dir, "heartbeat")


@dataclass(frozen=True)
class Documented:
    """One setting as the documentation shows it."""

    env: str
    default: str
    help: str
    secret: bool


def documented() -> list[Documented]:
    """Every setting, in the table's order: what ``.env.example`` and the README must show."""
    return [
        Documented(f.metadata["env"], f.metadata["shown"], f.metadata["help"], f.metadata["secret"])
        for f in dataclasses.fields(Settings)
    ]


def _present(env: Env, name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | None = ".env") -> Settings:
    """Parse ``environ`` (default: ``os.environ``) over the values of ``env_file`` (if it exists).

    Real environment variables win over ``.env``, as with docker compose.
    """
    env: dict[str, str] = {}
    if env_file and os.path.isfile(env_file):
        from dotenv import dotenv_values  # imported here: nothing is read at import time

        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    values = {
        f.name: f.metadata["parse"](f.metadata["env"], _present(env, f.metadata["env"]), env)
        for f in dataclasses.fields(Settings)
    }
    return Settings(**values)
