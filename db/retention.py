"""Retention: which snapshots and failed runs expire, and deleting them with their versions."""

from __future__ import annotations

from db.catalog import _HEALTHY
from db.session import Part


class Retention(Part):
    """The prune plan and the prune itself."""

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
