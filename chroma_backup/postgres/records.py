"""Record versions: visibility, digests, COPY in and out, the health probe's sample."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from chroma_backup.errors import BackupError
from chroma_backup.postgres.listing import IdListing
from chroma_backup.postgres.session import Part, Session, _jsonb, _translated
from chroma_backup.records import RecordBatch, decode_metadata

# PostgreSQL's binary COPY format: a signature, flags and extension length; per row the field
# count, then each field as a 4-byte length (-1: NULL) and its bytes; a -1 field count ends it.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_FIELDS = struct.pack(">h", 9)
_NULL = struct.pack(">i", -1)
_LENGTH = struct.Struct(">i")


def _int8(value: int) -> bytes:
    return struct.pack(">iq", 8, value)


def _field(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


class RecordStore(Part):
    """The temporal record table of every collection."""

    def _visible(self, snapshot_id: int | None) -> tuple[str, tuple[Any, ...]]:
        if snapshot_id is None:
            return "valid_to IS NULL", ()
        return "valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)", (snapshot_id, snapshot_id)

    def record_digests(self, collection_ref: int, snapshot_id: int | None = None) -> dict[str, bytes]:
        """record_id -> digest for a snapshot (None: the current versions)."""
        visible, params = self._visible(snapshot_id)
        query = self.tables.fmt(
            "SELECT record_id, encode(digest, 'hex') FROM {t} WHERE collection_ref = %s AND " + visible
        )
        return {
            row[0]: bytes.fromhex(row[1])
            for row in self.session.copy_out(query, (collection_ref, *params), "reading record digests")
        }

    def iter_snapshot_records(
        self, collection_ref: int, snapshot_id: int | None, batch_size: int, record_ids: list[str] | None = None
    ) -> Iterator[RecordBatch]:
        """The records of a snapshot (or only ``record_ids`` of it) in batches of at most
        ``batch_size``, streamed by COPY."""
        visible, params = self._visible(snapshot_id)
        if record_ids is not None:
            visible += " AND record_id = ANY(%s)"
            params = (*params, list(record_ids))
        query = self.tables.fmt(
            "SELECT record_id, embedding, document IS NULL, document, metadata, uri IS NULL, uri, "
            "encode(digest, 'hex') "
            "FROM {t} WHERE collection_ref = %s AND " + visible
        )
        ids: list[str] = []
        vectors: list[bytes] = []
        documents: list[str | None] = []
        metadatas: list[dict[str, Any] | None] = []
        uris: list[str | None] = []
        digests: list[bytes] = []

        def flush() -> RecordBatch:
            blob = b"".join(vectors)
            matrix = np.frombuffer(blob, dtype="<f4").reshape(len(ids), -1) if ids else np.zeros((0, 0), "<f4")
            return RecordBatch(list(ids), matrix, list(documents), list(metadatas), list(uris), list(digests))

        for rid, emb, doc_null, doc, meta, uri_null, uri, digest in self.session.copy_out(
            query, (collection_ref, *params), "reading snapshot records"
        ):
            ids.append(rid)
            vectors.append(bytes.fromhex(emb[2:]))  # bytea hex output: \x....
            documents.append(None if doc_null == "t" else doc)
            metadatas.append(decode_metadata(meta))
            uris.append(None if uri_null == "t" else uri)
            digests.append(bytes.fromhex(digest))
            if len(ids) >= batch_size:
                yield flush()
                for column in (ids, vectors, documents, metadatas, uris, digests):
                    column.clear()
        if ids:
            yield flush()

    def analyze_records(self, added: int) -> None:
        """Refresh the record table's statistics after ``added`` records were only added (the
        next backup's joins are planned from them), when they are a tenth of the table or more
        or the table was never analyzed (autovacuum's own rule, 10%; re-analyzing a large
        shared table for every small collection would cost each backup ~0.2 s)."""
        with self.transaction("analyzing the record table") as cur:
            cur.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (self.tables.records.string,))
            row = cur.fetchone()
            if row is None or row[0] < 0 or added >= 0.1 * row[0]:
                cur.execute(self.tables.fmt("ANALYZE {t}"))

    def vacuum_records(self) -> None:
        """VACUUM (ANALYZE) the record table, so the space of versions closed by UPDATE or
        removed by prune is reused by the next inserts instead of growing the table (a row with
        a 384-d vector stays under PostgreSQL's 2 kB TOAST threshold, so closing a version
        leaves a whole dead row behind).  Runs outside any transaction."""
        conn = self.session.conn
        try:
            with _translated("vacuuming the record table"):
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(self.tables.fmt("VACUUM (ANALYZE) {t}"))
        except BaseException:
            self.session.reset_after_error()
            raise
        finally:
            if not conn.closed:
                conn.autocommit = False

    @contextmanager
    def listing(self, collection_ref: int, snapshot_id: int) -> Iterator[IdListing]:
        """A live collection's id listing against a snapshot's versions, in a transaction of its
        own that leaves nothing behind (verify)."""
        visible, params = self._visible(snapshot_id)
        with self.transaction("comparing the listing with the snapshot", commit=False) as cur:
            yield IdListing(self.session, cur, collection_ref, visible, params)

    @contextmanager
    def snapshot_writer(self, collection_ref: int, snapshot_id: int) -> Iterator[SnapshotWriter]:
        """One transaction holding every record change of a snapshot and its flip to complete."""
        with self.transaction("writing the snapshot") as cur:
            yield SnapshotWriter(self.session, cur, collection_ref, snapshot_id)

    def sample_record_ids(self, collection_ref: int, n: int) -> list[str]:
        """Up to ``n`` random ids of the current versions (the health probe's sample)."""
        with self.transaction("sampling record ids") as cur:
            cur.execute(
                self.tables.fmt(
                    "SELECT record_id FROM {t} WHERE collection_ref = %s AND valid_to IS NULL "
                    "ORDER BY random() LIMIT %s"
                ),
                (collection_ref, n),
            )
            return [row[0] for row in cur.fetchall()]


class SnapshotWriter:
    """Record changes of one snapshot, inside the snapshot's transaction (commit last)."""

    def __init__(self, session: Session, cur: Any, collection_ref: int, snapshot_id: int):
        self._db = session
        self._cur = cur
        self.collection_ref = collection_ref
        self.snapshot_id = snapshot_id
        self.bytes_written = 0
        self.listing = IdListing(session, cur, collection_ref, "valid_to IS NULL", ())  # against the current versions

    def close_versions(self, record_ids: Iterable[str]) -> int:
        """End the current version of these records (updated or deleted as of this snapshot)."""
        ids = list(record_ids)
        if not ids:
            return 0
        self._cur.execute(
            self._db.tables.fmt(
                "UPDATE {t} SET valid_to = %s WHERE collection_ref = %s AND valid_to IS NULL "
                "AND valid_from < %s AND record_id = ANY(%s)"
            ),
            (self.snapshot_id, self.collection_ref, self.snapshot_id, ids),
        )
        return int(self._cur.rowcount)

    def insert_versions(self, rows: Iterable[tuple[str, bytes, str | None, str | None, str | None, bytes]]) -> int:
        """COPY new versions (id, embedding, document, metadata JSON, uri, digest), valid from now
        on, in PostgreSQL's binary COPY format (half the bytes of hex text, and no parsing)."""
        head = _FIELDS + _int8(self.collection_ref)
        valid = _int8(self.snapshot_id) + _NULL
        parts = [_COPY_HEADER]
        for rid, vector, document, meta, uri, digest in rows:
            parts += (
                head,
                _field(rid.encode("utf-8")),
                valid,
                _field(digest),
                _field(vector),
                _NULL if document is None else _field(document.encode("utf-8")),
                _NULL if meta is None else _field(b"\x01" + meta.encode("utf-8")),  # jsonb version 1
                _NULL if uri is None else _field(uri.encode("utf-8")),
            )
        if len(parts) == 1:
            return 0
        parts.append(_COPY_TRAILER)
        payload = b"".join(parts)
        self.bytes_written += len(payload)
        self._cur.copy_expert(
            self._db.tables.fmt(
                "COPY {t} (collection_ref, record_id, valid_from, valid_to, digest, embedding, document, "
                "metadata, uri) "
                "FROM STDIN (FORMAT binary)"
            ).as_string(self._db.conn),
            io.BytesIO(payload),
            size=1 << 20,
        )
        return (len(parts) - 2) // 8

    def written(self, size: int, record_ids: list[str] | None = None) -> Iterator[list[tuple[str, bytes]]]:
        """(id, digest) of the versions this snapshot wrote (or of ``record_ids`` among them), in
        chunks of ``size``, through a server-side cursor in the snapshot's transaction."""
        query = self._db.tables.fmt(
            "SELECT record_id, digest FROM {t} WHERE collection_ref = %s AND valid_from = %s"
            + ("" if record_ids is None else " AND record_id = ANY(%s)")
        )
        params = (self.collection_ref, self.snapshot_id) + (() if record_ids is None else (list(record_ids),))
        cursor = self._db.conn.cursor(name=f"chroma_backup_written_{self.snapshot_id}")
        try:
            cursor.execute(query, params)
            while True:
                rows = cursor.fetchmany(size)
                if not rows:
                    return
                yield [(rid, bytes(digest)) for rid, digest in rows]
        finally:
            try:
                cursor.close()
            except Exception:  # noqa: BLE001 - the transaction already ended: the cursor went with it
                pass

    def replace_versions(self, rows: list[tuple[str, bytes, str | None, str | None, str | None, bytes]]) -> None:
        """This snapshot's versions of these records become ``rows`` (a later read of them)."""
        if rows:
            self._cur.execute(
                self._db.tables.fmt(
                    "DELETE FROM {t} WHERE collection_ref = %s AND valid_from = %s AND record_id = ANY(%s)"
                ),
                (self.collection_ref, self.snapshot_id, [row[0] for row in rows]),
            )
            self.insert_versions(rows)

    def discard_versions(self, record_ids: list[str], *, reopen: bool) -> dict[str, bytes | None]:
        """Take this snapshot's versions of these records out again.  Returns, per record, the
        digest of the version this snapshot had closed (None: the record was added by it); with
        ``reopen`` that version is current again (the record is unchanged as of this snapshot),
        else it stays closed (the record is deleted as of this snapshot)."""
        if not record_ids:
            return {}
        tb, cur = self._db.tables, self._cur
        cur.execute(
            tb.fmt("DELETE FROM {t} WHERE collection_ref = %s AND valid_from = %s AND record_id = ANY(%s)"),
            (self.collection_ref, self.snapshot_id, list(record_ids)),
        )
        cur.execute(
            tb.fmt(
                ("UPDATE {t} SET valid_to = NULL" if reopen else "SELECT record_id, digest FROM {t}")
                + " WHERE collection_ref = %s AND valid_to = %s AND record_id = ANY(%s)"
                + (" RETURNING record_id, digest" if reopen else "")
            ),
            (self.collection_ref, self.snapshot_id, list(record_ids)),
        )
        closed = {rid: bytes(digest) for rid, digest in cur.fetchall()}
        return {rid: closed.get(rid) for rid in record_ids}

    def complete(
        self,
        *,
        records: int,
        added: int,
        updated: int,
        deleted: int,
        dimension: int | None,
        content_digest: bytes,
        chroma_collection_id: str,
        collection_metadata_json: str | None,
        configuration_json: dict[str, Any] | None,
        schema_json: dict[str, Any] | None,
        server_version: str,
        health: str | None = None,
        health_detail: str | None = None,
    ) -> None:
        """Flip the snapshot to complete; committed with the record changes when the block exits.
        ``health`` (and its detail), when given, replaces the label the snapshot began with."""
        self._cur.execute(
            self._db.tables.fmt(
                "UPDATE {snap} SET status = 'complete', finished_at = clock_timestamp(), record_count = %s, "
                "added = %s, updated = %s, deleted = %s, dimension = %s, content_digest = %s, "
                "chroma_collection_id = %s, collection_metadata = %s::jsonb, configuration_json = %s, "
                "schema_json = %s, "
                "server_version = %s, health = coalesce(%s, health), health_detail = coalesce(%s, health_detail) "
                "WHERE snapshot_id = %s AND status = 'running'"
            ),
            (
                records,
                added,
                updated,
                deleted,
                dimension,
                content_digest,
                chroma_collection_id,
                collection_metadata_json,
                _jsonb(configuration_json),
                _jsonb(schema_json),
                server_version,
                health,
                health_detail,
                self.snapshot_id,
            ),
        )
        if self._cur.rowcount != 1:
            raise BackupError(f"snapshot {self.snapshot_id} is no longer running (marked failed by another process)")
