"""``restore``: a snapshot into a new (or replaced) collection, verified; ``restore --all``: every
backed-up collection of the selection at once, a plan first (``app.server_restore``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from chroma_backup.app.operations import Operations
from chroma_backup.app.server_restore import ServerRestoreResult
from chroma_backup.app.stores import Server
from chroma_backup.cli.output import Progress, dash, emit_json, parse_time
from chroma_backup.cli.parser import positive_int, server_options
from chroma_backup.core.records_restore import MODES, RecordSelection
from chroma_backup.core.server_restore import TO_RESTORE, PlannedRestore
from chroma_backup.core.where import validate_where
from chroma_backup.errors import UsageError
from chroma_backup.states import RESTORED

NAME = "restore"
SUMMARY = "restore a snapshot into a new (or replaced) collection, verified; --all: a whole server"
HELP = (
    "Restore a snapshot into a new collection (default NEW_COLLECTION_NAME), verified. With --all, "
    "every backed-up collection of the selection under its own name and database (a plan first)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collection",
        metavar="NAME",
        action="append",
        help="source collection, or DATABASE/NAME where databases share names (default: CHROMA_COLLECTION_NAME if "
        "one); with --all, may be repeated",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--snapshot", type=positive_int, metavar="ID", help="snapshot id (default: latest complete)")
    which.add_argument(
        "--at", metavar="ISO8601", help="newest complete snapshot finished at or before this time (UTC if no zone)"
    )
    p.add_argument("--to", metavar="TARGET", help="target collection name (default: NEW_COLLECTION_NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing target (after the restore verified)")
    p.add_argument("--dry-run", action="store_true", help="show what would be restored, change nothing")
    server_options(p, "to-", "restore into the Chroma server at HOST instead of CHROMADB_HOST")
    p.add_argument(
        "--to-database",
        metavar="DATABASE",
        help="restore into this database of the tenant (default: the source collection's)",
    )
    p.add_argument("--reason", metavar="TEXT", help="why (recorded in the restores table)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    records = p.add_argument_group("records (written back into the live collection)")
    chosen = records.add_mutually_exclusive_group()
    chosen.add_argument("--ids", nargs="+", metavar="ID", help="these records of the snapshot")
    chosen.add_argument("--ids-file", metavar="FILE", help="the records whose ids FILE lists, one per line")
    chosen.add_argument(
        "--where",
        metavar="JSON",
        help='the records whose stored metadata passes a Chroma filter, e.g. {"source": "a.md"}',
    )
    records.add_argument(
        "--into-live",
        action="store_true",
        help="write them into the live collection itself (required with --ids, --ids-file, --where)",
    )
    records.add_argument(
        "--mode",
        choices=MODES,
        default="merge",
        help="missing: only records the collection lacks; merge (default): also those that differ from the "
        "snapshot; replace: every chosen record",
    )
    whole = p.add_argument_group("whole server (--all)")
    whole.add_argument(
        "--all",
        action="store_true",
        help="every collection with backups in the selection (CHROMA_DATABASE, CHROMA_COLLECTION_NAME, or "
        "--collection repeated), each from its newest snapshot taken while ok (--at: at or before that time), "
        "under its own name and database; missing databases are created",
    )
    whole.add_argument(
        "--name-template",
        metavar="TEMPLATE",
        default="{name}",
        help="target names, {name} expanded (default {name}; e.g. {name}_dr for a side-by-side restore)",
    )
    whole.add_argument(
        "--skip-existing", action="store_true", help="leave collections that already exist on the target alone"
    )
    whole.add_argument(
        "--parallel",
        type=positive_int,
        metavar="N",
        help="collections restored at once (default RESTORE_PARALLEL)",
    )


def run(args: argparse.Namespace, ops: Operations) -> int:
    if args.ids or args.ids_file or args.where is not None:
        return run_records(args, ops)
    if args.into_live or args.mode != "merge":
        raise UsageError("--into-live and --mode go with --ids, --ids-file or --where")
    if args.all:
        return run_all(args, ops)
    for option, given in (
        ("--name-template", args.name_template != "{name}"),
        ("--skip-existing", args.skip_existing),
        ("--parallel", args.parallel is not None),
    ):
        if given:
            raise UsageError(f"{option} goes with --all")
    if args.collection and len(args.collection) > 1:
        raise UsageError("--collection may be given once (or repeated with --all)")
    collection = args.collection[0] if args.collection else None
    progress = Progress(f"restore {collection or ''}".strip(), None, not args.json and not args.dry_run)
    try:
        result = ops.restore(
            collection,
            to=args.to,
            snapshot_id=args.snapshot,
            at=parse_time(args.at) if args.at else None,
            overwrite=args.overwrite,
            dry_run=args.dry_run,
            reason=args.reason,
            server=Server(args.to_host, args.to_port, args.to_ssl),
            to_database=args.to_database,
            progress=progress,
        )
    finally:
        progress.close()
    name, target = result.source, result.target
    if args.json:
        emit_json(result.as_json())
    elif args.dry_run:
        print(
            f"dry run: would restore snapshot {result.snapshot_id} of {name} ({result.records} records, "
            f"space {result.space}) into {target} on {result.server}"
            + (" replacing the existing collection" if result.target_exists else "")
        )
    else:
        replaced = ""
        if result.replaced:
            replaced = " (replaced the existing collection" + (
                f"; the old one remains as {result.replaced_kept})" if result.replaced_kept else ")"
            )
        print(
            f"restored snapshot {result.snapshot_id} of {name} into {target}: {result.records} records, "
            f"verified identical, {result.seconds:.1f}s{replaced}"
        )
    if result.differences:
        # The copy is kept (its records are identical); its configuration is not exact.
        print(
            f"error: {target} holds every record of snapshot {result.snapshot_id} identically, but its "
            f"configuration differs from the snapshot: " + "; ".join(result.differences),
            file=sys.stderr,
        )
        return 1
    return 0


def run_all(args: argparse.Namespace, ops: Operations) -> int:
    for option, given in (("--to", args.to), ("--snapshot", args.snapshot), ("--to-database", args.to_database)):
        if given:
            raise UsageError(f"{option} does not go with --all (use --name-template, --at, --to-host)")
    text = not args.json
    progress = Progress("restore --all", None, text and not args.dry_run)

    def on_plan(result: ServerRestoreResult) -> None:
        if text:
            _print_plan(result)
            if result.plan and not args.dry_run and not result.refused:
                progress.total = sum(item.records for item in result.plan)
                if progress.bar is not None:
                    progress.bar.total = progress.total

    def on_done(item: PlannedRestore) -> None:
        if text:
            _print_outcome(item, progress)

    try:
        result = ops.restore_all(
            args.collection,
            at=parse_time(args.at) if args.at else None,
            name_template=args.name_template,
            overwrite=args.overwrite,
            skip_existing=args.skip_existing,
            dry_run=args.dry_run,
            reason=args.reason,
            server=Server(args.to_host, args.to_port, args.to_ssl),
            parallel=args.parallel,
            progress=progress,
            on_plan=on_plan,
            on_done=on_done,
        )
    finally:
        progress.close()
    if args.json:
        emit_json(result.as_json())
    elif not args.dry_run and not result.refused:
        n = result.summary()
        print(
            f"restore --all: {n['restored']} restored, {n['already_restored']} already restored, "
            f"{n['failed']} failed; {n['records']:,} records in {result.seconds:.1f}s"
        )
    if result.refused:
        print(f"error: {result.refused}; nothing was restored", file=sys.stderr)
        return 1
    problems = [item for item in result.plan if not item.fine]
    if problems and not args.dry_run:
        print(
            f"error: {len(problems)} collection(s) not restored exactly: "
            + "; ".join(
                f"{item.source_label}: {item.error or 'configuration differs: ' + '; '.join(item.differences)}"
                for item in problems
            ),
            file=sys.stderr,
        )
        return 1
    return 0


def _print_plan(result: ServerRestoreResult) -> None:
    which = (
        f"newest complete snapshot at or before {result.at.isoformat()}"
        if result.at
        else "newest snapshot taken while ok"
    )
    records = sum(item.records for item in result.plan if item.action in TO_RESTORE)
    print(
        f"{'dry run: ' if result.dry_run else ''}plan for {result.server} ({which}; "
        f"{records:,} records to restore, {result.parallel} at a time):"
    )
    rows = [("SOURCE", "TARGET", "SNAPSHOT", "RECORDS", "SPACE", "ACTION")]
    for item in result.plan:
        action = item.action + (" (creates the database)" if item.create_database and item.action in TO_RESTORE else "")
        rows.append(
            (
                item.source_label,
                item.target_label,
                dash(item.snapshot_id),
                f"{item.records:,}" if item.snapshot_id else "-",
                item.space or "-",
                action + (f": {item.detail}" if item.detail else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[2].rjust(widths[2]), row[3].rjust(widths[3]), row[4].ljust(widths[4]), row[5]]
        print("  " + "  ".join(cells).rstrip())
    if result.dry_run:
        print("dry run: nothing was changed")


def _print_outcome(item: PlannedRestore, progress: Progress) -> None:
    if item.outcome == RESTORED and item.restore is not None:
        line = (
            f"  restored {item.source_label} -> {item.target_label}: snapshot {item.snapshot_id}, "
            f"{item.records:,} records, verified identical, {item.seconds:.1f}s"
            + ("" if item.restore.exact else " (configuration differs: " + "; ".join(item.differences) + ")")
        )
    else:
        line = f"  FAILED {item.source_label} -> {item.target_label}: {item.error}"
    if progress.bar is not None:
        progress.bar.write(line)
    else:
        print(line, flush=True)


def run_records(args: argparse.Namespace, ops: Operations) -> int:
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
