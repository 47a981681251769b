"""``backup``: back up collections now."""

from __future__ import annotations

import argparse
import logging
import sys

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import Progress, emit_json
from chroma_backup.states import COMPLETE, OK, SKIPPED

log = logging.getLogger(__name__)

NAME = "backup"
SUMMARY = "back up collections now"
HELP = "Back up collections now (only changed records are written)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collection",
        action="append",
        metavar="NAME",
        help="collection to back up (repeatable; default: CHROMA_COLLECTION_NAME)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="no-op, kept for old scripts: every readable collection is backed up, labelled with its verdict",
    )
    p.add_argument("--note", metavar="TEXT", help="label the snapshots (e.g. 'before the migration to 1.x')")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace, ops: Operations) -> int:
    if args.force:
        log.info("backup --force is a no-op: every readable collection is backed up, labelled with its verdict")
    results = ops.backup_round(
        args.collection, progress=lambda name: Progress(f"backup {name}", None, not args.json), note=args.note
    )
    if args.json:
        emit_json([r.as_json() for r in results])
    else:
        for r in results:
            if r.status == COMPLETE:
                label = "" if r.health == OK else f" [health: {r.health}]"
                print(
                    f"{r.collection}: snapshot {r.snapshot_id} complete, {r.records} records "
                    f"(+{r.added} ~{r.updated} -{r.deleted}) in {r.seconds:.1f}s{label}"
                )
            else:
                print(f"{r.collection}: {r.status}: {r.error}")
    if not results:
        print("no collections to back up", file=sys.stderr)
    # A collection another process was backing up (or restoring) is its work: skipped, not failed.
    return 0 if results and all(r.status in (COMPLETE, SKIPPED) for r in results) else 1
