"""The restore log: every restore, its temporary names, and which collections restores created."""

from __future__ import annotations

from typing import Any

from chroma_backup.catalog import Snapshot
from chroma_backup.postgres.session import Part, _jsonb
from chroma_backup.states import MISSING, PRESENT


class RestoreLog(Part):
    """One row per restore (source snapshot, target, status, verified, trigger)."""

    def begin_restore(
        self,
        snapshot: Snapshot,
        target: str,
        target_server: str,
        trigger: str,
        reason: str | None,
        temporary_name: str | None = None,
        target_database: str | None = None,
        kind: str = "restore",
    ) -> int:
        """``kind``: ``restore`` (a collection re-created), ``repair`` or ``records`` (records written
        back into a live collection)."""
        with self.transaction("recording the restore") as cur:
            cur.execute(
                self.tables.fmt(
                    "INSERT INTO {rest} (collection_ref, snapshot_id, source_snapshot_id, target, target_server, "
                    "target_database, status, trigger, reason, temporary_name, backend_pid, kind, replica) "
                    "VALUES (%s, %s, %s, %s, %s, %s, 'running', %s, %s, %s, pg_backend_pid(), %s, %s) "
                    "RETURNING restore_id"
                ),
                (
                    snapshot.collection_ref,
                    snapshot.snapshot_id,
                    snapshot.snapshot_id,
                    target,
                    target_server,
                    target_database or snapshot.database,
                    trigger,
                    reason,
                    temporary_name,
                    kind,
                    self.session.settings.replica,
                ),
            )
            return int(cur.fetchone()[0])

    def set_temporary_id(self, restore_id: int, collection_id: str | None) -> None:
        """The id of the collection the restore is building (None once it is gone or in place)."""
        with self.transaction("recording the restore's working collection") as cur:
            cur.execute(
                self.tables.fmt("UPDATE {rest} SET temporary_collection_id = %s WHERE restore_id = %s"),
                (collection_id, restore_id),
            )

    def fail_stale_restores(self) -> int:
        """Mark ``running`` restores whose process is gone (its PostgreSQL backend has ended) as
        ``failed``, saying so."""
        with self.transaction("marking stale restores failed") as cur:
            cur.execute(
                self.tables.fmt(
                    "UPDATE {rest} SET status = 'failed', finished_at = clock_timestamp(), "
                    "error = coalesce(error, "
                    "'interrupted: the restore process or its connection ended before it finished') "
                    "WHERE status = 'running' AND (backend_pid IS NULL OR backend_pid NOT IN "
                    "(SELECT pid FROM pg_stat_activity WHERE datname = current_database()))"
                )
            )
            return int(cur.rowcount)

    def leftovers(self, tenant: str, database: str, target_server: str) -> list[dict[str, Any]]:
        """Working collections of restores that did not finish (failed, or their process died):
        the name and id of the copy each was building, to be removed."""
        with self.transaction("listing restores' leftovers") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT r.restore_id, r.temporary_name, r.temporary_collection_id FROM {rest} r "
                    "JOIN {coll} c USING (collection_ref) WHERE c.tenant = %s "
                    "AND coalesce(r.target_database, c.database) = %s AND r.target_server = %s "
                    "AND r.status = 'failed' AND r.temporary_collection_id IS NOT NULL"
                ),
                (tenant, database, target_server),
            )
            return self.dicts(cur)

    def set_restore_aside(self, restore_id: int, aside_name: str | None) -> None:
        """Where an overwrite keeps the replaced target while it swaps (None once it is gone)."""
        with self.transaction("recording the replaced collection") as cur:
            cur.execute(
                self.tables.fmt("UPDATE {rest} SET aside_name = %s WHERE restore_id = %s"), (aside_name, restore_id)
            )

    def recovery_targets(self, tenant: str, database: str, target_server: str) -> dict[str, dict[str, Any]]:
        """Collections restores created in that database on that server, by name: the newest
        verified restore into each (source database and collection, snapshot, collection id).
        The catalog, not a name pattern, says which collections are recovery targets."""
        with self.transaction("listing recovery targets") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT DISTINCT ON (r.target) r.target, c.name, r.source_snapshot_id, r.target_collection_id, "
                    "c.database FROM {rest} r JOIN {coll} c USING (collection_ref) WHERE c.tenant = %s "
                    "AND coalesce(r.target_database, c.database) = %s AND r.target_server = %s "
                    "AND r.status = 'complete' AND r.verified AND r.kind = 'restore' "
                    "ORDER BY r.target, r.restore_id DESC"
                ),
                (tenant, database, target_server),
            )
            return {
                row[0]: {"collection": row[1], "snapshot_id": row[2], "collection_id": row[3], "database": row[4]}
                for row in cur.fetchall()
            }

    def work_names(self, tenant: str, database: str, target_server: str) -> set[str]:
        """Names restores use for their own work on that server, left out of backups and health
        checks: a running restore's working copy and the replaced target on its way aside, and a
        replaced target a complete restore kept aside on purpose (recovery keeps the broken one for
        inspection).  A restore that failed hides nothing: whatever its names hold then is data
        (the old collection a failed swap left aside, say) and is backed up like any other."""
        with self.transaction("listing restores' working names") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT CASE WHEN r.status = 'running' THEN r.temporary_name END, "
                    "CASE WHEN r.status IN ('running', 'complete') THEN r.aside_name END "
                    "FROM {rest} r JOIN {coll} c USING (collection_ref) "
                    "WHERE c.tenant = %s AND coalesce(r.target_database, c.database) = %s AND r.target_server = %s "
                    "AND (r.status = 'complete' AND r.aside_name IS NOT NULL "
                    "OR r.status = 'running' AND r.backend_pid IN "
                    "(SELECT pid FROM pg_stat_activity WHERE datname = current_database()))"
                ),
                (tenant, database, target_server),
            )
            return {name for row in cur.fetchall() for name in row if name}

    def restore_events(self, tenant: str, database: str, name: str | None = None) -> list[dict[str, Any]]:
        """Complete restores of a database's collections (or of one), oldest first."""
        where, params = self.collections_where(tenant, database, name)
        with self.transaction("listing restores") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT c.name, r.finished_at, r.source_snapshot_id, r.target, r.trigger, r.kind, r.records "
                    "FROM {rest} r "
                    "JOIN {coll} c USING (collection_ref) WHERE r.status = 'complete' AND "
                    + where
                    + " ORDER BY r.restore_id"
                ),
                params,
            )
            return self.dicts(cur)

    def recent(self, tenant: str, database: str, limit: int) -> list[dict[str, Any]]:
        """The newest restores of a database's collections."""
        with self.transaction("listing restores") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT r.restore_id, c.name AS collection, r.source_snapshot_id, r.target, r.target_server, "
                    "r.target_database, r.status, r.started_at, r.finished_at, r.records, r.verified, r.trigger, "
                    "r.reason, r.error, r.differences, r.kind, r.counts, r.replica "
                    "FROM {rest} r JOIN {coll} c USING (collection_ref) WHERE c.tenant = %s AND c.database = %s "
                    "ORDER BY r.restore_id DESC LIMIT %s"
                ),
                (tenant, database, limit),
            )
            return self.dicts(cur)

    def finish_restore(
        self,
        restore_id: int,
        *,
        status: str,
        records: int | None,
        verified: bool,
        error: str | None = None,
        target_collection_id: str | None = None,
        differences: list[str] | None = None,
        counts: dict[str, Any] | None = None,
    ) -> None:
        """``differences``: the configuration/schema keys in which a record-identical copy differs
        from the snapshot (None or empty: exact); ``counts``: what a repair or a record-level
        restore found and wrote."""
        with self.transaction("recording the restore result") as cur:
            cur.execute(
                self.tables.fmt(
                    "UPDATE {rest} SET status = %s, finished_at = clock_timestamp(), records = %s, verified = %s, "
                    "error = %s, target_collection_id = %s, differences = %s, counts = %s WHERE restore_id = %s"
                ),
                (
                    status,
                    records,
                    verified,
                    error[:2000] if error else None,
                    target_collection_id,
                    _jsonb(differences or None),
                    _jsonb(counts),
                    restore_id,
                ),
            )

    def restores_since_missing(
        self, collection_ref: int, target_server: str, target_database: str
    ) -> list[dict[str, Any]]:
        """Verified restores of a collection into another collection on that server and database,
        begun after the collection was found missing (the first ``missing`` verdict since it was
        last seen), newest first: where its data went once it was gone.  A copy made while the
        collection was there (a drill, a migration) is not one of them."""
        with self.transaction("finding restores since the collection went missing") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT r.restore_id, r.source_snapshot_id, r.target, r.target_collection_id, "
                    "r.finished_at AT TIME ZONE 'UTC' AS finished_at "
                    "FROM {rest} r JOIN {coll} c USING (collection_ref) "
                    "WHERE r.collection_ref = %s AND r.status = 'complete' AND r.verified AND r.kind = 'restore' "
                    "AND r.target_server = %s "
                    "AND coalesce(r.target_database, c.database) = %s AND r.target <> c.name "
                    "AND r.started_at > (SELECT min(h.checked_at) FROM {health} h WHERE h.collection_ref = %s "
                    "  AND h.status = %s AND h.checked_at > coalesce((SELECT max(p.checked_at) FROM {health} p "
                    "    WHERE p.collection_ref = %s AND p.status IN %s), '-infinity')) "
                    "ORDER BY r.restore_id DESC LIMIT 20"
                ),
                (collection_ref, target_server, target_database, collection_ref, MISSING, collection_ref, PRESENT),
            )
            return self.dicts(cur)

    def list_restores(self, collection_ref: int, limit: int = 20) -> list[dict[str, Any]]:
        with self.transaction("listing restores") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT restore_id, source_snapshot_id, target, target_server, target_collection_id, status, "
                    "started_at, finished_at, records, verified, trigger, reason, error, differences FROM {rest} "
                    "WHERE collection_ref = %s "
                    "ORDER BY restore_id DESC LIMIT %s"
                ),
                (collection_ref, limit),
            )
            return self.dicts(cur)
