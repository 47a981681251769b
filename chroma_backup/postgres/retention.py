"""Retention: which snapshots and failed runs expire, and deleting them with their versions."""

from __future__ import annotations

from chroma_backup.catalog import SnapshotAge
from chroma_backup.postgres.catalog import _HEALTHY
from chroma_backup.postgres.session import Part


class Retention(Part):
    """The snapshots retention plans from, and the prune itself."""

    def snapshot_ages(self, collection_ref: int) -> list[SnapshotAge]:
        """Every complete snapshot and failed run of a collection (what ``core.retention`` plans from)."""
        with self.transaction("reading snapshot ages") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT snapshot_id, status, started_at, finished_at, status = 'complete' AND " + _HEALTHY + ", "
                    "pinned FROM {snap} s WHERE collection_ref = %s AND status IN ('complete', 'failed') "
                    "ORDER BY snapshot_id"
                ),
                (collection_ref,),
            )
            return [SnapshotAge(*row) for row in cur.fetchall()]

    def prune(
        self,
        collection_ref: int,
        snapshot_ids: list[int],
        *,
        commit: bool = True,
        verdicts_older_than_days: float | None = None,
    ) -> int:
        """Delete the snapshots and every record version no remaining complete snapshot sees (and
        health verdicts older than ``verdicts_older_than_days``); returns the number of versions
        deleted (rolled back again when not ``commit``)."""
        tb = self.tables
        with self.transaction("pruning", commit=commit) as cur:
            cur.execute(
                tb.fmt("DELETE FROM {snap} WHERE collection_ref = %s AND snapshot_id = ANY(%s)"),
                (collection_ref, snapshot_ids),
            )
            if verdicts_older_than_days is not None:
                cur.execute(
                    tb.fmt(
                        "DELETE FROM {health} WHERE collection_ref = %s "
                        "AND checked_at < clock_timestamp() - make_interval(secs => %s)"
                    ),
                    (collection_ref, verdicts_older_than_days * 86400.0),
                )
            cur.execute(
                tb.fmt(
                    "DELETE FROM {t} r WHERE r.collection_ref = %s AND r.valid_to IS NOT NULL AND NOT EXISTS ("
                    "  SELECT 1 FROM {snap} s WHERE s.collection_ref = r.collection_ref AND s.status = 'complete'"
                    "  AND s.snapshot_id >= r.valid_from AND s.snapshot_id < r.valid_to)"
                ),
                (collection_ref,),
            )
            return int(cur.rowcount)

    def storage_bytes(self) -> int:
        """Total size (with indexes and TOAST) of every table of this BACKUP_TABLE."""
        names = [
            self.tables.prefix + suffix
            for suffix in ("", "_collections", "_snapshots", "_restores", "_schema_version", "_health")
        ]
        with self.transaction("measuring storage") as cur:
            cur.execute(
                "SELECT coalesce(sum(pg_total_relation_size(to_regclass(quote_ident(n)))), 0) "
                "FROM unnest(%s::text[]) AS n",
                (names,),
            )
            return int(cur.fetchone()[0])
