"""Which collections a round works on, in a table (in-memory stores)."""

from __future__ import annotations

import pytest
from fakes import FakeChroma, FakeDb, FakeRestores, snapshot

from chroma_backup.core.selection import health_targets, selected_collections
from chroma_backup.settings import load_settings

LIVE = {"docs": "1", "faq": "2", "docs_restored": "3", "docs-restoring-4": "4"}


def settings(collections: str = "*"):
    return load_settings({"CHROMA_COLLECTION_NAME": collections}, env_file=None)


CASES = [
    (
        "* is every live collection but a running restore's working copy",
        "*",
        None,
        "backup",
        ["docs", "docs_restored", "faq"],
        {"docs-restoring-4"},
    ),
    ("a recovery target is backed up like any other", "*", None, "backup", ["docs", "docs_restored", "faq"], None),
    ("a list names exactly what is backed up", "faq,docs", None, "backup", ["faq", "docs"], set()),
    ("--collection wins over the setting", "*", ["faq"], "backup", ["faq"], set()),
    (
        "health with * also checks collections that have backups but are gone",
        "*",
        None,
        "health",
        ["docs", "docs_restored", "faq", "gone"],
        {"docs-restoring-4"},
    ),
    ("health with a list checks the list", "docs", None, "health", ["docs"], set()),
]


@pytest.mark.parametrize("case,setting,requested,kind,names,skipped", CASES, ids=[c[0] for c in CASES])
def test_selection(case, setting, requested, kind, names, skipped):
    db = FakeDb([snapshot(1, "docs"), snapshot(2, "gone")], FakeRestores(working={"docs-restoring-4"}))
    select = selected_collections if kind == "backup" else health_targets
    selection = select(settings(setting), FakeChroma(LIVE), db, requested)
    assert selection.names == names
    if skipped is not None:
        assert set(selection.excluded) == skipped
        assert all(why.startswith("a restore's working collection") for why in selection.excluded.values())
