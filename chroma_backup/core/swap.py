"""Putting a verified copy in place of an existing collection (``restore --overwrite``), and
cleaning up after restores that did not finish.

Every step may fail or lose its answer, so after a failed step the server's state is read (which
of the names holds which collection id) before anything is decided or said.
"""

from __future__ import annotations

import logging
from typing import Any

from chroma_backup.core.ports import ChromaPort, DatabasePort
from chroma_backup.errors import BackupError, CollectionNotFound, SwapFailed, first_line

log = logging.getLogger(__name__)


def _drop_quietly(chroma: ChromaPort, name: str) -> bool:
    """Delete a restore's working collection; False (logged) when that fails."""
    try:
        chroma.delete(name)
        return True
    except CollectionNotFound:
        return True
    except BackupError as error:
        log.error(
            "restore could not delete temporary collection %s: %s (removed by a later run)", name, first_line(error)
        )
        return False


def _forget_working_copy(db: DatabasePort, restore_id: int) -> None:
    """The working copy is gone or in place: nothing of this restore is left to clean up."""
    try:
        db.restores.set_temporary_id(restore_id, None)
    except BackupError as error:
        log.warning("restore %d: could not record that its working collection is gone: %s", restore_id, error)


def remove_leftovers(chroma: ChromaPort, db: DatabasePort) -> list[str]:
    """Remove the half-built working collections of restores that did not finish (a crash of
    Chroma or of the restoring process), each recognised by the collection id its restore
    recorded, never by its name alone; returns their names (each logged)."""
    removed = []
    for row in db.restores.leftovers(chroma.tenant, chroma.database, chroma.address):
        name = row["temporary_name"]
        try:
            live = chroma.open(name)
        except CollectionNotFound:
            live = None
        if live is not None and live.id == row["temporary_collection_id"]:
            chroma.delete(name)
            removed.append(name)
            log.warning(
                "removed collection=%s: the half-built copy of restore %d, which did not finish",
                name,
                row["restore_id"],
            )
        db.restores.set_temporary_id(row["restore_id"], None)
    return removed


def _names_now(chroma: ChromaPort, names: list[str]) -> dict[str, str | None]:
    """Which collection id each name holds right now (None: no collection)."""
    now: dict[str, str | None] = {}
    for name in names:
        try:
            now[name] = chroma.open(name).id
        except CollectionNotFound:
            now[name] = None
    return now


def _rename_checked(chroma: ChromaPort, collection: Any, new_name: str) -> None:
    """Rename, and when the answer is an error, look before believing it: a rename the server
    did but whose answer was lost counts as done."""
    try:
        chroma.rename(collection, new_name)
    except BackupError as error:
        try:
            done = _names_now(chroma, [new_name])[new_name] == collection.id
        except BackupError:
            raise error from None
        if not done:
            raise
        log.warning("rename of %s to %s answered %s, but it was done", collection.name, new_name, first_line(error))


def replaced_name(target: str, restore_id: int) -> str:
    """Where an overwrite keeps the old target while the verified copy takes its name."""
    suffix = f"-replaced-{restore_id}"
    return target[: 512 - len(suffix)] + suffix


def _swap_into_place(
    chroma: ChromaPort, db: DatabasePort, restore_id: int, copy: Any, target: str, keep_replaced: bool
) -> str | None:
    """Old target aside, verified copy into its name, old one deleted (or kept when
    ``keep_replaced``).  Returns the name the old collection is kept under (None once deleted).

    After any failed step the server's state is read (which of the three names holds which
    collection) before anything is decided or said: a rename whose answer was lost counts as
    done, and the error always says where the old collection and the verified copy are."""
    aside = replaced_name(target, restore_id)
    old = chroma.open(target)
    db.restores.set_restore_aside(restore_id, aside)
    try:
        chroma.rename(old, aside)
        chroma.rename(copy, target)
    except BackupError as error:
        _recover_swap(chroma, db, restore_id, old, copy, target, aside, error)
    if keep_replaced:
        log.info("restore target=%s replaced; the old collection is kept as %s", target, aside)
        return aside
    try:
        chroma.delete(aside)
    except CollectionNotFound:
        pass
    except BackupError as error:
        log.warning(
            "restore target=%s replaced by the verified copy; the old collection could not be deleted "
            "and remains as %s: %s",
            target,
            aside,
            first_line(error),
        )
        return aside
    db.restores.set_restore_aside(restore_id, None)
    return None


def _recover_swap(
    chroma: ChromaPort,
    db: DatabasePort,
    restore_id: int,
    old: Any,
    copy: Any,
    target: str,
    aside: str,
    error: BackupError,
) -> None:
    """Finish or undo a swap that failed at some step, from the server's state as it is now
    (read again after every step, since any answer may be lost).  Returns when the verified copy
    is in place; raises ``SwapFailed`` saying where both collections are."""
    why, tried_into, moved_back = first_line(error), False, False
    for _ in range(4):
        try:
            now = _names_now(chroma, [target, aside, copy.name])
        except BackupError as unknown:
            db.restores.set_temporary_id(restore_id, None)  # the copy may be in place: never remove it
            raise SwapFailed(
                f"the swap into {target!r} failed ({why}) and Chroma cannot say where things are now "
                f"({first_line(unknown)}): the old collection is {target!r} or {aside!r}, the verified copy "
                f"{copy.name!r} or {target!r}; check them before running the restore again"
            ) from error
        if now[target] == copy.id:
            log.warning("restore target=%s: the swap answered %s, but the verified copy is in place", target, why)
            return
        if now[target] == old.id:  # nothing moved, or the old one is back
            db.restores.set_restore_aside(restore_id, None)
            if now[copy.name] == copy.id and _drop_quietly(chroma, copy.name):
                db.restores.set_temporary_id(restore_id, None)
            if moved_back:
                raise SwapFailed(
                    f"could not rename the verified copy to {target!r} ({why}); {target!r} is the old collection again"
                ) from error
            raise SwapFailed(
                f"could not move the existing {target!r} aside ({why}); {target!r} is unchanged (the old collection)"
            ) from error
        if now[target] is not None or now[aside] != old.id or now[copy.name] != copy.id or moved_back:
            break
        try:  # the old one is aside and the name free: finish the swap, else move the old one back
            if not tried_into:
                tried_into = True
                chroma.rename(copy, target)
            else:
                moved_back = True
                chroma.rename(old, target)
        except BackupError as step_error:
            if not moved_back:
                why = first_line(step_error)
    db.restores.set_temporary_id(restore_id, None)  # whatever holds the copy now, it is the operator's
    if now[target] is None and now[aside] == old.id and now[copy.name] == copy.id:
        raise SwapFailed(
            f"could not rename the verified copy to {target!r} ({why}) nor move the old collection back: the old "
            f"collection is {aside!r}, the verified copy {copy.name!r}; rename one of them to {target!r}"
        ) from error
    what_is = {old.id: "the old collection", copy.id: "the verified copy", None: "nothing"}
    held = ", ".join(f"{name!r}: {what_is.get(cid, 'another collection')}" for name, cid in now.items())
    raise SwapFailed(f"the swap into {target!r} failed ({why}) and left: {held}") from error
