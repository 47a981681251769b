"""chroma-backup: versioned, verified backups of ChromaDB collections in PostgreSQL, and a daemon
that watches the collections' health and restores a broken one by itself."""

__version__ = "1.0.0"
