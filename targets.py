"""Which collections a command or job works on."""

from __future__ import annotations

import re
from typing import Any

from config import Settings

TEMPORARY_MARK = "-restoring-"  # export_import.temporary_name puts it in every temporary restore


def selected_collections(settings: Settings, chroma: Any, requested: list[str] | None) -> list[str]:
    """--collection, else CHROMA_COLLECTION_NAME; ``*`` = every collection on the server except
    restore targets of other collections and temporary restore collections (a recovered copy is
    not backed up as a collection of its own)."""
    if requested:
        return list(dict.fromkeys(requested))
    if not settings.all_collections:
        return list(settings.collections)
    return [name for name in chroma.list_collection_names() if not is_restore_target(settings, name)]


def is_restore_target(settings: Settings, name: str) -> bool:
    """True for names NEW_COLLECTION_NAME produces (e.g. ``*_restored``) and temporary restores."""
    template = settings.new_collection_name
    pattern = "^" + ".+".join(re.escape(part) for part in template.split("{name}")) + "$"
    return TEMPORARY_MARK in name or re.match(pattern, name) is not None


def health_targets(settings: Settings, chroma: Any, db: Any, requested: list[str] | None) -> list[str]:
    """Collections to check: as ``selected_collections``, and with ``*`` also every collection
    that has backups (a deleted collection no longer shows up in Chroma's list)."""
    if requested or not settings.all_collections:
        return selected_collections(settings, chroma, requested)
    live = selected_collections(settings, chroma, None) if chroma is not None else []
    backed_up = db.collection_names(settings.chroma_tenant, settings.chroma_database)
    return list(dict.fromkeys(live + [n for n in backed_up if not is_restore_target(settings, n)]))
