"""The domain: backup, restore (with the verified swap), verify, retention, health and recovery.

Every function takes the stores as arguments, typed by the Protocols of ``ports``; nothing here
opens a store, reads a setting or prints.

- ``backup`` (and ``confirm``): a collection as a new snapshot, only changed records written
- ``restore``, ``swap``: a snapshot re-created exactly, verified, then given its name
- ``verify``, ``compare``: a live collection against a snapshot
- ``reading``: the read-ahead pipeline all of them share
- ``snapshots``: which snapshot a request means
- ``retention``: which snapshots go
- ``health``, ``recovery``, ``selection``: the health ladder, the recovery policy, which
  collections a round works on
"""

from chroma_backup.core.backup import BackupResult, export_collection_to_postgres
from chroma_backup.core.compare import collection_differences, copy_differences, json_differences
from chroma_backup.core.reading import read_tolerantly
from chroma_backup.core.restore import RestoreResult, import_postgres_to_chroma
from chroma_backup.core.retention import PruneResult, prune_snapshots
from chroma_backup.core.snapshots import resolve_snapshot, snapshot_info
from chroma_backup.core.swap import remove_leftovers
from chroma_backup.core.verify import VerifyResult, verify_collection

__all__ = [
    "BackupResult",
    "PruneResult",
    "RestoreResult",
    "VerifyResult",
    "collection_differences",
    "copy_differences",
    "export_collection_to_postgres",
    "import_postgres_to_chroma",
    "json_differences",
    "prune_snapshots",
    "read_tolerantly",
    "remove_leftovers",
    "resolve_snapshot",
    "snapshot_info",
    "verify_collection",
]
