"""Record-level restore (undelete): chosen records of a snapshot written back into the live
collection, under its own name, verified.

The records are chosen by id (a list, or pages of ids from a file) or by a metadata filter
(``where``, evaluated on the metadata the snapshot stored), and streamed from PostgreSQL page by
page; each page is compared with the live collection and only what the mode asks for is written
(``upsert``, which also re-indexes):

- ``missing``: records the collection no longer has (or cannot read);
- ``merge`` (the default): those, and records whose live content differs from the snapshot (a
  change made since is overwritten: ``--dry-run`` counts them first);
- ``replace``: every chosen record, identical ones too (re-indexed).

Each written page is read back and compared with the stored digests.  The run is recorded in the
restores table (kind ``records``) with its counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from chroma_backup.catalog import Snapshot
from chroma_backup.core.compare import COSINE_ULP_TOLERANCE
from chroma_backup.core.ports import ChromaPort, Collection, DatabasePort
from chroma_backup.core.reading import RunOptions, read_flagging
from chroma_backup.core.snapshots import resolve_snapshot, snapshot_info
from chroma_backup.core.where import Where, matches
from chroma_backup.core.writeback import finish_live_write, same_content, write_back
from chroma_backup.errors import UsageError, first_line
from chroma_backup.records import RecordBatch, batch_rows
from chroma_backup.states import COMPLETE, FAILED, TRIGGER_CLI

log = logging.getLogger(__name__)

MODES = ("missing", "merge", "replace")
EXAMPLES = 5
PAGE = 250


@dataclass(frozen=True)
class RecordSelection:
    """Which records: ``id_pages`` (pages of ids) or ``where`` (a validated metadata filter)."""

    id_pages: Iterable[list[str]] | None = None
    where: Where | None = None

    def describe(self) -> str:
        return "by where filter" if self.where is not None else "by id"


@dataclass
class RecordsRestoreResult:
    collection: str
    snapshot_id: int
    mode: str
    dry_run: bool
    selected: int = 0  # chosen records the snapshot has
    not_in_snapshot: int = 0  # ids asked for that the snapshot does not have
    missing: int = 0  # chosen records the live collection lacks (or cannot read)
    different: int = 0  # chosen records whose live content differs from the snapshot
    unchanged: int = 0  # chosen records identical live
    written: int = 0  # written back and verified (a dry run: would be)
    examples: dict[str, list[str]] = field(default_factory=lambda: {"missing": [], "different": [], "absent": []})
    restore_id: int | None = None
    verified: bool = False
    seconds: float = 0.0

    def note(self, kind: str, record_ids: list[str]) -> None:
        room = EXAMPLES - len(self.examples[kind])
        if room > 0:
            self.examples[kind].extend(record_ids[:room])

    def counts(self) -> dict[str, Any]:
        return {
            key: getattr(self, key)
            for key in ("mode", "selected", "not_in_snapshot", "missing", "different", "unchanged", "written")
        }

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


def _chosen(
    db: DatabasePort, snapshot: Snapshot, selection: RecordSelection, result: RecordsRestoreResult
) -> Iterator[RecordBatch]:
    ref, snap = snapshot.collection_ref, snapshot.snapshot_id
    if selection.id_pages is not None:
        for page in selection.id_pages:
            wanted = list(dict.fromkeys(page))
            found: set[str] = set()
            for batch in db.records.iter_snapshot_records(ref, snap, PAGE, wanted):
                found.update(batch.ids)
                yield batch
            absent = [record_id for record_id in wanted if record_id not in found]
            result.not_in_snapshot += len(absent)
            result.note("absent", absent)
        return
    assert selection.where is not None
    for batch in db.records.iter_snapshot_records(ref, snap, PAGE):
        keep = [i for i, metadata in enumerate(batch.metadatas) if matches(selection.where, metadata)]
        if keep:
            yield batch.take(keep)


def restore_records(
    chroma: ChromaPort,
    db: DatabasePort,
    name: str,
    selection: RecordSelection,
    *,
    snapshot_id: int | None = None,
    at: datetime | None = None,
    mode: str = "merge",
    dry_run: bool = False,
    trigger: str = TRIGGER_CLI,
    reason: str | None = None,
    tenant: str | None = None,
    database: str | None = None,
    run: RunOptions = RunOptions(),
) -> RecordsRestoreResult:
    """Write the chosen records of a snapshot (by id, the newest at or before ``at``, or the
    newest) back into the live collection ``name`` (module docstring)."""
    if mode not in MODES:
        raise UsageError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    started = time.monotonic()
    tenant, database = tenant or chroma.tenant, database or chroma.database
    snapshot = resolve_snapshot(db, tenant, database, name, snapshot_id=snapshot_id, at=at)
    collection = chroma.open(name)
    ulps = COSINE_ULP_TOLERANCE if snapshot_info(snapshot).space == "cosine" else 0
    result = RecordsRestoreResult(name, snapshot.snapshot_id, mode, dry_run)
    with db.locks.collection_lock(tenant, database, name):
        if not dry_run:
            result.restore_id = db.restores.begin_restore(
                snapshot, name, chroma.address, trigger, reason, target_database=chroma.database, kind="records"
            )
        reader = db.sibling()  # the snapshot's records stream on a connection of their own
        try:
            for batch in _chosen(reader, snapshot, selection, result):
                run.check_stop("restore")
                _write_page(chroma, collection, batch, mode, dry_run, ulps, result)
                run.advance(len(batch))
        except BaseException as error:
            if result.restore_id is not None:
                _finish(db, result, FAILED, f"{type(error).__name__}: {first_line(error)}")
            raise
        finally:
            reader.close()
        result.verified = not dry_run
        if result.restore_id is not None:
            _finish(db, result, COMPLETE, None)
    result.seconds = time.monotonic() - started
    return result


def _write_page(
    chroma: ChromaPort,
    collection: Collection,
    batch: RecordBatch,
    mode: str,
    dry_run: bool,
    ulps: int,
    result: RecordsRestoreResult,
) -> None:
    live_batch, _unreadable = read_flagging(chroma, collection, list(batch.ids))
    live = {row[0]: row for row in batch_rows(live_batch)}
    write, missing, different = [], [], []
    for index, row in enumerate(batch_rows(batch)):
        now = live.get(row[0])
        if now is None:
            missing.append(row[0])
            write.append(index)
        elif not same_content(now, row, ulps):
            different.append(row[0])
            if mode != "missing":
                write.append(index)
        else:
            result.unchanged += 1
            if mode == "replace":
                write.append(index)
    result.selected += len(batch)
    result.missing += len(missing)
    result.different += len(different)
    result.note("missing", missing)
    result.note("different", different)
    if not write:
        return
    chosen = batch.take(write)
    if not dry_run:
        write_back(chroma, collection, chosen, ulps)
    result.written += len(chosen)


def _finish(db: DatabasePort, result: RecordsRestoreResult, status: str, error: str | None) -> None:
    assert result.restore_id is not None
    finish_live_write(db, result.restore_id, status=status, records=result.written, counts=result.counts(), error=error)
