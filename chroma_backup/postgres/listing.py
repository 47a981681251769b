"""A collection's id listing kept in PostgreSQL, so per-record bookkeeping never grows Python.

Backup and verify stream the ids Chroma lists into a temporary table by COPY, read them back in
the listing's order joined with the stored digests (a server-side cursor, a few thousand rows at a
time), and find what is stored but not listed with one anti-join.  Whatever the collection's size,
the process holds a page of ids, never all of them.  The tables are the connection's own and are
emptied when the caller's transaction ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg2
from psycopg2 import sql

from chroma_backup.postgres.session import Session, _copy_text

LISTED = sql.Identifier("chroma_backup_listed")
GONE = sql.Identifier("chroma_backup_gone")
FETCH_ROWS = 10_000  # rows per FETCH from the listing cursor (~1 MB of ids and digests)
ANALYZE_FROM = 10_000  # listed ids from which the temporary table's statistics are worth taking
_cursor_names = itertools.count(1)

Chunk = list[tuple[str, "bytes | None"]]  # (record id, stored digest or None), in listing order


class _IdLines:
    """A file-like ``read`` over pages of ids, as COPY text lines: COPY pulls the listing as the
    Chroma response arrives.  An error reading the pages ends the COPY early and is kept in
    ``failure`` (psycopg2 would turn it into a PostgreSQL error and lose its class)."""

    def __init__(self, pages: Iterable[list[str]]):
        self._pages = iter(pages)
        self._buffer = b""
        self.count = 0
        self.failure: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        while self.failure is None and (size < 0 or len(self._buffer) < size):
            try:
                page = next(self._pages, None)
            except BaseException as error:  # noqa: BLE001 - re-raised by IdListing.load once COPY returns
                self.failure = error
                return b""
            if page is None:
                break
            self.count += len(page)
            self._buffer += "".join(_copy_text(record_id) + "\n" for record_id in page).encode("utf-8")
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


class IdListing:
    """The ids listed from a live collection, against the versions stored for ``collection_ref``
    that ``visible`` selects (the current ones for a backup, a snapshot's for a verify)."""

    def __init__(self, session: Session, cur: Any, collection_ref: int, visible: str, params: tuple[Any, ...]):
        self._session = session
        self._cur = cur
        self._stored = session.tables.fmt("SELECT record_id, digest FROM {t} WHERE collection_ref = %s AND " + visible)
        self._stored_params = (collection_ref, *params)
        self.count = 0
        self._gone = False  # forget() wrote ids that _drop_gone must take out

    def load(self, pages: Iterable[list[str]]) -> int:
        """Stream the listing (pages of ids, in the collection's order) into the table."""
        cur = self._cur
        # work_mem: the ordered join sorts in memory up to ~1M ids.  enable_nestloop: every
        # statement here is a bulk join of the whole listing, a nested loop is never right, and
        # the planner picks one (quadratic: 30 s at 20k ids) whenever the record table's
        # statistics are stale, e.g. right after its first backup.  The tables are made once per
        # connection and emptied at the end of every transaction (a round over a thousand small
        # collections would otherwise create and drop two tables per collection); one round trip.
        cur.execute(
            sql.SQL(
                "SET LOCAL work_mem = '64MB'; SET LOCAL enable_nestloop = off; "
                "CREATE TEMP TABLE IF NOT EXISTS {listed} (ord bigint GENERATED ALWAYS AS IDENTITY, "
                "record_id text NOT NULL) ON COMMIT DELETE ROWS; "
                "CREATE TEMP TABLE IF NOT EXISTS {gone} (record_id text NOT NULL) ON COMMIT DELETE ROWS"
            ).format(listed=LISTED, gone=GONE)
        )
        lines = _IdLines(pages)
        try:
            cur.copy_expert(
                sql.SQL("COPY {} (record_id) FROM STDIN").format(LISTED).as_string(self._session.conn),
                lines,
                size=1 << 16,
            )
        except psycopg2.Error:
            if lines.failure is None:
                raise
        if lines.failure is not None:
            raise lines.failure  # the listing is incomplete: the caller's transaction rolls back
        if lines.count >= ANALYZE_FROM:  # a small listing joins fast without statistics
            cur.execute(sql.SQL("ANALYZE {}").format(LISTED))
        self.count = lines.count
        return self.count

    def chunks(self, size: int) -> Iterator[Chunk]:
        """The listed ids in chunks of ``size``, each with its stored digest (None: not stored)."""
        query = sql.SQL(
            "SELECT l.record_id, s.digest FROM {listed} l LEFT JOIN ({stored}) s "
            "ON s.record_id = l.record_id ORDER BY l.ord"
        ).format(listed=LISTED, stored=self._stored)
        if 0 < self.count <= FETCH_ROWS:  # a small listing: one round trip, no server-side cursor
            self._cur.execute(query, self._stored_params)
            yield from _in_chunks(self._cur.fetchall(), size)
            return
        cursor = self._session.conn.cursor(name=f"chroma_backup_listing_{next(_cursor_names)}")
        try:
            cursor.execute(query, self._stored_params)
            while True:
                rows = cursor.fetchmany(FETCH_ROWS)
                if not rows:
                    return
                yield from _in_chunks(rows, size)
        finally:
            try:
                cursor.close()
            except psycopg2.Error:
                pass  # the transaction already ended (an error elsewhere): the cursor went with it

    def unlisted_ids(self, size: int) -> Iterator[list[str]]:
        """Every stored record the listing lacks, in pages of ``size`` ids in id order (one
        anti-join through a server-side cursor)."""
        self._drop_gone()
        query = sql.SQL("SELECT s.record_id FROM ({stored}) s WHERE {unlisted} ORDER BY s.record_id").format(
            stored=self._stored, unlisted=_UNLISTED
        )
        cursor = self._session.conn.cursor(name=f"chroma_backup_unlisted_{next(_cursor_names)}")
        try:
            cursor.execute(query, self._stored_params)
            while True:
                rows = cursor.fetchmany(size)
                if not rows:
                    return
                yield [row[0] for row in rows]
        finally:
            try:
                cursor.close()
            except psycopg2.Error:
                pass  # the transaction already ended: the cursor went with it

    def stored_count(self) -> int:
        """How many versions ``visible`` selects (a snapshot's size)."""
        self._cur.execute(sql.SQL("SELECT count(*) FROM ({}) s").format(self._stored), self._stored_params)
        return int(self._cur.fetchone()[0])

    def forget(self, record_ids: list[str]) -> None:
        """Listed ids whose records were gone when read (deleted meanwhile): not in the collection."""
        if record_ids:
            self._cur.execute(sql.SQL("INSERT INTO {} SELECT unnest(%s::text[])").format(GONE), (record_ids,))
            self._gone = True

    def _drop_gone(self) -> None:
        """Take the ids gone when read out of the listing (one set-wise join), so that "not
        listed" below means "not in the collection"."""
        if not self._gone:
            return
        self._cur.execute(
            sql.SQL("DELETE FROM {listed} l USING {gone} g WHERE l.record_id = g.record_id").format(
                listed=LISTED, gone=GONE
            )
        )
        self._cur.execute(sql.SQL("TRUNCATE {}").format(GONE))
        self._gone = False

    def close_unlisted(self, snapshot_id: int, collection_ref: int) -> int:
        """End the current version of every stored record the listing lacks (deleted as of
        ``snapshot_id``); returns how many."""
        self._drop_gone()
        self._cur.execute(
            self._session.tables.fmt(
                "UPDATE {t} s SET valid_to = %s WHERE s.collection_ref = %s AND s.valid_to IS NULL "
                "AND s.valid_from < %s AND {unlisted}",
                unlisted=_UNLISTED,
            ),
            (snapshot_id, collection_ref, snapshot_id),
        )
        return int(self._cur.rowcount)

    def unlisted(self, examples: int) -> tuple[int, list[str]]:
        """How many stored records the listing lacks, and the first ``examples`` of their ids
        (one anti-join: the count is taken over all of it before the limit)."""
        self._drop_gone()
        self._cur.execute(
            sql.SQL(
                "SELECT s.record_id, count(*) OVER () FROM ({stored}) s WHERE {unlisted} ORDER BY s.record_id LIMIT %s"
            ).format(stored=self._stored, unlisted=_UNLISTED),
            (*self._stored_params, examples),
        )
        rows = self._cur.fetchall()
        return (rows[0][1] if rows else 0), [row[0] for row in rows]


def _in_chunks(rows: list[tuple[str, Any]], size: int) -> Iterator[Chunk]:
    for start in range(0, len(rows), size):
        yield [(rid, None if digest is None else bytes(digest)) for rid, digest in rows[start : start + size]]


# Stored ids (alias s) that the listing lacks: an anti-join, never a per-row lookup.
_UNLISTED = sql.SQL("NOT EXISTS (SELECT 1 FROM {} l WHERE l.record_id = s.record_id)").format(LISTED)
