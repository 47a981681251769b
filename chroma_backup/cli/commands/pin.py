"""``pin``: keep a snapshot forever (retention never prunes it), optionally with a note."""

from __future__ import annotations

import argparse

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import emit_json
from chroma_backup.cli.parser import positive_int

NAME = "pin"
SUMMARY = "keep a snapshot forever (prune never deletes it), with a note"
HELP = "Pin a complete snapshot: retention never prunes it. --note labels it (e.g. 'before the re-index')."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", metavar="NAME", help="collection (default: CHROMA_COLLECTION_NAME if one)")
    p.add_argument("--snapshot", type=positive_int, metavar="ID", required=True, help="the snapshot to pin")
    p.add_argument("--note", metavar="TEXT", help="why it is kept")
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")


def run(args: argparse.Namespace, ops: Operations) -> int:
    snapshot = ops.pin(args.collection, args.snapshot, pinned=True, note=args.note)
    if args.json:
        emit_json(snapshot.as_json())
    else:
        note = f" ({snapshot.note})" if snapshot.note else ""
        print(f"pinned snapshot {snapshot.snapshot_id} of {snapshot.collection}{note}: prune keeps it")
    return 0
