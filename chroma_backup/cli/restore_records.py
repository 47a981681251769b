"""``restore --ids | --ids-file | --where --into-live``: records of a snapshot written back into
the live collection (``core.records_restore`` does the work)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import Progress, emit_json, parse_time
from chroma_backup.core.records_restore import RecordSelection
from chroma_backup.core.where import validate_where
from chroma_backup.errors import UsageError


def run(args: argparse.Namespace, ops: Operations) -> int:
    for option, given in (
        ("--all", args.all),
        ("--to", args.to),
        ("--overwrite", args.overwrite),
        ("--to-database", args.to_database),
        ("--to-host", args.to_host),
    ):
        if given:
            raise UsageError(f"{option} does not go with --ids, --ids-file or --where (records go back in place)")
    if not args.into_live:
        raise UsageError("--ids, --ids-file and --where write into the live collection: add --into-live")
    if args.collection and len(args.collection) > 1:
        raise UsageError("--collection may be given once (or repeated with --all)")
    selection = RecordSelection(
        id_pages=[args.ids] if args.ids else (_id_file_pages(args.ids_file) if args.ids_file else None),
        where=validate_where(_json_option("--where", args.where)) if args.where is not None else None,
    )
    progress = Progress("restore records", None, not args.json and not args.dry_run)
    try:
        result = ops.restore_records(
            args.collection[0] if args.collection else None,
            selection,
            snapshot_id=args.snapshot,
            at=parse_time(args.at) if args.at else None,
            mode=args.mode,
            dry_run=args.dry_run,
            reason=args.reason,
            progress=progress,
        )
    finally:
        progress.close()
    if args.json:
        emit_json(result.as_json())
    else:
        counts = (
            f"{result.selected:,} chosen: {result.missing:,} missing, {result.different:,} different, "
            f"{result.unchanged:,} unchanged"
        )
        if args.dry_run:
            print(
                f"dry run: would write {result.written:,} records of snapshot {result.snapshot_id} into "
                f"{result.collection} ({args.mode}; {counts}); nothing was changed"
            )
        else:
            print(
                f"wrote {result.written:,} records of snapshot {result.snapshot_id} into {result.collection} "
                f"({args.mode}; {counts}), verified, {result.seconds:.1f}s"
            )
        for kind in ("missing", "different"):
            if result.examples[kind]:
                print(f"  {kind}: " + ", ".join(repr(i) for i in result.examples[kind]))
    if result.not_in_snapshot:
        print(
            f"error: {result.not_in_snapshot} id(s) are not in snapshot {result.snapshot_id} "
            f"(e.g. {result.examples['absent'][0]!r})",
            file=sys.stderr,
        )
        return 1
    return 0


def _json_option(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise UsageError(f"{option}: not valid JSON ({error})") from None


ID_FILE_PAGE = 1000


def _id_file_pages(path: str) -> Iterator[list[str]]:
    """The ids a file lists, one per line (blank lines skipped), a page at a time."""
    try:
        handle = open(path, encoding="utf-8")  # closed when the pages are consumed
    except OSError as error:
        raise UsageError(f"--ids-file: cannot read {path!r}: {error.strerror}") from None

    def pages() -> Iterator[list[str]]:
        with handle:
            page: list[str] = []
            for line in handle:
                record_id = line.rstrip("\r\n")
                if record_id:
                    page.append(record_id)
                if len(page) >= ID_FILE_PAGE:
                    yield page
                    page = []
            if page:
                yield page

    return pages()
