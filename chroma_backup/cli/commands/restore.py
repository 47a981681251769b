"""``restore``: a snapshot into a new (or replaced) collection, verified."""

from __future__ import annotations

import argparse
import sys

from chroma_backup.app.operations import Operations, Server
from chroma_backup.cli.output import Progress, emit_json, parse_time
from chroma_backup.cli.parser import positive_int, server_options

NAME = "restore"
SUMMARY = "restore a snapshot into a new (or replaced) collection, verified"
HELP = "Restore a snapshot into a new collection (default NEW_COLLECTION_NAME), verified."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collection",
        metavar="NAME",
        help="source collection, or DATABASE/NAME where databases share names (default: CHROMA_COLLECTION_NAME if one)",
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


def run(args: argparse.Namespace, ops: Operations) -> int:
    progress = Progress(f"restore {args.collection or ''}".strip(), None, not args.json and not args.dry_run)
    try:
        result = ops.restore(
            args.collection,
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
