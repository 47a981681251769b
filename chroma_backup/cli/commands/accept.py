"""``accept``: an operator accepts a collection's new size after a deliberate deletion."""

from __future__ import annotations

import argparse

from chroma_backup.app.operations import Operations
from chroma_backup.cli.output import emit_json

NAME = "accept"
SUMMARY = "accept a collection's new size after a deliberate deletion"
HELP = (
    "Accept a collection's current size as its new baseline after a deliberate deletion "
    "(the 'shrunk' verdict then clears)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", required=True, metavar="NAME", help="the collection")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace, ops: Operations) -> int:
    result = ops.accept(args.collection)
    if args.json:
        emit_json(result.as_json())
    else:
        print(
            f"{result.collection}: accepted {result.records} records as the new baseline (snapshot "
            f"{result.snapshot_id}; was {result.verdict_before})"
        )
    return 0
