"""Repair: put back only what was lost, in place, under the collection's own name, while the
application keeps using it.

A deep scan (``deep``) of the collection against a snapshot (its newest taken while ``ok``, or the
one asked for) finds the records that are unreadable, gone, or not found by the index; each page of
findings is written back from the snapshot as it is found (``upsert``: Chroma re-indexes a record
it writes, also one its index had lost), read back and compared with the stored digest.  Records
the index misses are rewritten only when the index is judged damaged (``DEEP_MISS_RATE``) or
``reindex`` asks for it: a healthy approximate index misses a few records however often they are
written.  Nothing else is touched.  A record that is damaged but is not in the snapshot (added
after it) cannot be put back and is reported.  A second repair finds nothing to do.

Records deleted by the application since the snapshot count as ``gone`` and come back too: run
``--dry-run`` first (it lists them), or repair from a snapshot taken after the deletion.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import IO, Any

from chroma_backup.catalog import Snapshot
from chroma_backup.core.compare import COSINE_ULP_TOLERANCE
from chroma_backup.core.deep import GONE, UNINDEXED, UNREADABLE, DeepFindings, deep_scan
from chroma_backup.core.ports import ChromaPort, Collection, DatabasePort
from chroma_backup.core.reading import RunOptions
from chroma_backup.core.snapshots import resolve_snapshot, snapshot_info
from chroma_backup.core.writeback import finish_live_write, write_back
from chroma_backup.errors import first_line
from chroma_backup.states import COMPLETE, FAILED, TRIGGER_CLI

log = logging.getLogger(__name__)

EXAMPLES = 5
WRITE_PAGE = 250


@dataclass
class RepairResult:
    collection: str
    snapshot_id: int
    dry_run: bool
    findings: DeepFindings
    rewritten: int = 0  # records written back and verified (a dry run: that would be)
    by_kind: dict[str, int] = field(default_factory=lambda: {UNREADABLE: 0, UNINDEXED: 0, GONE: 0})
    unrepairable: int = 0  # damaged records the snapshot does not have (added after it)
    unrepairable_examples: list[str] = field(default_factory=list)
    reindexed: bool = False  # records the index missed were rewritten
    restore_id: int | None = None
    verified: bool = False
    seconds: float = 0.0

    def counts(self) -> dict[str, Any]:
        return {
            **self.findings.counts(),
            "rewritten": self.rewritten,
            "rewritten_by_kind": self.by_kind,
            "unrepairable": self.unrepairable,
            "reindexed": self.reindexed,
        }

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["findings"] = self.findings.as_json()
        data["seconds"] = round(self.seconds, 3)
        return data


class _Rewriter:
    """Writes records back from the snapshot, a page at a time, each page read back and compared."""

    def __init__(
        self,
        chroma: ChromaPort,
        lookup: DatabasePort,
        collection: Collection,
        snapshot: Snapshot,
        result: RepairResult,
        *,
        dry_run: bool,
        run: RunOptions,
    ):
        self.chroma, self.lookup, self.collection, self.snapshot = chroma, lookup, collection, snapshot
        self.result, self.dry_run, self.run = result, dry_run, run
        self.ulps = COSINE_ULP_TOLERANCE if snapshot_info(snapshot).space == "cosine" else 0

    def rewrite(self, kind: str, record_ids: list[str]) -> None:
        for start in range(0, len(record_ids), WRITE_PAGE):
            self._page(kind, record_ids[start : start + WRITE_PAGE])

    def _page(self, kind: str, record_ids: list[str]) -> None:
        self.run.check_stop("repair")
        stored = [
            batch
            for batch in self.lookup.records.iter_snapshot_records(
                self.snapshot.collection_ref, self.snapshot.snapshot_id, len(record_ids), record_ids
            )
        ]
        have = {record_id for batch in stored for record_id in batch.ids}
        lacking = [record_id for record_id in record_ids if record_id not in have]
        if lacking:
            self.result.unrepairable += len(lacking)
            room = EXAMPLES - len(self.result.unrepairable_examples)
            self.result.unrepairable_examples.extend(lacking[: max(0, room)])
        for batch in stored:
            if not self.dry_run:
                write_back(self.chroma, self.collection, batch, self.ulps)
            self.result.rewritten += len(batch)
            self.result.by_kind[kind] += len(batch)
            self.run.advance(len(batch))


class _Spool:
    """Ids kept on disk until the scan is over (records the index misses: whether they are
    rewritten is decided by the whole scan's rate)."""

    def __init__(self) -> None:
        self.file: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")

    def add(self, record_ids: list[str]) -> None:
        self.file.writelines(json.dumps(record_id) + "\n" for record_id in record_ids)

    def pages(self, size: int) -> Iterator[list[str]]:
        self.file.seek(0)
        page: list[str] = []
        for line in self.file:
            page.append(json.loads(line))
            if len(page) >= size:
                yield page
                page = []
        if page:
            yield page

    def close(self) -> None:
        self.file.close()


def repair_collection(
    chroma: ChromaPort,
    db: DatabasePort,
    name: str,
    *,
    snapshot_id: int | None = None,
    at: datetime | None = None,
    dry_run: bool = False,
    reindex: bool = False,
    trigger: str = TRIGGER_CLI,
    reason: str | None = None,
    max_seconds: float = 0.0,
    tenant: str | None = None,
    database: str | None = None,
    run: RunOptions = RunOptions(),
) -> RepairResult:
    """Repair ``name`` in place from a snapshot (module docstring)."""
    started = time.monotonic()
    tenant, database = tenant or chroma.tenant, database or chroma.database
    snapshot = resolve_snapshot(
        db, tenant, database, name, snapshot_id=snapshot_id, at=at, healthy_only=snapshot_id is None and at is None
    )
    collection = chroma.open(name)
    with db.locks.collection_lock(tenant, database, name):
        restore_id = None
        if not dry_run:
            restore_id = db.restores.begin_restore(
                snapshot, name, chroma.address, trigger, reason, target_database=chroma.database, kind="repair"
            )
        lookup, spool = db.sibling(), _Spool()
        result = RepairResult(name, snapshot.snapshot_id, dry_run, DeepFindings(name, snapshot.snapshot_id))
        result.restore_id = restore_id
        try:
            writer = _Rewriter(chroma, lookup, collection, snapshot, result, dry_run=dry_run, run=run)

            def damaged(kind: str, record_ids: list[str]) -> None:
                if kind == UNINDEXED:
                    spool.add(record_ids)
                else:
                    writer.rewrite(kind, record_ids)

            result.findings = deep_scan(
                chroma, db, collection, snapshot, max_seconds=max_seconds, on_damage=damaged, run=run
            )
            if result.findings.unindexed and (reindex or result.findings.index_damaged):
                result.reindexed = True
                for page in spool.pages(WRITE_PAGE):
                    writer.rewrite(UNINDEXED, page)
        except BaseException as error:
            if restore_id is not None:
                _finish(db, restore_id, result, FAILED, f"{type(error).__name__}: {first_line(error)}")
            raise
        finally:
            spool.close()
            lookup.close()
        result.verified = not dry_run
        if restore_id is not None:
            _finish(db, restore_id, result, COMPLETE, None)
    result.seconds = time.monotonic() - started
    return result


def _finish(db: DatabasePort, restore_id: int, result: RepairResult, status: str, error: str | None) -> None:
    finish_live_write(db, restore_id, status=status, records=result.rewritten, counts=result.counts(), error=error)
