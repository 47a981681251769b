"""The PostgreSQL door's public face: ``Database`` (one connection and its parts: catalog, record
versions, restores, verdicts, retention, locks, schema) and the embedded server.  The door itself
is ``chroma_backup.postgres``, the only package that imports psycopg2."""

from chroma_backup.postgres import Database, EmbeddedPostgres

__all__ = ["Database", "EmbeddedPostgres"]
