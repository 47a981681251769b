"""``prune``: apply the retention policy."""

from __future__ import annotations

import argparse

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import emit_json, fmt_time

NAME = "prune"
SUMMARY = "apply the retention policy"
HELP = (
    "Apply the retention policy (RETENTION_DAYS, RETENTION_MIN_SNAPSHOTS, RETENTION_KEEP_*; pinned snapshots stay). "
    "--dry-run lists every snapshot with the rules that keep it or why it goes."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, ops: Operations) -> int:
    results = ops.prune(dry_run=args.dry_run)
    if args.json:
        emit_json([r.as_json() for r in results])
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for r in results:
            if r.skipped:
                print(f"{r.collection}: skipped: {r.skipped}")
            else:
                print(
                    f"{r.collection}: {verb} {len(r.snapshots_deleted)} snapshots, {len(r.failed_runs_deleted)} "
                    f"failed runs, {r.versions_deleted} record versions"
                )
                if args.dry_run:
                    for d in r.decisions:
                        print(f"  {d.snapshot_id:>7}  {fmt_time(d.when)}  {'keep' if d.keep else 'GOES'}  {d.reason}")
    return 1 if any(r.skipped for r in results) else 0
