"""The connection: error translation, connection parameters, the embedded server, ``Session``."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from chroma_backup.errors import BackupError, ConfigError, PostgresUnavailable, first_line
from chroma_backup.settings import Settings

log = logging.getLogger(__name__)

csv.field_size_limit(1 << 30)

# SQLSTATE classes/codes that mean "the server or the connection is gone": retry later.
_UNAVAILABLE_CLASSES = ("08",)  # connection exception
_UNAVAILABLE_CODES = {"57P01", "57P02", "57P03", "53300"}  # shutdown, crash, cannot connect now, too many connections

# A connection idle this long is checked before use (``Session._alive``).
IDLE_CHECK_SECONDS = 10.0

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def translate_error(error: BaseException, what: str) -> BackupError:
    """A psycopg2 error as one of ours, by class and SQLSTATE (never by message text)."""
    code = getattr(error, "pgcode", None)
    if isinstance(error, psycopg2.InterfaceError):
        return PostgresUnavailable(f"PostgreSQL connection lost during {what}: {first_line(error)}")
    if code is None and type(error) is psycopg2.DatabaseError:
        # What psycopg2 raises when the server closed the connection under a statement.
        return PostgresUnavailable(f"PostgreSQL connection lost during {what}: {first_line(error)}")
    if isinstance(error, psycopg2.OperationalError) and (
        code is None or code[:2] in _UNAVAILABLE_CLASSES or code in _UNAVAILABLE_CODES
    ):
        return PostgresUnavailable(f"PostgreSQL unavailable during {what}: {first_line(error)}")
    if code in _UNAVAILABLE_CODES:
        return PostgresUnavailable(f"PostgreSQL unavailable during {what}: {first_line(error)}")
    return BackupError(f"PostgreSQL error during {what} ({code or 'no SQLSTATE'}): {first_line(error)}")


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except psycopg2.Error as error:
        raise translate_error(error, what) from error


@dataclass(frozen=True)
class Tables:
    """The identifiers of every table derived from BACKUP_TABLE."""

    records: sql.Identifier
    collections: sql.Identifier
    snapshots: sql.Identifier
    restores: sql.Identifier
    schema_version: sql.Identifier
    health: sql.Identifier
    prefix: str

    @classmethod
    def for_prefix(cls, prefix: str) -> Tables:
        return cls(
            records=sql.Identifier(prefix),
            collections=sql.Identifier(prefix + "_collections"),
            snapshots=sql.Identifier(prefix + "_snapshots"),
            restores=sql.Identifier(prefix + "_restores"),
            schema_version=sql.Identifier(prefix + "_schema_version"),
            health=sql.Identifier(prefix + "_health"),
            prefix=prefix,
        )

    def index(self, suffix: str) -> sql.Identifier:
        return sql.Identifier(f"{self.prefix}_{suffix}")

    def fmt(self, template: str, **extra: Any) -> sql.Composed:
        return sql.SQL(template).format(
            t=self.records,
            coll=self.collections,
            snap=self.snapshots,
            rest=self.restores,
            sv=self.schema_version,
            health=self.health,
            **extra,
        )


def connection_kwargs(settings: Settings, embedded_dsn: str | None = None) -> dict[str, Any]:
    """libpq connection parameters; DATABASE_URL wins over the DB_* parts it contains."""
    common: dict[str, Any] = {
        "connect_timeout": 10,
        "application_name": "chroma-backup",
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if settings.db_sslmode:
        common["sslmode"] = settings.db_sslmode
    if embedded_dsn is not None:
        return {"dsn": embedded_dsn, "dbname": settings.db_name, **common}
    if settings.database_url:
        return {"dsn": settings.database_url, **common}
    return {
        "host": settings.db_host,
        "port": settings.db_port,
        "dbname": settings.db_name,
        "user": settings.db_user,
        "password": settings.db_password,
        **common,
    }


class EmbeddedPostgres:
    """A PostgreSQL 16 server from the ``pgserver`` wheel, data under DATA_DIR/postgres."""

    def __init__(self, data_dir: str):
        self.path = os.path.abspath(os.path.join(data_dir, "postgres"))
        self._server: Any = None

    def start(self, dbname: str) -> str:
        try:
            import pgserver  # only needed when no PostgreSQL server is configured
        except ImportError:  # the Docker image leaves it out
            raise ConfigError(
                "DB_HOST: expected a PostgreSQL host (or DATABASE_URL): this installation has no "
                "embedded PostgreSQL (pgserver is not installed)"
            ) from None

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            self._server = pgserver.get_server(self.path)  # type: ignore[attr-defined]
        except Exception as error:  # pgserver raises plain exceptions on start failures
            raise PostgresUnavailable(
                f"embedded PostgreSQL did not start in {self.path}: {first_line(error)}"
            ) from error
        dsn = self._server.get_uri()
        with _translated("creating the embedded database"):
            conn = psycopg2.connect(dsn)
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
                    if cur.fetchone() is None:
                        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            finally:
                conn.close()
        log.info("postgres=embedded data_dir=%s database=%s", self.path, dbname)
        return str(dsn)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class Session:
    """One PostgreSQL connection: connect on first use, transactions that roll back on any error
    and drop a broken connection (the next call reconnects), COPY out with bounded memory.  Every
    part of ``Database`` works through one session; give each thread its own."""

    def __init__(self, settings: Settings, embedded_dsn: str | None = None):
        self.settings = settings
        self.tables = Tables.for_prefix(settings.backup_table)
        self._embedded_dsn = embedded_dsn
        self._kwargs = connection_kwargs(settings, embedded_dsn)
        self._conn: Any = None
        self._last_used = 0.0
        self.held_locks: set[tuple[str, str, str]] = set()
        self.refs: dict[tuple[str, str, str], int] = {}  # (tenant, database, name) -> collection_ref, as found

    @property
    def is_open(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connect(self) -> Session:
        if self._conn is None or self._conn.closed:
            with _translated("connect"):
                conn = psycopg2.connect(**self._kwargs)
                conn.set_client_encoding("UTF8")
            self._conn = conn
            self.held_locks.clear()
        return self

    @property
    def conn(self) -> Any:
        return self.connect()._conn

    def _alive(self) -> None:
        """A connection idle for IDLE_CHECK_SECONDS may have been cut while it waited (a
        PostgreSQL restart, a proxy's idle timeout): check it with one round trip and reconnect
        when it is gone, so the caller's next statement never fails for it.  A connection that
        holds advisory locks is never silently replaced (the locks went with it)."""
        if self._conn is None or self._conn.closed or self.held_locks:
            return
        if time.monotonic() - self._last_used < IDLE_CHECK_SECONDS:
            return
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT 1")
            self._conn.rollback()
        except psycopg2.Error:
            log.info("postgres idle connection was closed by the server; reconnecting")
            self.close()

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
        self._conn = None
        self.held_locks.clear()

    def reset_after_error(self) -> None:
        """Roll back, or drop a connection that is broken so the next call reconnects."""
        if self._conn is None or self._conn.closed:
            self._conn = None
            return
        try:
            self._conn.rollback()
        except psycopg2.Error:
            self.close()

    @contextmanager
    def transaction(self, what: str, *, commit: bool = True) -> Iterator[Any]:
        """A cursor in a transaction that commits on success (rolls back if not ``commit``)
        and rolls back on any error."""
        self._alive()
        try:
            with _translated(what):
                cur = self.conn.cursor()
                try:
                    yield cur
                finally:
                    cur.close()
                if commit:
                    self._conn.commit()
                else:
                    self._conn.rollback()
                self._last_used = time.monotonic()
        except BaseException:
            self.reset_after_error()
            raise

    def copy_out(self, query: sql.Composed, params: tuple[Any, ...], what: str) -> Iterator[list[str]]:
        """Stream ``COPY (query) TO STDOUT (FORMAT csv)`` rows with bounded memory.

        A thread runs the COPY into a pipe while the caller parses rows from the other end, so
        PostgreSQL reads ahead while the caller works (e.g. while Chroma indexes a batch).
        """
        conn = self.conn
        cur = conn.cursor()
        copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query).as_string(conn)
        copy_sql = cur.mogrify(copy_sql, params).decode("utf-8")
        read_fd, write_fd = os.pipe()
        reader = open(read_fd, encoding="utf-8", newline="")
        writer = open(write_fd, "wb")
        failure: list[BaseException] = []

        def pump() -> None:
            try:
                cur.copy_expert(copy_sql, writer, size=1 << 16)
            except BaseException as error:  # noqa: BLE001 - handed to the consuming thread, raised there
                failure.append(error)
            finally:
                try:
                    writer.close()
                except OSError:
                    pass

        thread = threading.Thread(target=pump, name="pg-copy-out", daemon=True)
        thread.start()
        finished = False
        try:
            yield from csv.reader(reader)
            finished = True
        finally:
            reader.close()  # an early stop breaks the pipe, which ends the COPY
            thread.join()
            cur.close()
            if not finished:
                self.close()  # the COPY was cut off: never reuse that connection
            elif failure:
                self.reset_after_error()
                error = failure[0]
                if isinstance(error, psycopg2.Error):
                    raise translate_error(error, what) from error
                raise error
            else:
                conn.commit()


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for these parts (hashtext's 32 bits would let two
    collections collide and report each other busy)."""
    digest = hashlib.blake2b("\0".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _jsonb(value: Any) -> Any:
    return None if value is None else psycopg2.extras.Json(value)


class Part:
    """A piece of ``Database`` with one job, working through the shared ``Session``."""

    def __init__(self, session: Session):
        self.session = session

    @property
    def tables(self) -> Tables:
        return self.session.tables

    def transaction(self, what: str, *, commit: bool = True) -> Any:
        return self.session.transaction(what, commit=commit)

    @staticmethod
    def dicts(cur: Any) -> list[dict[str, Any]]:
        """The fetched rows as dicts keyed by column name."""
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @staticmethod
    def collections_where(tenant: str, database: str, name: str | None) -> tuple[str, tuple[Any, ...]]:
        """SQL condition and parameters on {coll} (alias c) for one database, or one collection of it."""
        if name:
            return "c.tenant = %s AND c.database = %s AND c.name = %s", (tenant, database, name)
        return "c.tenant = %s AND c.database = %s", (tenant, database)
