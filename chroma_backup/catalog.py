"""The catalog's row types: what a snapshot is, as every layer sees it (the PostgreSQL door reads
and writes them; the domain and the callers use them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chroma_backup.states import COMPLETE, OK


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
    configuration_json: dict[str, Any] | None
    schema_json: dict[str, Any] | None
    server_version: str | None
    health: str | None
    forced: bool
    error: str | None
    health_detail: str | None = None
    accepted: bool = False
    origin_collection: str | None = None
    origin_snapshot_id: int | None = None
    replica: str | None = None  # the process that took it (REPLICA_NAME or its host)
    pinned: bool = False  # an operator pinned it: retention never prunes it
    note: str | None = None  # an operator's label ("before the re-index")

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
            "origin": (
                {"collection": self.origin_collection, "snapshot_id": self.origin_snapshot_id}
                if self.origin_collection
                else None
            ),
            "error": self.error,
            "replica": self.replica,
            "pinned": self.pinned,
            "note": self.note,
        }


@dataclass(frozen=True)
class SnapshotAge:
    """What retention needs to know of a snapshot."""

    snapshot_id: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    healthy: bool  # taken while ``ok`` (or accepted): auto-recovery's kind
    pinned: bool = False  # an operator pinned it: never pruned
