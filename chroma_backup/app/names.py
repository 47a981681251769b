"""Which collection a name means, and how a collection is named in output, logs and metrics.

With one database a collection is its name; wherever two databases could share a name (a list
or ``*`` in CHROMA_DATABASE) it is ``database/collection``, and a plain name is accepted when
exactly one database has it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

from chroma_backup.app.stores import Stores
from chroma_backup.chroma import ChromaStore
from chroma_backup.core.ports import ChromaPort, DatabasePort
from chroma_backup.core.selection import Selection
from chroma_backup.core.server_restore import Source
from chroma_backup.core.swap import remove_leftovers
from chroma_backup.errors import BackupError, ChromaUnavailable, DatabaseNotFound, UsageError
from chroma_backup.settings import Settings, validate_collection_name

log = logging.getLogger(__name__)

Select = Callable[[Settings, ChromaPort, DatabasePort, "list[str] | None"], Selection]


class Where(NamedTuple):
    """A collection in one database of the tenant."""

    database: str
    name: str


class Names:
    def __init__(self, stores: Stores):
        self.stores = stores
        self.settings = stores.settings

    def databases(self, *, with_backups: bool = False) -> list[str]:
        """CHROMA_DATABASE's databases (``*``: every database of the tenant, as Chroma lists them,
        and ``with_backups`` every one the catalog has too: a database gone from the server
        is checked, its collections ``missing``)."""
        if self.settings.all_databases:
            live = self.stores.chroma.list_databases()
            return sorted({*live, *self.backed_up_databases()}) if with_backups else live
        return list(self.settings.chroma_databases)

    def backed_up_databases(self) -> list[str]:
        """The databases to read the catalog for (``*``: every one with backups)."""
        if self.settings.all_databases:
            return self.stores.db.catalog.database_names(self.settings.chroma_tenant)
        return list(self.settings.chroma_databases)

    def label(self, where: Where) -> str:
        """``database/collection`` wherever two databases could share a collection name."""
        return f"{where.database}/{where.name}" if self.settings.several_databases else where.name

    def resolve(self, requested: str, option: str = "--collection") -> Where:
        """``database/collection``, or a plain name when it is unambiguous."""
        if "/" in requested:
            database, name = requested.split("/", 1)
            validate_collection_name(name, option)
            return Where(database, name)
        validate_collection_name(requested, option)
        if not self.settings.several_databases:
            return Where(self.settings.chroma_database, requested)
        found = [d for d in self.databases(with_backups=True) if requested in self._known(d)]
        if len(found) == 1:
            return Where(found[0], requested)
        if not found:
            raise UsageError(
                f"{option} {requested}: no such collection in database(s) "
                f"{', '.join(self.databases(with_backups=True))}; name it as DATABASE/COLLECTION"
            )
        raise UsageError(
            f"{option} {requested} is ambiguous: "
            + ", ".join(f"{d}/{requested}" for d in found)
            + "; name it as DATABASE/COLLECTION"
        )

    def single_collection(self, requested: str | None) -> Where:
        if requested:
            return self.resolve(requested)
        s = self.settings
        if not s.all_collections and len(s.collections) == 1:
            return self.resolve(s.collections[0], "CHROMA_COLLECTION_NAME")
        raise UsageError("--collection NAME is required (CHROMA_COLLECTION_NAME names more than one collection)")

    def selected(self, requested: list[str] | None, select: Select, *, with_backups: bool = False) -> list[Where]:
        """The collections a round works on, in every database; the ones left out on purpose are
        logged, one line each.  The half-built copies of restores that died go first.  A
        database the server does not have contributes its configured collections (they fail as
        missing) and, ``with_backups``, every collection the catalog has of it."""
        if requested:
            wheres = list(dict.fromkeys(self.resolve(r) for r in requested))
            for database in dict.fromkeys(where.database for where in wheres):
                try:
                    self._remove_leftovers(self.stores.chroma_for(database))
                except DatabaseNotFound:
                    pass  # its collections are missing: the round says so
            return wheres
        chosen = []
        for database in self.databases(with_backups=with_backups):
            try:
                chroma = self.stores.chroma_for(database)
            except DatabaseNotFound:
                names = self._without_database(database, with_backups)
                chosen += [Where(database, name) for name in names]
                continue
            self._remove_leftovers(chroma)
            selection = select(self.settings, chroma, self.stores.db, None)
            for name, why in selection.excluded.items():
                log.info("skipped collection=%s reason=%s", self.label(Where(database, name)), why)
            chosen += [Where(database, name) for name in selection.names]
        return chosen

    def _without_database(self, database: str, with_backups: bool) -> list[str]:
        """The collections of a database the server does not have that a round still works on."""
        s = self.settings
        if not s.all_collections:
            return list(s.collections)
        if with_backups:
            return self.stores.db.catalog.collection_names(s.chroma_tenant, database)
        log.warning("skipped database=%s reason=the Chroma server has no database by that name", database)
        return []

    def catalog_targets(self) -> list[Where]:
        """The collections the catalog knows of (what is checked while Chroma is unreachable)."""
        s = self.settings
        if not s.all_collections:
            return [Where(d, n) for d in self.backed_up_databases() for n in s.collections]
        return [
            Where(d, n)
            for d in self.backed_up_databases()
            for n in self.stores.db.catalog.collection_names(s.chroma_tenant, d)
        ]

    def backed_up(self, requested: list[str] | None) -> list[Source]:
        """The catalog's collections a whole-server restore brings back: ``requested`` (each
        DATABASE/NAME, or a plain name exactly one backed-up database has), else
        CHROMA_COLLECTION_NAME's names (``*``: every collection with backups) in CHROMA_DATABASE's
        databases (``*``: every database with backups).  Read from the catalog alone: the server
        may be empty."""
        s, catalog = self.settings, self.stores.db.catalog
        databases = self.backed_up_databases()
        if requested:
            sources = []
            for name in requested:
                if "/" in name:
                    database, collection = name.split("/", 1)
                    validate_collection_name(collection, "--collection")
                    sources.append(Source(database, collection, explicit=True))
                    continue
                validate_collection_name(name, "--collection")
                found = [d for d in databases if name in catalog.collection_names(s.chroma_tenant, d)]
                if len(found) != 1:
                    where = (
                        ", ".join(f"{d}/{name}" for d in found)
                        if found
                        else "no backups of it in " + (", ".join(databases) or "any database")
                    )
                    raise UsageError(f"--collection {name}: {where}; name it as DATABASE/COLLECTION")
                sources.append(Source(found[0], name, explicit=True))
            return list(dict.fromkeys(sources))
        if not s.all_collections:  # in several databases, where the catalog has them
            return [
                Source(d, n, explicit=True)
                for d in databases
                for n in s.collections
                if len(databases) == 1 or n in catalog.collection_names(s.chroma_tenant, d)
            ]
        return [Source(d, n) for d in databases for n in catalog.collection_names(s.chroma_tenant, d)]

    def _remove_leftovers(self, chroma: ChromaStore) -> None:
        try:
            remove_leftovers(chroma, self.stores.db)
        except BackupError as error:
            log.warning("could not remove the leftovers of dead restores in database=%s: %s", chroma.database, error)

    def _known(self, database: str) -> set[str]:
        names = set(self.stores.db.catalog.collection_names(self.settings.chroma_tenant, database))
        try:
            names.update(self.stores.chroma_for(database).list_collection_names())
        except (ChromaUnavailable, DatabaseNotFound):
            pass
        return names
