"""What changed between two snapshots of a collection, read from the record versions.

A record whose version is the same row in both snapshots (the same ``valid_from``) did not
change, so the comparison is one full join of the two snapshots' visible versions that skips
those; what is left is streamed by COPY in record-id order, each row saying which parts differ.
Memory stays flat whatever the collection's size.
"""

from __future__ import annotations

from collections.abc import Iterator

from chroma_backup.postgres.session import Part

PARTS = ("embedding", "document", "metadata", "uri")


class Changes(Part):
    def between(self, collection_ref: int, older: int, newer: int) -> Iterator[tuple[str, str, tuple[str, ...]]]:
        """(record id, ``added`` | ``updated`` | ``deleted``, the parts that differ) of every
        record that differs between snapshot ``older`` and snapshot ``newer``."""
        visible = "collection_ref = %s AND valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)"
        query = self.tables.fmt(
            "SELECT coalesce(a.record_id, b.record_id), a.record_id IS NULL, b.record_id IS NULL, "
            "a.embedding IS DISTINCT FROM b.embedding, a.document IS DISTINCT FROM b.document, "
            "a.metadata IS DISTINCT FROM b.metadata, a.uri IS DISTINCT FROM b.uri "
            "FROM (SELECT * FROM {t} WHERE " + visible + ") a "
            "FULL JOIN (SELECT * FROM {t} WHERE " + visible + ") b ON a.record_id = b.record_id "
            "WHERE a.valid_from IS DISTINCT FROM b.valid_from ORDER BY 1"
        )
        params = (collection_ref, older, older, collection_ref, newer, newer)
        for record_id, added, deleted, *differs in self.session.copy_out(query, params, "comparing two snapshots"):
            if added == "t":
                yield record_id, "added", ()
            elif deleted == "t":
                yield record_id, "deleted", ()
            else:
                parts = tuple(part for part, flag in zip(PARTS, differs, strict=True) if flag == "t")
                if parts:  # a new version with the same content (changed and changed back) is no change
                    yield record_id, "updated", parts
