"""The recovery policy: what a confirmed broken collection is restored from and into.

- A user's collection is restored, from its newest snapshot taken while ``ok``, into
  NEW_COLLECTION_NAME (``{name}`` expanded); an identical copy already there is left alone, and
  an existing different collection there is never overwritten.
- A recovery target (a collection a verified restore created, as the restores table records: the
  catalog, not its name, says so) is restored **in place**, under its own name, from its own
  newest ``ok`` snapshot, or from the snapshot it was restored from when it has none yet.  The
  application already points at it; a ``x_restored_restored`` chain would help nobody.  When the
  broken collection still exists it is replaced by the verified copy and kept aside as
  ``<name>-replaced-<restore id>`` for inspection, never deleted by recovery.

Functions take the stores as arguments; how a restore and a verify are done (``Mechanics``) is
passed in too, so the policy is tested in tables against in-memory fakes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from chroma_backup.catalog import Snapshot
from chroma_backup.core.health import HealthVerdict
from chroma_backup.core.ports import ChromaPort, DatabasePort
from chroma_backup.core.reading import RunOptions
from chroma_backup.core.restore import RestoreRequest, RestoreResult, restore_snapshot
from chroma_backup.core.snapshots import resolve_snapshot
from chroma_backup.core.verify import VerifyResult, verify_collection
from chroma_backup.errors import BackupError, CollectionBusy, SnapshotNotFound
from chroma_backup.states import (
    ALREADY_RESTORED,
    BLOCKED,
    ELSEWHERE,
    MISSING,
    NO_SNAPSHOT,
    RECOVERED_ITSELF,
    RECOVERY_FAILED,
    RESTORABLE,
    RESTORED,
    TRIGGER_AUTO,
    UNREACHABLE,
)

log = logging.getLogger(__name__)


@dataclass
class Recovery:
    collection: str
    action: str  # states: restored | already_restored | recovered_itself | blocked | no_snapshot | failed
    detail: str
    target: str | None = None
    snapshot_id: int | None = None
    restore: RestoreResult | None = None
    in_place: bool = False

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["restore"] = self.restore.as_json() if self.restore else None
        return data


@dataclass(frozen=True)
class Mechanics:
    """How recovery restores and verifies: the domain's own functions (the unit tests of the
    policy pass fakes)."""

    restore: Callable[[ChromaPort, DatabasePort, RestoreRequest, RunOptions], RestoreResult] = restore_snapshot
    verify: Callable[..., VerifyResult] = verify_collection


def origin_of(chroma: ChromaPort, db: DatabasePort, name: str) -> dict[str, Any] | None:
    """The restore that created collection ``name`` on this server (source collection, snapshot,
    collection id), or None when ``name`` is not a recovery target."""
    return db.restores.recovery_targets(chroma.tenant, chroma.database, chroma.address).get(name)


def _already_restored(
    chroma: ChromaPort, db: DatabasePort, name: str, target: str, snapshot_id: int, mechanics: Mechanics
) -> bool:
    """True when ``target`` is the collection a verified restore of ``snapshot_id`` created (its
    content may have moved on since: the application writes to it), or else a full verify says
    it holds that snapshot."""
    made = origin_of(chroma, db, target)
    live = chroma.open(target)
    if (
        made
        and made["collection"] == name
        and made["snapshot_id"] == snapshot_id
        and made["collection_id"] == str(live.id)
    ):
        return True
    return mechanics.verify(chroma, db, name, snapshot_id=snapshot_id, target=target).identical


def _source_for_in_place(
    db: DatabasePort, chroma: ChromaPort, name: str, origin: dict[str, Any]
) -> tuple[str, Snapshot]:
    try:
        return name, resolve_snapshot(db, chroma.tenant, chroma.database, name, healthy_only=True)
    except SnapshotNotFound:
        source = origin["collection"]
        return source, resolve_snapshot(
            db, chroma.tenant, origin["database"], source, snapshot_id=origin["snapshot_id"]
        )


def recover_collection(
    chroma: ChromaPort,
    db: DatabasePort,
    verdict: HealthVerdict,
    *,
    target_name: Callable[[str], str],
    run: RunOptions = RunOptions(),
    mechanics: Mechanics = Mechanics(),
) -> Recovery:
    """Apply the recovery policy to a confirmed failing collection (see the module docstring)."""
    name = verdict.collection
    origin = origin_of(chroma, db, name)
    reason = f"{verdict.status}: {verdict.detail}"
    try:
        if origin is not None:
            source, snapshot = _source_for_in_place(db, chroma, name, origin)
        else:
            source, snapshot = name, resolve_snapshot(db, chroma.tenant, chroma.database, name, healthy_only=True)
    except SnapshotNotFound as error:
        log.error("recovery collection=%s action=no_snapshot detail=%s", name, error)
        return Recovery(name, NO_SNAPSHOT, str(error), name if origin else target_name(name))
    if origin is not None:
        replace = verdict.status != MISSING and chroma.exists(name)
        request = RestoreRequest(
            source=source,
            target=name,
            snapshot_id=snapshot.snapshot_id,
            overwrite=replace,
            keep_replaced=True,
            trigger=TRIGGER_AUTO,
            reason=reason,
            database=snapshot.database,
        )
        result = mechanics.restore(chroma, db, request, run)
        kept = f"; the broken collection is kept as {result.replaced_kept}" if result.replaced_kept else ""
        log.info(
            "recovery collection=%s action=restored in_place=true source=%s snapshot=%d records=%d%s",
            name,
            source,
            snapshot.snapshot_id,
            result.records,
            kept,
        )
        return Recovery(
            name,
            RESTORED,
            f"restored snapshot {snapshot.snapshot_id} of {source} in place{kept}" + _inexact(name, result),
            name,
            snapshot.snapshot_id,
            result,
            in_place=True,
        )
    target = target_name(name)
    if chroma.exists(target):
        if _already_restored(chroma, db, name, target, snapshot.snapshot_id, mechanics):
            log.info(
                "recovery collection=%s action=already_restored target=%s snapshot=%d",
                name,
                target,
                snapshot.snapshot_id,
            )
            return Recovery(
                name,
                ALREADY_RESTORED,
                f"{target} already holds snapshot {snapshot.snapshot_id}",
                target,
                snapshot.snapshot_id,
            )
        detail = (
            f"target {target} exists with other content; auto-recovery never overwrites it. Restore by hand: "
            f"python main.py restore --collection {name} --snapshot {snapshot.snapshot_id} --to OTHER_NAME "
            f"(or --overwrite to replace {target})"
        )
        log.error("recovery collection=%s action=blocked %s", name, detail)
        return Recovery(name, BLOCKED, detail, target, snapshot.snapshot_id)
    request = RestoreRequest(
        source=name, target=target, snapshot_id=snapshot.snapshot_id, trigger=TRIGGER_AUTO, reason=reason
    )
    result = mechanics.restore(chroma, db, request, run)
    log.info(
        "recovery collection=%s action=restored target=%s snapshot=%d records=%d verified=%s seconds=%.2f",
        name,
        target,
        snapshot.snapshot_id,
        result.records,
        result.verified,
        result.seconds,
    )
    return Recovery(
        name,
        RESTORED,
        f"restored snapshot {snapshot.snapshot_id} into {target}" + _inexact(name, result),
        target,
        snapshot.snapshot_id,
        result,
    )


def _inexact(name: str, result: RestoreResult) -> str:
    """The detail's tail for a kept copy whose configuration differs (logged as a WARNING): the
    application needs the records more than a perfect configuration."""
    if not result.differences:
        return ""
    differences = "; ".join(result.differences)
    log.warning(
        "recovery collection=%s target=%s kept: records identical, configuration differs: %s",
        name,
        result.target,
        differences,
    )
    return f" (records identical; configuration differs: {differences})"


WIPE_MIN_COLLECTIONS = 2  # with one collection, a lost server looks like a lost collection


def gone(verdict: HealthVerdict) -> bool:
    """The collection's records are gone: it is missing, or it is empty where its newest ``ok``
    snapshot had records (an application re-created it on an empty server)."""
    return verdict.status == MISSING or (verdict.records == 0 and bool(verdict.snapshot_records))


def wiped(verdicts: list[HealthVerdict]) -> bool:
    """A wiped server (one event, not N unrelated failures): the server answers, and every one of
    at least WIPE_MIN_COLLECTIONS collections with backups is gone, at least one of them missing."""
    if any(v.status == UNREACHABLE for v in verdicts):
        return False
    backed_up = [v for v in verdicts if v.snapshot_id is not None]
    return (
        len(backed_up) >= WIPE_MIN_COLLECTIONS
        and all(gone(v) for v in backed_up)
        and any(v.status == MISSING for v in backed_up)
    )


def wait_to_confirm(seconds: float, stop: threading.Event | None) -> bool:
    """Wait before a failure is checked again; False when a shutdown came first."""
    if stop is not None:
        return not stop.wait(seconds)
    time.sleep(seconds)
    return True


def check_and_recover(
    check: Callable[[], HealthVerdict],
    recover: Callable[[HealthVerdict], Recovery],
    *,
    confirm_seconds: float,
    restore: bool,
    stop: threading.Event | None = None,
    first: HealthVerdict | None = None,
) -> tuple[HealthVerdict, Recovery | None]:
    """One health check (or ``first``, already made); with ``restore``, a restorable failure is
    re-checked (with a fresh sample) after ``confirm_seconds`` and, if it persists, recovered."""
    verdict = first or check()
    if not restore or verdict.status not in RESTORABLE:
        return verdict, None
    log.warning(
        "health collection=%s status=%s detail=%s confirming_in=%.0fs",
        verdict.collection,
        verdict.status,
        verdict.detail,
        confirm_seconds,
    )
    if not wait_to_confirm(confirm_seconds, stop):
        return verdict, None
    confirmed = check()
    if confirmed.status not in RESTORABLE:
        return confirmed, Recovery(confirmed.collection, RECOVERED_ITSELF, f"re-check said {confirmed.status}")
    try:
        return confirmed, recover(confirmed)
    except CollectionBusy as error:  # another replica took it first: one restore, not two
        log.info("recovery collection=%s action=elsewhere detail=%s", confirmed.collection, error)
        return confirmed, Recovery(confirmed.collection, ELSEWHERE, f"another process is restoring it ({error})")
    except BackupError as error:
        log.error("recovery collection=%s action=failed error=%s", confirmed.collection, error)
        return confirmed, Recovery(confirmed.collection, RECOVERY_FAILED, str(error))
