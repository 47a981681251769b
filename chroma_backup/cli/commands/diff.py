"""``diff``: what changed between two snapshots, or between a snapshot and the live collection."""

from __future__ import annotations

import argparse
import json
import sys

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import parse_time
from chroma_backup.cli.parser import positive_int
from chroma_backup.core.diff import LIVE, PARTS, Change, DiffResult

NAME = "diff"
SUMMARY = "what changed between two snapshots, or a snapshot and the live collection"
HELP = (
    "Count (and with --ids or --json list) the records added, updated (saying which parts) and deleted "
    "between a snapshot and another one or the live collection (exit 1 when anything changed)."
)
_MARK = {"added": "+", "updated": "~", "deleted": "-"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", metavar="NAME", help="collection (default: CHROMA_COLLECTION_NAME if one)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--from", dest="from_snapshot", type=positive_int, metavar="ID", help="older snapshot id")
    which.add_argument("--at", metavar="ISO8601", help="older snapshot: the newest complete one at or before this time")
    p.add_argument(
        "--to", default=LIVE, metavar="ID|live", help="newer snapshot id, or live (the default): the collection now"
    )
    p.add_argument("--ids", action="store_true", help="list every changed id (+ added, ~ updated, - deleted)")
    p.add_argument("--json", action="store_true", help="print the changes and the summary as JSON, streamed")


def run(args: argparse.Namespace, ops: Operations) -> int:
    out = sys.stdout
    first = True

    def emit(change: Change) -> None:
        nonlocal first
        if args.json:
            out.write(("" if first else ",\n") + json.dumps(change.as_json(), ensure_ascii=False))
            first = False
        elif args.ids:
            parts = f" ({','.join(change.parts)})" if change.parts else ""
            out.write(f"{_MARK[change.kind]} {change.record_id}{parts}\n")

    if args.json:
        out.write('{"changes": [\n')
    result = ops.diff(
        args.collection,
        from_snapshot=args.from_snapshot,
        at=parse_time(args.at) if args.at else None,
        to=args.to,
        on_change=emit if args.json or args.ids else None,
    )
    if args.json:
        out.write("\n],\n" + json.dumps({"summary": result.summary()}, ensure_ascii=False)[1:] + "\n")
    else:
        print(_summary(result))
    return 1 if result.changed else 0


def _summary(result: DiffResult) -> str:
    target = "live" if result.to == LIVE else f"snapshot {result.to}"
    parts = ", ".join(f"{part} {result.parts[part]:,}" for part in PARTS)
    return (
        f"{result.collection}: snapshot {result.from_snapshot} -> {target}: {result.added:,} added, "
        f"{result.updated:,} updated ({parts}), {result.deleted:,} deleted, {result.unchanged:,} unchanged "
        f"({result.seconds:.1f}s)"
    )
