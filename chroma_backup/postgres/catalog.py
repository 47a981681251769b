"""The snapshot catalog: collections and their snapshots (the status lifecycle and labels)."""

from __future__ import annotations

import logging
import socket
from datetime import datetime
from typing import Any

from psycopg2 import sql

from chroma_backup.catalog import Snapshot
from chroma_backup.postgres.session import Part

log = logging.getLogger(__name__)


_SNAPSHOT_COLUMNS = """s.snapshot_id, s.collection_ref, c.name, c.tenant, c.database, s.status,
    s.started_at, s.finished_at, s.record_count, s.added, s.updated, s.deleted, s.dimension,
    encode(s.content_digest, 'hex'), s.chroma_collection_id, s.collection_metadata::text,
    s.configuration_json, s.schema_json, s.server_version, s.health, s.forced, s.error,
    s.health_detail, s.accepted, s.origin_collection, s.origin_snapshot_id, s.replica, s.pinned, s.note"""


# SQL twin of Snapshot.healthy (alias s): the snapshots auto-recovery and the shrink baseline use.
_HEALTHY = "NOT s.forced AND coalesce(s.health, 'ok') = 'ok'"


def _snapshot(row: tuple[Any, ...]) -> Snapshot:
    return Snapshot(*row)


class Catalog(Part):
    """Collections (tenant, database, name) and the snapshot rows of their backups."""

    def collection_ref(self, tenant: str, database: str, name: str, *, create: bool = False) -> int | None:
        """The collection's catalog row (made when ``create``); a row once found is remembered for
        this connection's life (rows are never renumbered)."""
        key = (tenant, database, name)
        known = self.session.refs.get(key)
        if known is not None:
            return known
        ref = self._collection_ref(tenant, database, name, create)
        if ref is not None:
            self.session.refs[key] = ref
        return ref

    def _collection_ref(self, tenant: str, database: str, name: str, create: bool) -> int | None:
        tb = self.tables
        with self.transaction("looking up the collection") as cur:
            cur.execute(
                tb.fmt("SELECT collection_ref FROM {coll} WHERE tenant = %s AND database = %s AND name = %s"),
                (tenant, database, name),
            )
            row = cur.fetchone()
            if row is not None or not create:
                return int(row[0]) if row else None
            cur.execute(
                tb.fmt(
                    "INSERT INTO {coll} (tenant, database, name) VALUES (%s, %s, %s) "
                    "ON CONFLICT (tenant, database, name) DO UPDATE SET name = EXCLUDED.name RETURNING collection_ref"
                ),
                (tenant, database, name),
            )
            return int(cur.fetchone()[0])

    def collection_names(self, tenant: str, database: str) -> list[str]:
        with self.transaction("listing backed-up collections") as cur:
            cur.execute(
                self.tables.fmt("SELECT name FROM {coll} WHERE tenant = %s AND database = %s ORDER BY name"),
                (tenant, database),
            )
            return [row[0] for row in cur.fetchall()]

    def database_names(self, tenant: str) -> list[str]:
        """The databases of a tenant that have backups."""
        with self.transaction("listing backed-up databases") as cur:
            cur.execute(
                self.tables.fmt("SELECT DISTINCT database FROM {coll} WHERE tenant = %s ORDER BY database"), (tenant,)
            )
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
        return int(count)

    def begin_snapshot(
        self,
        collection_ref: int,
        *,
        health: str | None,
        health_detail: str | None = None,
        accepted: bool = False,
        origin: tuple[str, int] | None = None,
        note: str | None = None,
    ) -> int:
        """Insert the catalog row as ``running`` in its own transaction; returns its id.

        ``health`` is the verdict the snapshot is taken under; ``origin`` (collection, snapshot)
        says which restore created the collection backed up; ``note`` is an operator's label."""
        origin_collection, origin_snapshot = origin or (None, None)
        with self.transaction("starting the snapshot") as cur:
            cur.execute(
                self.tables.fmt(
                    "INSERT INTO {snap} (collection_ref, status, health, health_detail, accepted, "
                    "origin_collection, origin_snapshot_id, backend_pid, host, replica, note) "
                    "VALUES (%s, 'running', %s, %s, %s, %s, %s, pg_backend_pid(), %s, %s, %s) RETURNING snapshot_id"
                ),
                (
                    collection_ref,
                    health,
                    (health_detail or "")[:2000] or None,
                    accepted,
                    origin_collection,
                    origin_snapshot,
                    socket.gethostname(),
                    self.session.settings.replica,
                    note,
                ),
            )
            return int(cur.fetchone()[0])

    def pin(self, snapshot_id: int, pinned: bool, note: str | None = None) -> bool:
        """Pin (or unpin) a complete snapshot, and set its note when one is given; False when no
        complete snapshot has that id."""
        with self.transaction("pinning the snapshot") as cur:
            cur.execute(
                self.tables.fmt(
                    "UPDATE {snap} SET pinned = %s, note = coalesce(%s, note) WHERE snapshot_id = %s "
                    "AND status = 'complete'"
                ),
                (pinned, note, snapshot_id),
            )
            return bool(cur.rowcount == 1)

    def fail_snapshot(self, snapshot_id: int, error: str) -> None:
        with self.transaction("marking the snapshot failed") as cur:
            cur.execute(
                self.tables.fmt(
                    "UPDATE {snap} SET status = 'failed', finished_at = clock_timestamp(), error = %s "
                    "WHERE snapshot_id = %s AND status = 'running'"
                ),
                (error[:2000], snapshot_id),
            )

    def _snapshots_query(self, where: str, order: str = "s.snapshot_id DESC", limit: int | None = None) -> sql.Composed:
        return self.tables.fmt(
            "SELECT " + _SNAPSHOT_COLUMNS + " FROM {snap} s JOIN {coll} c USING (collection_ref) "
            "WHERE " + where + " ORDER BY " + order + ("" if limit is None else f" LIMIT {int(limit)}")
        )

    def list_snapshots(
        self, tenant: str, database: str, name: str | None = None, limit: int | None = None
    ) -> list[Snapshot]:
        where, params = self.collections_where(tenant, database, name)
        with self.transaction("listing snapshots") as cur:
            cur.execute(self._snapshots_query(where, limit=limit), params)
            return [_snapshot(row) for row in cur.fetchall()]

    def get_snapshot(self, snapshot_id: int) -> Snapshot | None:
        with self.transaction("reading a snapshot") as cur:
            cur.execute(self._snapshots_query("s.snapshot_id = %s"), (snapshot_id,))
            row = cur.fetchone()
            return _snapshot(row) if row else None

    def latest_complete(
        self, collection_ref: int, *, at: datetime | None = None, healthy_only: bool = False
    ) -> Snapshot | None:
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
