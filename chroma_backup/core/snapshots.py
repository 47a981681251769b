"""Which snapshot a restore or verify means, and what it saved of its collection."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from chroma_backup.catalog import Snapshot
from chroma_backup.chroma import CollectionInfo
from chroma_backup.core.compare import StoredLoader
from chroma_backup.core.ports import DatabasePort
from chroma_backup.errors import SnapshotNotFound
from chroma_backup.records import RecordBatch, decode_metadata


def snapshot_info(snapshot: Snapshot) -> CollectionInfo:
    """What a snapshot saved of its collection, in the form ``chroma.py`` re-creates from."""
    return CollectionInfo(
        id=snapshot.chroma_collection_id or "",
        name=snapshot.collection,
        metadata=decode_metadata(snapshot.collection_metadata_json),
        configuration_json=snapshot.configuration_json,
        schema_json=snapshot.schema_json,
        dimension=snapshot.dimension,
        server_version=snapshot.server_version or "",
    )


def resolve_snapshot(
    db: DatabasePort,
    tenant: str,
    database: str,
    name: str,
    *,
    snapshot_id: int | None = None,
    at: datetime | None = None,
    healthy_only: bool = False,
) -> Snapshot:
    """The snapshot a restore or verify means: by id, newest at or before ``at``, or newest."""
    ref = db.catalog.collection_ref(tenant, database, name)
    if ref is None:
        raise SnapshotNotFound(f"no backups of collection {name!r} (tenant {tenant}, database {database})")
    if snapshot_id is not None:
        snapshot = db.catalog.get_snapshot(snapshot_id)
        if snapshot is None or snapshot.collection_ref != ref:
            raise SnapshotNotFound(f"snapshot {snapshot_id} is not a snapshot of collection {name!r}")
        if snapshot.status != "complete":
            raise SnapshotNotFound(f"snapshot {snapshot_id} is {snapshot.status}, not complete")
        return snapshot
    snapshot = db.catalog.latest_complete(ref, at=at, healthy_only=healthy_only)
    if snapshot is None:
        when = f" at or before {at.isoformat()}" if at else ""
        raise SnapshotNotFound(f"no complete snapshot of collection {name!r}{when}")
    return snapshot


def _stored_loader(db: DatabasePort, snapshot: Snapshot) -> StoredLoader:
    def load(record_ids: list[str]) -> Iterable[RecordBatch]:
        return db.records.iter_snapshot_records(
            snapshot.collection_ref, snapshot.snapshot_id, len(record_ids) or 1, record_ids=record_ids
        )

    return load
