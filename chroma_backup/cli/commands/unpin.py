"""``unpin``: let retention decide about a pinned snapshot again."""

from __future__ import annotations

import argparse

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import emit_json
from chroma_backup.cli.parser import positive_int

NAME = "unpin"
SUMMARY = "let retention decide about a pinned snapshot again"
HELP = "Unpin a snapshot: the retention policy decides about it again (its note stays)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", metavar="NAME", help="collection (default: CHROMA_COLLECTION_NAME if one)")
    p.add_argument("--snapshot", type=positive_int, metavar="ID", required=True, help="the snapshot to unpin")
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")


def run(args: argparse.Namespace, ops: Operations) -> int:
    snapshot = ops.pin(args.collection, args.snapshot, pinned=False)
    if args.json:
        emit_json(snapshot.as_json())
    else:
        print(f"unpinned snapshot {snapshot.snapshot_id} of {snapshot.collection}: retention decides about it again")
    return 0
