"""Which collections of one database a round works on.

``--collection`` wins, else CHROMA_COLLECTION_NAME; ``*`` means every collection of the database.
No collection is ever left out because of its name: recovery targets are backed up and checked
like any other.  The only collections left out of ``*`` are the ones restores use for their own
work (a copy being built, a replaced target kept aside), recognised from the restores table, and
each is reported by the caller in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chroma_backup.settings import Settings


@dataclass
class Selection:
    names: list[str]
    excluded: dict[str, str] = field(default_factory=dict)  # name -> why it was left out


def selected_collections(settings: Settings, chroma: Any, db: Any, requested: list[str] | None) -> Selection:
    """The collections of ``chroma``'s database to back up."""
    if requested:
        return Selection(list(dict.fromkeys(requested)))
    if not settings.all_collections:
        return Selection(list(settings.collections))
    return _every(chroma, db, with_backups=False)


def health_targets(settings: Settings, chroma: Any, db: Any, requested: list[str] | None) -> Selection:
    """Collections to check: as ``selected_collections``, and with ``*`` also every collection that
    has backups (a deleted collection no longer shows up in Chroma's list)."""
    if requested or not settings.all_collections:
        return selected_collections(settings, chroma, db, requested)
    return _every(chroma, db, with_backups=True)


def _every(chroma: Any, db: Any, *, with_backups: bool) -> Selection:
    """Every collection of the database (and, ``with_backups``, every one the catalog has),
    less the restores' working collections."""
    work = db.restores.work_names(chroma.tenant, chroma.database, chroma.address)
    live = chroma.list_collection_names()
    names = live + (db.catalog.collection_names(chroma.tenant, chroma.database) if with_backups else [])
    return Selection(
        [n for n in dict.fromkeys(names) if n not in work],
        {n: "a restore's working collection (being built, or a replaced target kept aside)" for n in live if n in work},
    )
