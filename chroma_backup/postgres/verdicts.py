"""Health history: every verdict, and since when a collection's status holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chroma_backup.postgres.catalog import _HEALTHY
from chroma_backup.postgres.session import Part, _jsonb


class HealthLog(Part):
    """One row per health verdict."""

    def record_verdict(
        self,
        collection_ref: int,
        status: str,
        detail: str,
        records: int | None,
        snapshot_id: int | None,
        findings: dict[str, Any] | None = None,
    ) -> None:
        """Keep one health verdict (the history ``health --history`` lists); ``findings``: a deep
        check's counts."""
        with self.transaction("recording the health verdict") as cur:
            cur.execute(
                self.tables.fmt(
                    "INSERT INTO {health} (collection_ref, status, detail, records, snapshot_id, findings) "
                    "VALUES (%s, %s, %s, %s, %s, %s)"
                ),
                (collection_ref, status, detail[:2000], records, snapshot_id, _jsonb(findings)),
            )

    def health_history(
        self, tenant: str, database: str, name: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Verdicts, newest first, with the time each status began (``since``)."""
        where, params = self.collections_where(tenant, database, name)
        with self.transaction("reading the health history") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT name, checked_at, status, detail, records, snapshot_id, changed FROM ("
                    "  SELECT c.name, h.health_id, h.checked_at, h.status, h.detail, h.records, h.snapshot_id,"
                    "    h.status IS DISTINCT FROM lag(h.status) OVER (PARTITION BY h.collection_ref "
                    "      ORDER BY h.health_id) AS changed"
                    "  FROM {health} h JOIN {coll} c USING (collection_ref) WHERE " + where + ") v "
                    "ORDER BY health_id DESC" + ("" if limit is None else f" LIMIT {int(limit)}")
                ),
                params,
            )
            return self.dicts(cur)

    def latest(self, collection_ref: int, *, besides: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The newest verdict of a collection (``besides``: the newest with another status)."""
        with self.transaction("reading the latest health verdict") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT status, detail, records, checked_at, snapshot_id FROM {health} WHERE collection_ref = %s "
                    "AND NOT (status = ANY(%s)) ORDER BY health_id DESC LIMIT 1"
                ),
                (collection_ref, list(besides)),
            )
            row = cur.fetchone()
            return (
                dict(zip(("status", "detail", "records", "checked_at", "snapshot_id"), row, strict=True))
                if row
                else None
            )

    def latest_with_baseline(self, collection_ref: int) -> dict[str, Any] | None:
        """The newest verdict (status, detail, checked_at) with the collection's newest snapshot
        taken while ``ok`` (baseline_id, baseline_records; None when it has none), in one query:
        what a backup labels its snapshot with."""
        with self.transaction("reading the latest verdict and its baseline") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT h.status, h.detail, h.checked_at, b.snapshot_id, b.record_count FROM "
                    "(SELECT status, detail, checked_at FROM {health} WHERE collection_ref = %s "
                    " ORDER BY health_id DESC LIMIT 1) h LEFT JOIN LATERAL "
                    "(SELECT s.snapshot_id, s.record_count FROM {snap} s WHERE s.collection_ref = %s "
                    " AND s.status = 'complete' AND " + _HEALTHY + " ORDER BY s.snapshot_id DESC LIMIT 1) b ON true"
                ),
                (collection_ref, collection_ref),
            )
            row = cur.fetchone()
            keys = ("status", "detail", "checked_at", "baseline_id", "baseline_records")
            return dict(zip(keys, row, strict=True)) if row else None

    def status_since(self, collection_ref: int) -> tuple[str, datetime] | None:
        """The current health status of a collection and when it began."""
        with self.transaction("reading the current health status") as cur:
            cur.execute(
                self.tables.fmt(
                    "WITH latest AS (SELECT status FROM {health} WHERE collection_ref = %s "
                    "  ORDER BY health_id DESC LIMIT 1) "
                    "SELECT (SELECT status FROM latest), min(checked_at) FROM {health} h WHERE collection_ref = %s "
                    "AND health_id > coalesce((SELECT max(health_id) FROM {health} WHERE collection_ref = %s "
                    "  AND status <> (SELECT status FROM latest)), 0)"
                ),
                (collection_ref, collection_ref, collection_ref),
            )
            row = cur.fetchone()
        return (row[0], row[1]) if row and row[0] else None
