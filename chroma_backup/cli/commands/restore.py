"""``restore``: a snapshot into a new (or replaced) collection, verified; with ``--all`` the whole
server (``cli.restore_all``); with ``--ids``, ``--ids-file`` or ``--where`` records written back
into the live collection (``cli.restore_records``)."""

from __future__ import annotations

import argparse
import sys

from chroma_backup.app.operations import Operations
from chroma_backup.app.stores import Server
from chroma_backup.cli import restore_all, restore_records
from chroma_backup.cli.output import Progress, emit_json, parse_time
from chroma_backup.cli.parser import positive_int, server_options
from chroma_backup.core.records_restore import MODES
from chroma_backup.errors import UsageError

NAME = "restore"
SUMMARY = "restore a snapshot (or --all: a whole server; --ids/--where: records), verified"
HELP = (
    "Restore a snapshot into a new collection (default NEW_COLLECTION_NAME), verified. With --all, every "
    "backed-up collection of the selection under its own name and database (a plan first); with --ids, "
    "--ids-file or --where, those records of the snapshot written back into the live collection."
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
        return restore_records.run(args, ops)
    if args.into_live or args.mode != "merge":
        raise UsageError("--into-live and --mode go with --ids, --ids-file or --where")
    if args.all:
        return restore_all.run(args, ops)
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
