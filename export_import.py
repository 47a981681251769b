"""The backup and restore functions by the names the project was first described with.

``export_collection_to_postgres(chroma, db, name)`` backs one collection up as a new snapshot;
``import_postgres_to_chroma(chroma, db, name, target=...)`` restores a snapshot of it, verified.
They live in ``chroma_backup.core.backup`` and ``chroma_backup.core.restore``.
"""

from chroma_backup.core.backup import export_collection_to_postgres
from chroma_backup.core.restore import import_postgres_to_chroma

__all__ = ["export_collection_to_postgres", "import_postgres_to_chroma"]
