"""``snapshots``: the catalog, newest first."""

from __future__ import annotations

import argparse

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import dash, emit_json, fmt_time
from chroma_backup.cli.parser import positive_int

NAME = "snapshots"
SUMMARY = "list the snapshot catalog"
HELP = "List snapshots, newest first."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", metavar="NAME", help="only this collection")
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N snapshots")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, ops: Operations) -> int:
    snapshots = ops.snapshots(args.collection, limit=args.limit)
    if args.json:
        emit_json([s.as_json() for s in snapshots])
        return 0
    if not snapshots:
        print("no snapshots")
        return 0
    print(
        f"{'ID':>6}  {'COLLECTION':<24} {'STATUS':<9} {'HEALTH':<11} {'FINISHED (UTC)':<19} {'RECORDS':>9} "
        f"{'ADDED':>7} {'UPDATED':>7} {'DELETED':>7} {'DIM':>5}  DIGEST"
    )
    for s in snapshots:
        notes = []
        if s.pinned:
            notes.append("PINNED")
        if s.note:
            notes.append(f"note: {s.note}")
        if s.accepted:
            notes.append("accepted by an operator")
        if s.origin_collection:
            notes.append(f"restored from {s.origin_collection} snapshot {s.origin_snapshot_id}")
        if s.error:
            notes.append(s.error)
        print(
            f"{s.snapshot_id:>6}  {s.collection:<24} {s.status:<9} {dash(s.health):<11} "
            f"{fmt_time(s.finished_at):<19} {dash(s.records):>9} {dash(s.added):>7} {dash(s.updated):>7} "
            f"{dash(s.deleted):>7} {dash(s.dimension):>5}  {(s.digest or '-')[:16]}"
            + ("  " + "; ".join(notes) if notes else "")
        )
    return 0
