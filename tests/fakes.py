"""In-memory stand-ins for the parts of the stores that the recovery policy, retention and
selection touch: enough to state those policies in tables without servers.  Everything that
reads or writes records runs against the real servers in the integration tests."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from chroma_backup.catalog import Snapshot
from chroma_backup.chroma import Collection, CollectionInfo
from chroma_backup.core.restore import RestoreRequest, RestoreResult
from chroma_backup.core.verify import VerifyResult

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def snapshot(
    snapshot_id: int,
    collection: str,
    *,
    health: str = "ok",
    status: str = "complete",
    records: int = 10,
    database: str = "default_database",
    hours: float = 0,
) -> Snapshot:
    when = T0 + timedelta(hours=hours or snapshot_id)
    return Snapshot(
        snapshot_id=snapshot_id,
        collection_ref=hash(collection) % 1000,
        collection=collection,
        tenant="default_tenant",
        database=database,
        status=status,
        started_at=when,
        finished_at=when,
        records=records,
        added=records,
        updated=0,
        deleted=0,
        dimension=8,
        digest="00",
        chroma_collection_id="x",
        collection_metadata_json=None,
        configuration_json=None,
        schema_json=None,
        server_version="1.5.9",
        health=health,
        forced=False,
        error=None,
    )


class FakeChroma:
    """A Chroma server's collection names and ids."""

    def __init__(self, names: dict[str, str] | None = None, database: str = "default_database"):
        self.collections = dict(names or {})  # name -> collection id
        self.counts: dict[str, int] = {}  # name -> records (10 when not set)
        self.tenant, self.database, self.address, self.server_version = (
            "default_tenant",
            database,
            "http://fake",
            "1.5.9",
        )

    def exists(self, name: str) -> bool:
        return name in self.collections

    def open(self, name: str) -> Collection:
        from chroma_backup.errors import CollectionNotFound

        if name not in self.collections:
            raise CollectionNotFound(f"opening collection {name!r}: Collection [{name}] does not exist")
        return Collection(self.collections[name], name, None, None, None, 8)

    def list_collection_names(self) -> list[str]:
        return sorted(self.collections)

    def count(self, collection: Collection) -> int:
        return self.counts.get(collection.name, 10)

    def describe(self, collection: Collection) -> CollectionInfo:
        return CollectionInfo(collection.id, collection.name, None, None, None, 8, self.server_version)


class FakeCatalog:
    def __init__(self, snapshots: list[Snapshot]):
        self.snapshots = snapshots

    def collection_ref(self, tenant: str, database: str, name: str, *, create: bool = False) -> int | None:
        found = [s for s in self.snapshots if s.collection == name and s.database == database]
        return found[0].collection_ref if found else None

    def collection_names(self, tenant: str, database: str) -> list[str]:
        return sorted({s.collection for s in self.snapshots if s.database == database})

    def get_snapshot(self, snapshot_id: int) -> Snapshot | None:
        return next((s for s in self.snapshots if s.snapshot_id == snapshot_id), None)

    def latest_complete(
        self, collection_ref: int, *, at: datetime | None = None, healthy_only: bool = False
    ) -> Snapshot | None:
        found = [
            s
            for s in self.snapshots
            if s.collection_ref == collection_ref
            and s.status == "complete"
            and (not healthy_only or s.healthy)
            and (at is None or s.finished_at <= at)
        ]
        return max(found, key=lambda s: s.snapshot_id) if found else None


@dataclass
class FakeRestores:
    made: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> what recovery_targets gives
    working: set[str] = field(default_factory=set)

    def recovery_targets(self, tenant: str, database: str, target_server: str) -> dict[str, dict[str, Any]]:
        return self.made

    def work_names(self, tenant: str, database: str, target_server: str) -> set[str]:
        return self.working


@dataclass
class FakeVerdicts:
    history: dict[int, list[str]] = field(default_factory=dict)  # collection ref -> statuses, oldest first

    def latest(self, collection_ref: int, *, besides: tuple[str, ...] = ()) -> dict[str, Any] | None:
        found = [status for status in self.history.get(collection_ref, []) if status not in besides]
        return {"status": found[-1], "detail": f"collection does not exist; {found[-1]} earlier"} if found else None


class FakeDb:
    def __init__(
        self,
        snapshots: list[Snapshot] | None = None,
        restores: FakeRestores | None = None,
        verdicts: FakeVerdicts | None = None,
    ):
        self.catalog = FakeCatalog(snapshots or [])
        self.restores = restores or FakeRestores()
        self.verdicts = verdicts or FakeVerdicts()


@dataclass
class FakeServer:
    """A target server for the whole-server planner: its databases, each a ``FakeChroma``."""

    stores: dict[str, FakeChroma] = field(default_factory=dict)
    address: str = "http://fake"

    def databases(self) -> set[str]:
        return set(self.stores)

    def store(self, database: str) -> FakeChroma | None:
        return self.stores.get(database)


@dataclass
class FakeMechanics:
    """Records the restores recovery asks for, and answers verifies as told."""

    identical: bool = False
    requests: list[RestoreRequest] = field(default_factory=list)

    def restore(self, chroma: Any, db: Any, request: RestoreRequest, run: Any) -> RestoreResult:
        self.requests.append(request)
        return RestoreResult(
            snapshot_id=request.snapshot_id or 0,
            source=request.source,
            target=request.target,
            records=10,
            verified=True,
            seconds=0.1,
            exact=True,
            replaced_kept=f"{request.target}-replaced-1" if request.overwrite else None,
        )

    def verify(self, chroma: Any, db: Any, name: str, **_: Any) -> VerifyResult:
        return VerifyResult(
            collection=name,
            target=name,
            snapshot_id=0,
            identical=self.identical,
            expected_records=10,
            live_records=10,
            missing=0,
            extra=0,
            changed=0,
            rounded=0,
            examples={},
            space="l2",
            index_differences=[],
            seconds=0.0,
        )


def with_health(snap: Snapshot, health: str) -> Snapshot:
    return replace(snap, health=health)


@contextlib.contextmanager
def nothing():
    yield
