"""``health``: classify collections (and recover them), or list the health history."""

from __future__ import annotations

import argparse

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import emit_json, fmt_time
from chroma_backup.cli.parser import positive_int
from chroma_backup.errors import UsageError

NAME = "health"
SUMMARY = "check collections' health (optionally recover them), or list its history"
HELP = (
    "Check collections' health: ok, recovered, unreachable, missing, corrupt or shrunk (exit 1 unless all ok "
    "or recovered; with --restore, unless all are or were just recovered)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", action="append", metavar="NAME", help="collection to check (repeatable)")
    p.add_argument("--restore", action="store_true", help="apply the auto-recovery policy to failing collections")
    p.add_argument(
        "--deep",
        action="store_true",
        help="the deep check: every record read and queried against the newest snapshot (counts of unreadable, "
        "not indexed and gone records); takes about as long as reading the whole collection a few times",
    )
    p.add_argument("--history", action="store_true", help="list status transitions instead of checking")
    p.add_argument("--limit", type=positive_int, metavar="N", help="with --history: at most N transitions")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def run(args: argparse.Namespace, ops: Operations) -> int:
    if args.history:
        return _history(args, ops)
    if args.deep:
        return _deep(args, ops)
    reports = ops.health_round(args.collection, restore=args.restore)
    if args.json:
        emit_json([r.as_json() for r in reports])
    else:
        for report in reports:
            verdict, recovery = report.verdict, report.recovery
            since = f", since {report.since}" if report.since else ""
            print(f"{verdict.collection}: {verdict.status} ({verdict.detail}){since}")
            if recovery is not None:
                print(f"  recovery: {recovery.action}: {recovery.detail}")
        if not reports:
            print("no collections to check")
    # With --restore a recovered collection counts as handled: a scheduler reads 0.
    healthy = all(r.recovered if args.restore else r.verdict.ok for r in reports)
    return 0 if reports and healthy else 1


def _deep(args: argparse.Namespace, ops: Operations) -> int:
    if args.restore:
        raise UsageError("--deep finds damage; repair --collection NAME puts back what it found")
    reports = ops.deep_round(args.collection)
    if args.json:
        emit_json([r.as_json() for r in reports])
    else:
        for report in reports:
            verdict = report.verdict
            since = f", since {report.since}" if report.since else ""
            print(f"{verdict.collection}: {verdict.status} ({verdict.detail}){since}")
        if not reports:
            print("no collections to check")
    return 0 if reports and all(r.verdict.ok for r in reports) else 1


def _history(args: argparse.Namespace, ops: Operations) -> int:
    names = args.collection or [None]
    if len(names) > 1:
        raise UsageError("health --history takes at most one --collection")
    rows = ops.health_history(names[0], limit=args.limit)
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print("no health history")
    for row in rows:
        print(f"{fmt_time(row['time'])}  {row['collection']:<24} -> {row['status']:<11} {row['detail'] or ''}")
    return 0
