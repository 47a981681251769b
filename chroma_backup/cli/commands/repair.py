"""``repair``: put back only what a collection lost, in place, from a snapshot."""

from __future__ import annotations

import argparse
import sys

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import Progress, emit_json, parse_time
from chroma_backup.cli.parser import positive_int
from chroma_backup.core.repair import RepairResult

NAME = "repair"
SUMMARY = "rewrite only the records a collection lost (unreadable, gone, unindexed), in place"
HELP = (
    "Deep-check a collection against a snapshot (default: its newest taken while ok) and write back, in "
    "place under its own name, the records that are unreadable or gone (and those the index no longer "
    "finds, when the index is damaged or with --reindex), each page verified; nothing else is touched."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", metavar="NAME", help="collection to repair (default: CHROMA_COLLECTION_NAME if one)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--snapshot", type=positive_int, metavar="ID", help="snapshot to repair from")
    which.add_argument("--at", metavar="ISO8601", help="the newest complete snapshot at or before this time")
    p.add_argument("--dry-run", action="store_true", help="find and count what would be rewritten, change nothing")
    p.add_argument(
        "--reindex",
        action="store_true",
        help="also rewrite every record the index does not find when the index is not judged damaged",
    )
    p.add_argument("--reason", metavar="TEXT", help="why (recorded in the restores table)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace, ops: Operations) -> int:
    progress = Progress(f"repair {args.collection or ''}".strip(), None, not args.json)
    try:
        result = ops.repair(
            args.collection,
            snapshot_id=args.snapshot,
            at=parse_time(args.at) if args.at else None,
            dry_run=args.dry_run,
            reindex=args.reindex,
            reason=args.reason,
            progress=progress,
        )
    finally:
        progress.close()
    if args.json:
        emit_json(result.as_json())
    else:
        print(_summary(result))
    problems = []
    if result.unrepairable:
        problems.append(
            f"{result.unrepairable} damaged record(s) are not in snapshot {result.snapshot_id} (added after it; "
            f"e.g. {result.unrepairable_examples[0]!r}) and could not be put back"
        )
    if not result.findings.complete:
        problems.append("the time budget (DEEP_CHECK_MAX_SECONDS) ran out before every record was checked")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _summary(result: RepairResult) -> str:
    found = result.findings
    kinds = ", ".join(f"{count:,} {kind}" for kind, count in result.by_kind.items())
    scan = (
        f"{found.checked:,} records checked: {found.unreadable:,} unreadable, {found.unindexed:,} not found by the "
        f"index, {found.gone:,} gone"
    )
    if result.dry_run:
        return (
            f"dry run: repair of {result.collection} from snapshot {result.snapshot_id}: {scan}; would rewrite "
            f"{result.rewritten:,} records ({kinds}); nothing was changed"
        )
    return (
        f"repaired {result.collection} from snapshot {result.snapshot_id}: {scan}; {result.rewritten:,} records "
        f"rewritten and verified ({kinds}), {result.seconds:.1f}s"
    )
