"""The status page's view model: one row per selected collection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chroma_backup.core.selection import health_targets
from chroma_backup.errors import ChromaUnavailable

if TYPE_CHECKING:
    from chroma_backup.app.operations import Operations


def overview(ops: Operations, schedule: dict[str, str | None]) -> list[dict[str, Any]]:
    """Current health and since when, the last complete snapshot, the last restore, and when the
    next backup and check are due, for every selected collection (the catalog's, while Chroma is
    unreachable)."""
    s, db = ops.settings, ops.db
    try:
        wheres = ops.names.selected(None, health_targets)
    except ChromaUnavailable:
        wheres = ops.names.catalog_targets()
    rows = []
    for where in wheres:
        ref = db.catalog.collection_ref(s.chroma_tenant, where.database, where.name)
        latest = db.verdicts.latest(ref) if ref is not None else None
        since = db.verdicts.status_since(ref) if ref is not None else None
        snap = db.catalog.latest_complete(ref) if ref is not None else None
        restores = db.restores.list_restores(ref, 1) if ref is not None else []
        rows.append(
            {
                "collection": ops.label(where),
                "database": where.database,
                "status": latest["status"] if latest else None,
                "detail": latest["detail"] if latest else None,
                "checked_at": latest["checked_at"].isoformat() if latest else None,
                "since": since[1].isoformat() if since else None,
                "records": latest["records"]
                if latest and latest["records"] is not None
                else (snap.records if snap else None),
                "last_snapshot": {
                    key: value
                    for key, value in snap.as_json().items()
                    if key in ("snapshot_id", "finished_at", "records", "health", "digest", "pinned", "note")
                }
                if snap
                else None,
                "last_restore": {
                    key: restores[0][key]
                    for key in ("restore_id", "source_snapshot_id", "target", "status", "trigger", "finished_at")
                }
                if restores
                else None,
                "next_backup": schedule.get("backup"),
                "next_check": schedule.get("health"),
                "next_deep_check": schedule.get("deep"),
            }
        )
    return rows
