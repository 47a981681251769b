"""``restore --all``: the whole server, a plan first; what it prints (``app.server_restore`` does
the work)."""

from __future__ import annotations

import argparse
import sys

from chroma_backup.app.operations import Operations
from chroma_backup.app.server_restore import ServerRestoreResult
from chroma_backup.app.stores import Server
from chroma_backup.cli.output import Progress, dash, emit_json, parse_time
from chroma_backup.core.server_restore import TO_RESTORE, PlannedRestore
from chroma_backup.errors import UsageError
from chroma_backup.states import RESTORED


def run(args: argparse.Namespace, ops: Operations) -> int:
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
