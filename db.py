"""PostgreSQL: connections, schema and migrations, the snapshot catalog, record versions, locks.

The only module that imports psycopg2.  Driver errors are translated here, by class and SQLSTATE,
into ``PostgresUnavailable`` (transient: the server or the connection is gone) or ``BackupError``.
Identifiers go through ``psycopg2.sql.Identifier``; values are always parameters.  Bulk record I/O
uses COPY in both directions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator

import numpy as np
import psycopg2
import psycopg2.extras
from psycopg2 import sql

from config import Settings
from errors import BackupError, CollectionBusy, PostgresUnavailable, first_line
from states import COMPLETE, OK
from records import RecordBatch, decode_metadata

log = logging.getLogger(__name__)

csv.field_size_limit(1 << 30)

# SQLSTATE classes/codes that mean "the server or the connection is gone": retry later.
_UNAVAILABLE_CLASSES = ("08",)  # connection exception
_UNAVAILABLE_CODES = {"57P01", "57P02", "57P03", "53300"}  # shutdown, crash, cannot connect now, too many connections

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def translate_error(error: BaseException, what: str) -> BackupError:
    """A psycopg2 error as one of ours, by class and SQLSTATE (never by message text)."""
    code = getattr(error, "pgcode", None)
    if isinstance(error, psycopg2.InterfaceError):
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
class Snapshot:
    snapshot_id: int
    collection_ref: int
    collection: str
    tenant: str
    database: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    records: int | None
    added: int | None
    updated: int | None
    deleted: int | None
    dimension: int | None
    digest: str | None
    chroma_collection_id: str | None
    collection_metadata_json: str | None  # records.encode_metadata form (floats tagged)
    configuration_json: dict | None
    schema_json: dict | None
    server_version: str | None
    health: str | None
    forced: bool
    error: str | None
    health_detail: str | None = None
    accepted: bool = False
    origin_collection: str | None = None
    origin_snapshot_id: int | None = None

    @property
    def healthy(self) -> bool:
        """Taken while the collection's verdict was ``ok`` (or accepted by an operator)."""
        return self.status == COMPLETE and not self.forced and (self.health or OK) == OK

    def as_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "collection": self.collection,
            "tenant": self.tenant,
            "database": self.database,
            "status": self.status,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "records": self.records,
            "added": self.added,
            "updated": self.updated,
            "deleted": self.deleted,
            "dimension": self.dimension,
            "digest": self.digest,
            "chroma_collection_id": self.chroma_collection_id,
            "server_version": self.server_version,
            "health": self.health,
            "forced": self.forced,
            "health_detail": self.health_detail,
            "accepted": self.accepted,
            "origin": ({"collection": self.origin_collection, "snapshot_id": self.origin_snapshot_id}
                       if self.origin_collection else None),
            "error": self.error,
        }


_SNAPSHOT_COLUMNS = """s.snapshot_id, s.collection_ref, c.name, c.tenant, c.database, s.status,
    s.started_at, s.finished_at, s.record_count, s.added, s.updated, s.deleted, s.dimension,
    encode(s.content_digest, 'hex'), s.chroma_collection_id, s.collection_metadata::text,
    s.configuration_json, s.schema_json, s.server_version, s.health, s.forced, s.error,
    s.health_detail, s.accepted, s.origin_collection, s.origin_snapshot_id"""


# SQL twin of Snapshot.healthy (alias s): the snapshots auto-recovery and the shrink baseline use.
_HEALTHY = "NOT s.forced AND coalesce(s.health, 'ok') = 'ok'"


def _snapshot(row: tuple) -> Snapshot:
    return Snapshot(*row)


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
    def for_prefix(cls, prefix: str) -> "Tables":
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
            t=self.records, coll=self.collections, snap=self.snapshots, rest=self.restores,
            sv=self.schema_version, health=self.health, **extra,
        )


def _migrations(tb: Tables) -> list[sql.Composed]:
    """Schema versions 1..n; each is applied once, in order, inside the migration transaction."""
    return [
        tb.fmt(
            """
            CREATE TABLE {coll} (
                collection_ref bigserial PRIMARY KEY,
                tenant text NOT NULL,
                database text NOT NULL,
                name text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                UNIQUE (tenant, database, name)
            );
            CREATE TABLE {snap} (
                snapshot_id bigserial PRIMARY KEY,
                collection_ref bigint NOT NULL REFERENCES {coll} ON DELETE CASCADE,
                status text NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                finished_at timestamptz,
                record_count bigint,
                added bigint,
                updated bigint,
                deleted bigint,
                dimension integer,
                content_digest bytea,
                chroma_collection_id text,
                collection_metadata jsonb,
                configuration_json jsonb,
                schema_json jsonb,
                server_version text,
                health text,
                forced boolean NOT NULL DEFAULT false,
                error text,
                backend_pid integer,
                host text
            );
            CREATE INDEX {snap_idx} ON {snap} (collection_ref, status, snapshot_id DESC);
            CREATE TABLE {t} (
                collection_ref bigint NOT NULL REFERENCES {coll} ON DELETE CASCADE,
                record_id text NOT NULL,
                valid_from bigint NOT NULL,
                valid_to bigint,
                digest bytea NOT NULL,
                embedding bytea NOT NULL,
                document text,
                metadata jsonb,
                uri text,
                PRIMARY KEY (collection_ref, record_id, valid_from)
            );
            -- float32 vectors do not compress: when a row is toasted, store them out of line
            -- without trying.
            ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE EXTERNAL;
            CREATE UNIQUE INDEX {current_idx} ON {t} (collection_ref, record_id) WHERE valid_to IS NULL;
            CREATE TABLE {rest} (
                restore_id bigserial PRIMARY KEY,
                collection_ref bigint REFERENCES {coll} ON DELETE CASCADE,
                snapshot_id bigint REFERENCES {snap} ON DELETE SET NULL,
                source_snapshot_id bigint NOT NULL,
                target text NOT NULL,
                target_server text,
                target_collection_id text,
                status text NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                finished_at timestamptz,
                records bigint,
                verified boolean NOT NULL DEFAULT false,
                trigger text NOT NULL CHECK (trigger IN ('cli', 'auto')),
                reason text,
                error text
            );
            CREATE INDEX {rest_idx} ON {rest} (collection_ref, restore_id DESC);
            """,
            snap_idx=tb.index("snapshots_idx"),
            current_idx=tb.index("current_idx"),
            rest_idx=tb.index("restores_idx"),
        ),
        # 2: verdicts label snapshots (and an operator can accept a new size); restores record the
        # temporary names they use; recovery targets' snapshots say where they came from; every
        # health verdict is kept.
        tb.fmt(
            """
            ALTER TABLE {snap} ADD COLUMN health_detail text,
                ADD COLUMN accepted boolean NOT NULL DEFAULT false,
                ADD COLUMN origin_collection text,
                ADD COLUMN origin_snapshot_id bigint;
            ALTER TABLE {rest} ADD COLUMN temporary_name text, ADD COLUMN aside_name text;
            CREATE TABLE {health} (
                health_id bigserial PRIMARY KEY,
                collection_ref bigint NOT NULL REFERENCES {coll} ON DELETE CASCADE,
                checked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                status text NOT NULL,
                detail text,
                records bigint,
                snapshot_id bigint
            );
            CREATE INDEX {health_idx} ON {health} (collection_ref, health_id DESC);
            """,
            health_idx=tb.index("health_idx"),
        ),
    ]


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
        import pgserver  # only needed when no PostgreSQL server is configured

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            self._server = pgserver.get_server(self.path)
        except Exception as error:  # pgserver raises plain exceptions on start failures
            raise PostgresUnavailable(f"embedded PostgreSQL did not start in {self.path}: {first_line(error)}") from error
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
        return dsn

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class Database:
    """The backup catalog and record store in one PostgreSQL database.

    One instance owns one connection; give each thread its own instance.
    """

    def __init__(self, settings: Settings, embedded_dsn: str | None = None):
        self.settings = settings
        self.tables = Tables.for_prefix(settings.backup_table)
        self._embedded_dsn = embedded_dsn
        self._kwargs = connection_kwargs(settings, embedded_dsn)
        self._conn: Any = None
        self._held_locks: set[tuple[str, str, str]] = set()

    # -- connection -----------------------------------------------------------------------------

    def connect(self) -> "Database":
        if self._conn is None or self._conn.closed:
            with _translated("connect"):
                conn = psycopg2.connect(**self._kwargs)
                conn.set_client_encoding("UTF8")
            self._conn = conn
            self._held_locks.clear()
        return self

    def sibling(self) -> "Database":
        """Another instance on the same database (its own connection, for another thread)."""
        return Database(self.settings, self._embedded_dsn)

    @property
    def conn(self) -> Any:
        return self.connect()._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
        self._conn = None
        self._held_locks.clear()

    def _reset_after_error(self) -> None:
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
        except BaseException:
            self._reset_after_error()
            raise

    def ping(self) -> str:
        with self.transaction("ping") as cur:
            cur.execute("SELECT current_setting('server_version')")
            return cur.fetchone()[0]

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema; safe to run from several processes at once."""
        tb = self.tables
        migrations = _migrations(tb)
        with self.transaction("schema migration") as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(tb.prefix, "migrate"),))
            cur.execute(tb.fmt(
                "CREATE TABLE IF NOT EXISTS {sv} (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            ))
            cur.execute(tb.fmt("SELECT coalesce(max(version), 0) FROM {sv}"))
            current = cur.fetchone()[0]
            for version, statement in enumerate(migrations, start=1):
                if version > current:
                    cur.execute(statement)
                    cur.execute(tb.fmt("INSERT INTO {sv} (version) VALUES (%s)"), (version,))
                    log.info("schema table=%s migrated_to=%d", tb.prefix, version)
        return len(migrations)

    # -- locks ----------------------------------------------------------------------------------

    @contextmanager
    def collection_lock(self, tenant: str, database: str, name: str) -> Iterator[None]:
        """Session-level advisory lock for one collection, across processes and hosts.

        Raises ``CollectionBusy`` at once when another session holds it.  Re-entrant within this
        instance (a restore over its own source takes it once).
        """
        key = (tenant, database, name)
        if key in self._held_locks:
            yield
            return
        args = (_lock_key(self.tables.prefix, tenant, database, name),)
        with self.transaction("taking the collection lock") as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", args)
            acquired = cur.fetchone()[0]
        if not acquired:
            raise CollectionBusy(f"collection {name!r} is busy: another backup or restore of it is running")
        self._held_locks.add(key)
        try:
            yield
        finally:
            self._held_locks.discard(key)
            if self._conn is not None and not self._conn.closed:
                try:
                    with self.transaction("releasing the collection lock") as cur:
                        cur.execute("SELECT pg_advisory_unlock(%s)", args)
                except BackupError:
                    pass  # the connection is gone, and the lock with it

    # -- collections and catalog -----------------------------------------------------------------

    def collection_ref(self, tenant: str, database: str, name: str, *, create: bool = False) -> int | None:
        tb = self.tables
        with self.transaction("looking up the collection") as cur:
            cur.execute(tb.fmt("SELECT collection_ref FROM {coll} WHERE tenant = %s AND database = %s AND name = %s"),
                        (tenant, database, name))
            row = cur.fetchone()
            if row is not None or not create:
                return row[0] if row else None
            cur.execute(tb.fmt(
                "INSERT INTO {coll} (tenant, database, name) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant, database, name) DO UPDATE SET name = EXCLUDED.name RETURNING collection_ref"
            ), (tenant, database, name))
            return cur.fetchone()[0]

    def collection_names(self, tenant: str, database: str) -> list[str]:
        with self.transaction("listing backed-up collections") as cur:
            cur.execute(self.tables.fmt("SELECT name FROM {coll} WHERE tenant = %s AND database = %s ORDER BY name"),
                        (tenant, database))
            return [row[0] for row in cur.fetchall()]

    def fail_stale_runs(self, collection_ref: int | None = None) -> int:
        """Mark ``running`` snapshots whose backend is gone as ``failed`` (a killed backup)."""
        tb = self.tables
        where = sql.SQL("AND collection_ref = %s") if collection_ref is not None else sql.SQL("")
        query = tb.fmt(
            "UPDATE {snap} SET status = 'failed', finished_at = clock_timestamp(), "
            "error = coalesce(error, 'interrupted: the backup process or its connection ended before commit') "
            "WHERE status = 'running' AND (backend_pid IS NULL OR backend_pid NOT IN "
            "(SELECT pid FROM pg_stat_activity WHERE datname = current_database())) {where}",
            where=where,
        )
        with self.transaction("marking stale runs failed") as cur:
            cur.execute(query, (collection_ref,) if collection_ref is not None else ())
            count = cur.rowcount
        if count:
            log.warning("stale_runs_failed count=%d", count)
        return count

    def begin_snapshot(self, collection_ref: int, *, health: str | None, health_detail: str | None = None,
                       accepted: bool = False, origin: tuple[str, int] | None = None,
                       forced: bool = False) -> int:
        """Insert the catalog row as ``running`` in its own transaction; returns its id.

        ``health`` is the verdict the snapshot is taken under; ``origin`` (collection, snapshot)
        says which restore created the collection backed up."""
        origin_collection, origin_snapshot = origin or (None, None)
        with self.transaction("starting the snapshot") as cur:
            cur.execute(self.tables.fmt(
                "INSERT INTO {snap} (collection_ref, status, forced, health, health_detail, accepted, "
                "origin_collection, origin_snapshot_id, backend_pid, host) "
                "VALUES (%s, 'running', %s, %s, %s, %s, %s, %s, pg_backend_pid(), %s) RETURNING snapshot_id"
            ), (collection_ref, forced, health, (health_detail or "")[:2000] or None, accepted, origin_collection,
                origin_snapshot, socket.gethostname()))
            return cur.fetchone()[0]

    def fail_snapshot(self, snapshot_id: int, error: str) -> None:
        with self.transaction("marking the snapshot failed") as cur:
            cur.execute(self.tables.fmt(
                "UPDATE {snap} SET status = 'failed', finished_at = clock_timestamp(), error = %s "
                "WHERE snapshot_id = %s AND status = 'running'"
            ), (error[:2000], snapshot_id))

    @contextmanager
    def snapshot_writer(self, collection_ref: int, snapshot_id: int) -> Iterator["SnapshotWriter"]:
        """One transaction holding every record change of a snapshot and its flip to complete."""
        with self.transaction("writing the snapshot") as cur:
            yield SnapshotWriter(self, cur, collection_ref, snapshot_id)

    def _snapshots_query(self, where: str, order: str = "s.snapshot_id DESC", limit: int | None = None) -> sql.Composed:
        return self.tables.fmt(
            "SELECT " + _SNAPSHOT_COLUMNS + " FROM {snap} s JOIN {coll} c USING (collection_ref) "
            "WHERE " + where + " ORDER BY " + order + ("" if limit is None else f" LIMIT {int(limit)}")
        )

    def list_snapshots(self, tenant: str, database: str, name: str | None = None,
                       limit: int | None = None) -> list[Snapshot]:
        where = "c.tenant = %s AND c.database = %s" + (" AND c.name = %s" if name else "")
        params = (tenant, database, name) if name else (tenant, database)
        with self.transaction("listing snapshots") as cur:
            cur.execute(self._snapshots_query(where, limit=limit), params)
            return [_snapshot(row) for row in cur.fetchall()]

    def get_snapshot(self, snapshot_id: int) -> Snapshot | None:
        with self.transaction("reading a snapshot") as cur:
            cur.execute(self._snapshots_query("s.snapshot_id = %s"), (snapshot_id,))
            row = cur.fetchone()
            return _snapshot(row) if row else None

    def latest_complete(self, collection_ref: int, *, at: datetime | None = None,
                        healthy_only: bool = False) -> Snapshot | None:
        where = "s.collection_ref = %s AND s.status = 'complete'"
        params: list[Any] = [collection_ref]
        if at is not None:
            where += " AND s.finished_at <= %s"
            params.append(at)
        if healthy_only:
            where += " AND " + _HEALTHY
        with self.transaction("finding the latest snapshot") as cur:
            cur.execute(self._snapshots_query(where, limit=1), params)
            row = cur.fetchone()
            return _snapshot(row) if row else None

    # -- record versions ------------------------------------------------------------------------

    def _visible(self, snapshot_id: int | None) -> tuple[str, tuple]:
        if snapshot_id is None:
            return "valid_to IS NULL", ()
        return "valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)", (snapshot_id, snapshot_id)

    def _copy_out(self, query: sql.Composed, params: tuple, what: str) -> Iterator[list[str]]:
        """Stream ``COPY (query) TO STDOUT (FORMAT csv)`` rows with bounded memory.

        A thread runs the COPY into a pipe while the caller parses rows from the other end, so
        PostgreSQL reads ahead while the caller works (e.g. while Chroma indexes a batch).
        """
        conn = self.conn
        cur = conn.cursor()
        copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query).as_string(conn)
        copy_sql = cur.mogrify(copy_sql, params).decode("utf-8")
        read_fd, write_fd = os.pipe()
        reader = io.open(read_fd, "r", encoding="utf-8", newline="")
        writer = io.open(write_fd, "wb")
        failure: list[BaseException] = []

        def pump() -> None:
            try:
                cur.copy_expert(copy_sql, writer, size=1 << 16)
            except BaseException as error:  # handed to the consuming thread
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
                self._reset_after_error()
                error = failure[0]
                if isinstance(error, psycopg2.Error):
                    raise translate_error(error, what) from error
                raise error
            else:
                conn.commit()

    def record_digests(self, collection_ref: int, snapshot_id: int | None = None) -> dict[str, bytes]:
        """record_id -> digest for a snapshot (None: the current versions)."""
        visible, params = self._visible(snapshot_id)
        query = self.tables.fmt(
            "SELECT record_id, encode(digest, 'hex') FROM {t} WHERE collection_ref = %s AND " + visible
        )
        return {row[0]: bytes.fromhex(row[1])
                for row in self._copy_out(query, (collection_ref, *params), "reading record digests")}

    def iter_snapshot_records(self, collection_ref: int, snapshot_id: int, batch_size: int,
                              record_ids: list[str] | None = None) -> Iterator[RecordBatch]:
        """The records of a snapshot (or only ``record_ids`` of it) in batches of at most
        ``batch_size``, streamed by COPY."""
        visible, params = self._visible(snapshot_id)
        if record_ids is not None:
            visible += " AND record_id = ANY(%s)"
            params = (*params, list(record_ids))
        query = self.tables.fmt(
            "SELECT record_id, embedding, document IS NULL, document, metadata, uri IS NULL, uri "
            "FROM {t} WHERE collection_ref = %s AND " + visible
        )
        ids: list[str] = []
        vectors: list[bytes] = []
        documents: list[str | None] = []
        metadatas: list[dict | None] = []
        uris: list[str | None] = []

        def flush() -> RecordBatch:
            blob = b"".join(vectors)
            matrix = np.frombuffer(blob, dtype="<f4").reshape(len(ids), -1) if ids else np.zeros((0, 0), "<f4")
            return RecordBatch(list(ids), matrix, list(documents), list(metadatas), list(uris))

        for rid, emb, doc_null, doc, meta, uri_null, uri in self._copy_out(
                query, (collection_ref, *params), "reading snapshot records"):
            ids.append(rid)
            vectors.append(bytes.fromhex(emb[2:]))  # bytea hex output: \x....
            documents.append(None if doc_null == "t" else doc)
            metadatas.append(decode_metadata(meta))
            uris.append(None if uri_null == "t" else uri)
            if len(ids) >= batch_size:
                yield flush()
                ids.clear(), vectors.clear(), documents.clear(), metadatas.clear(), uris.clear()
        if ids:
            yield flush()

    def vacuum_records(self) -> None:
        """VACUUM (ANALYZE) the record table, so the space of versions closed by UPDATE or
        removed by prune is reused by the next inserts instead of growing the table (a row with
        a 384-d vector stays under PostgreSQL's 2 kB TOAST threshold, so closing a version
        leaves a whole dead row behind).  Runs outside any transaction."""
        conn = self.conn
        try:
            with _translated("vacuuming the record table"):
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(self.tables.fmt("VACUUM (ANALYZE) {t}"))
        except BaseException:
            self._reset_after_error()
            raise
        finally:
            if not conn.closed:
                conn.autocommit = False

    # -- restores -------------------------------------------------------------------------------

    def begin_restore(self, snapshot: Snapshot, target: str, target_server: str, trigger: str,
                      reason: str | None, temporary_name: str | None = None) -> int:
        with self.transaction("recording the restore") as cur:
            cur.execute(self.tables.fmt(
                "INSERT INTO {rest} (collection_ref, snapshot_id, source_snapshot_id, target, target_server, "
                "status, trigger, reason, temporary_name) VALUES (%s, %s, %s, %s, %s, 'running', %s, %s, %s) "
                "RETURNING restore_id"
            ), (snapshot.collection_ref, snapshot.snapshot_id, snapshot.snapshot_id, target, target_server,
                trigger, reason, temporary_name))
            return cur.fetchone()[0]

    def set_restore_aside(self, restore_id: int, aside_name: str | None) -> None:
        """Where an overwrite keeps the replaced target while it swaps (None once it is gone)."""
        with self.transaction("recording the replaced collection") as cur:
            cur.execute(self.tables.fmt("UPDATE {rest} SET aside_name = %s WHERE restore_id = %s"),
                        (aside_name, restore_id))

    def recovery_targets(self, tenant: str, database: str, target_server: str) -> dict[str, dict[str, Any]]:
        """Collections restores created on that server, by name: the newest verified restore into
        each (source collection, snapshot, collection id).  The catalog, not a name pattern, says
        which collections are recovery targets."""
        with self.transaction("listing recovery targets") as cur:
            cur.execute(self.tables.fmt(
                "SELECT DISTINCT ON (r.target) r.target, c.name, r.source_snapshot_id, r.target_collection_id "
                "FROM {rest} r JOIN {coll} c USING (collection_ref) WHERE c.tenant = %s AND c.database = %s "
                "AND r.target_server = %s AND r.status = 'complete' AND r.verified "
                "ORDER BY r.target, r.restore_id DESC"
            ), (tenant, database, target_server))
            return {row[0]: {"collection": row[1], "snapshot_id": row[2], "collection_id": row[3]}
                    for row in cur.fetchall()}

    def work_names(self, tenant: str, database: str, target_server: str) -> set[str]:
        """Names restores use for their own work on that server (a collection being built, or a
        replaced target kept aside): never backed up or checked as collections of their own."""
        with self.transaction("listing restore work collections") as cur:
            cur.execute(self.tables.fmt(
                "SELECT r.temporary_name, r.aside_name FROM {rest} r JOIN {coll} c USING (collection_ref) "
                "WHERE c.tenant = %s AND c.database = %s AND r.target_server = %s "
                "AND (r.temporary_name IS NOT NULL OR r.aside_name IS NOT NULL)"
            ), (tenant, database, target_server))
            return {name for row in cur.fetchall() for name in row if name}

    def finish_restore(self, restore_id: int, *, status: str, records: int | None, verified: bool,
                       error: str | None = None, target_collection_id: str | None = None) -> None:
        with self.transaction("recording the restore result") as cur:
            cur.execute(self.tables.fmt(
                "UPDATE {rest} SET status = %s, finished_at = clock_timestamp(), records = %s, verified = %s, "
                "error = %s, target_collection_id = %s WHERE restore_id = %s"
            ), (status, records, verified, error[:2000] if error else None, target_collection_id, restore_id))

    def last_complete_restore(self, collection_ref: int, target: str, target_server: str) -> dict[str, Any] | None:
        """The newest verified restore of this collection into ``target`` on that server."""
        with self.transaction("finding the last restore") as cur:
            cur.execute(self.tables.fmt(
                "SELECT restore_id, source_snapshot_id, target_collection_id, records FROM {rest} "
                "WHERE collection_ref = %s AND target = %s AND target_server = %s AND status = 'complete' "
                "AND verified ORDER BY restore_id DESC LIMIT 1"
            ), (collection_ref, target, target_server))
            row = cur.fetchone()
        if row is None:
            return None
        return dict(zip(("restore_id", "snapshot_id", "target_collection_id", "records"), row))

    def sample_record_ids(self, collection_ref: int, n: int) -> list[str]:
        """Up to ``n`` random ids of the current versions (the health probe's sample)."""
        with self.transaction("sampling record ids") as cur:
            cur.execute(self.tables.fmt(
                "SELECT record_id FROM {t} WHERE collection_ref = %s AND valid_to IS NULL ORDER BY random() LIMIT %s"
            ), (collection_ref, n))
            return [row[0] for row in cur.fetchall()]

    def record_verdict(self, collection_ref: int, status: str, detail: str, records: int | None,
                       snapshot_id: int | None) -> None:
        """Keep one health verdict (the history ``health --history`` lists)."""
        with self.transaction("recording the health verdict") as cur:
            cur.execute(self.tables.fmt(
                "INSERT INTO {health} (collection_ref, status, detail, records, snapshot_id) "
                "VALUES (%s, %s, %s, %s, %s)"
            ), (collection_ref, status, detail[:2000], records, snapshot_id))

    def health_history(self, tenant: str, database: str, name: str | None = None,
                       limit: int | None = None) -> list[dict[str, Any]]:
        """Verdicts, newest first, with the time each status began (``since``)."""
        where = "c.tenant = %s AND c.database = %s" + (" AND c.name = %s" if name else "")
        params: tuple = (tenant, database, name) if name else (tenant, database)
        with self.transaction("reading the health history") as cur:
            cur.execute(self.tables.fmt(
                "SELECT name, checked_at, status, detail, records, snapshot_id, changed FROM ("
                "  SELECT c.name, h.health_id, h.checked_at, h.status, h.detail, h.records, h.snapshot_id,"
                "    h.status IS DISTINCT FROM lag(h.status) OVER (PARTITION BY h.collection_ref "
                "      ORDER BY h.health_id) AS changed"
                "  FROM {health} h JOIN {coll} c USING (collection_ref) WHERE " + where + ") v "
                "ORDER BY health_id DESC" + ("" if limit is None else f" LIMIT {int(limit)}")
            ), params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def status_since(self, collection_ref: int) -> tuple[str, datetime] | None:
        """The current health status of a collection and when it began."""
        with self.transaction("reading the current health status") as cur:
            cur.execute(self.tables.fmt(
                "WITH latest AS (SELECT status FROM {health} WHERE collection_ref = %s "
                "  ORDER BY health_id DESC LIMIT 1) "
                "SELECT (SELECT status FROM latest), min(checked_at) FROM {health} h WHERE collection_ref = %s "
                "AND health_id > coalesce((SELECT max(health_id) FROM {health} WHERE collection_ref = %s "
                "  AND status <> (SELECT status FROM latest)), 0)"
            ), (collection_ref, collection_ref, collection_ref))
            row = cur.fetchone()
        return (row[0], row[1]) if row and row[0] else None

    def list_restores(self, collection_ref: int, limit: int = 20) -> list[dict[str, Any]]:
        with self.transaction("listing restores") as cur:
            cur.execute(self.tables.fmt(
                "SELECT restore_id, source_snapshot_id, target, target_server, target_collection_id, status, "
                "started_at, finished_at, records, verified, trigger, reason, error FROM {rest} WHERE collection_ref = %s "
                "ORDER BY restore_id DESC LIMIT %s"
            ), (collection_ref, limit))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    # -- retention ------------------------------------------------------------------------------

    def prune_plan(self, collection_ref: int, retention_days: float, min_snapshots: int) -> tuple[list[int], list[int]]:
        """(complete snapshots to delete, failed runs to delete) for one collection: both once older
        than ``retention_days``, but the newest ``min_snapshots`` complete ones and the newest
        ``min_snapshots`` taken while ``ok`` always stay (however many labelled ones are newer), so
        auto-recovery always has its snapshot."""
        with self.transaction("planning the prune") as cur:
            cur.execute(self.tables.fmt(
                "SELECT snapshot_id FROM ("
                "  SELECT snapshot_id, finished_at, row_number() OVER (ORDER BY snapshot_id DESC) AS rank,"
                "    CASE WHEN " + _HEALTHY + " THEN row_number() OVER ("
                "      PARTITION BY " + _HEALTHY + " ORDER BY snapshot_id DESC) END AS ok_rank"
                "  FROM {snap} s WHERE collection_ref = %s AND status = 'complete') ranked "
                "WHERE rank > %s AND coalesce(ok_rank > %s, true) "
                "AND finished_at < clock_timestamp() - make_interval(secs => %s) "
                "ORDER BY snapshot_id"
            ), (collection_ref, min_snapshots, min_snapshots, retention_days * 86400.0))
            expired = [row[0] for row in cur.fetchall()]
            # Failed runs hold no record versions; they stay visible (the operator's record of
            # what went wrong) until they are as old as an expired snapshot.
            cur.execute(self.tables.fmt(
                "SELECT snapshot_id FROM {snap} WHERE collection_ref = %s AND status = 'failed' "
                "AND coalesce(finished_at, started_at) < clock_timestamp() - make_interval(secs => %s) "
                "ORDER BY snapshot_id"
            ), (collection_ref, retention_days * 86400.0))
            failed = [row[0] for row in cur.fetchall()]
        return expired, failed

    def prune(self, collection_ref: int, snapshot_ids: list[int], *, commit: bool = True,
              verdicts_older_than_days: float | None = None) -> int:
        """Delete the snapshots and every record version no remaining complete snapshot sees (and
        health verdicts older than ``verdicts_older_than_days``); returns the number of versions
        deleted (rolled back again when not ``commit``)."""
        tb = self.tables
        with self.transaction("pruning", commit=commit) as cur:
            cur.execute(tb.fmt("DELETE FROM {snap} WHERE collection_ref = %s AND snapshot_id = ANY(%s)"),
                        (collection_ref, snapshot_ids))
            if verdicts_older_than_days is not None:
                cur.execute(tb.fmt(
                    "DELETE FROM {health} WHERE collection_ref = %s "
                    "AND checked_at < clock_timestamp() - make_interval(secs => %s)"
                ), (collection_ref, verdicts_older_than_days * 86400.0))
            cur.execute(tb.fmt(
                "DELETE FROM {t} r WHERE r.collection_ref = %s AND r.valid_to IS NOT NULL AND NOT EXISTS ("
                "  SELECT 1 FROM {snap} s WHERE s.collection_ref = r.collection_ref AND s.status = 'complete'"
                "  AND s.snapshot_id >= r.valid_from AND s.snapshot_id < r.valid_to)"
            ), (collection_ref,))
            return cur.rowcount

    def storage_bytes(self) -> int:
        """Total size (with indexes and TOAST) of every table of this BACKUP_TABLE."""
        names = [self.tables.prefix + suffix
                 for suffix in ("", "_collections", "_snapshots", "_restores", "_schema_version", "_health")]
        with self.transaction("measuring storage") as cur:
            cur.execute("SELECT coalesce(sum(pg_total_relation_size(to_regclass(quote_ident(n)))), 0) "
                        "FROM unnest(%s::text[]) AS n", (names,))
            return int(cur.fetchone()[0])


class SnapshotWriter:
    """Record changes of one snapshot, inside the snapshot's transaction (commit last)."""

    def __init__(self, db: Database, cur: Any, collection_ref: int, snapshot_id: int):
        self._db = db
        self._cur = cur
        self.collection_ref = collection_ref
        self.snapshot_id = snapshot_id
        self.bytes_written = 0

    def close_versions(self, record_ids: Iterable[str]) -> int:
        """End the current version of these records (updated or deleted as of this snapshot)."""
        ids = list(record_ids)
        if not ids:
            return 0
        self._cur.execute(self._db.tables.fmt(
            "UPDATE {t} SET valid_to = %s WHERE collection_ref = %s AND valid_to IS NULL "
            "AND valid_from < %s AND record_id = ANY(%s)"
        ), (self.snapshot_id, self.collection_ref, self.snapshot_id, ids))
        return self._cur.rowcount

    def insert_versions(self, rows: Iterable[tuple[str, bytes, str | None, str | None, str | None, bytes]]) -> int:
        """COPY new versions (id, embedding, document, metadata JSON, uri, digest), valid from now on."""
        prefix = f"{self.collection_ref}\t"
        middle = f"\t{self.snapshot_id}\t\\N\t\\\\x"
        lines = [
            prefix + _copy_text(rid) + middle + digest.hex() + "\t\\\\x" + vector.hex() + "\t"
            + _copy_text(document) + "\t" + _copy_text(meta) + "\t" + _copy_text(uri) + "\n"
            for rid, vector, document, meta, uri, digest in rows
        ]
        if not lines:
            return 0
        payload = "".join(lines).encode("utf-8")
        self.bytes_written += len(payload)
        self._cur.copy_expert(
            self._db.tables.fmt(
                "COPY {t} (collection_ref, record_id, valid_from, valid_to, digest, embedding, document, metadata, uri) "
                "FROM STDIN"
            ).as_string(self._db.conn),
            io.BytesIO(payload),
            size=1 << 20,
        )
        return len(lines)

    def complete(self, *, records: int, added: int, updated: int, deleted: int, dimension: int | None,
                 content_digest: bytes, chroma_collection_id: str, collection_metadata_json: str | None,
                 configuration_json: dict | None, schema_json: dict | None, server_version: str) -> None:
        """Flip the snapshot to complete; committed with the record changes when the block exits."""
        self._cur.execute(self._db.tables.fmt(
            "UPDATE {snap} SET status = 'complete', finished_at = clock_timestamp(), record_count = %s, "
            "added = %s, updated = %s, deleted = %s, dimension = %s, content_digest = %s, "
            "chroma_collection_id = %s, collection_metadata = %s::jsonb, configuration_json = %s, schema_json = %s, "
            "server_version = %s WHERE snapshot_id = %s AND status = 'running'"
        ), (records, added, updated, deleted, dimension, content_digest, chroma_collection_id,
            collection_metadata_json, _jsonb(configuration_json), _jsonb(schema_json), server_version,
            self.snapshot_id))
        if self._cur.rowcount != 1:
            raise BackupError(f"snapshot {self.snapshot_id} is no longer running (marked failed by another process)")


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for these parts (hashtext's 32 bits would let two
    collections collide and report each other busy)."""
    digest = hashlib.blake2b("\0".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _jsonb(value: Any) -> Any:
    return None if value is None else psycopg2.extras.Json(value)
