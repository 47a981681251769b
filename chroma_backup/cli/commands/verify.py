"""``verify``: a live collection against a snapshot, record by record and key by key."""

from __future__ import annotations

import argparse

from chroma_backup.app.operations import Operations
from chroma_backup.app.stores import Server
from chroma_backup.cli.output import emit_json
from chroma_backup.cli.parser import positive_int, server_options

NAME = "verify"
SUMMARY = "compare a live collection with a snapshot"
HELP = "Compare a live collection with a snapshot record by record (exit 1 when different)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", metavar="NAME", help="collection whose snapshot to compare with")
    p.add_argument("--snapshot", type=positive_int, metavar="ID", help="snapshot id (default: latest complete)")
    p.add_argument("--target", metavar="LIVE", help="live collection to compare (default: the collection itself)")
    server_options(p, "", "the Chroma server holding LIVE (default CHROMADB_HOST)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace, ops: Operations) -> int:
    result = ops.verify(
        args.collection, snapshot_id=args.snapshot, target=args.target, server=Server(args.host, args.port, args.ssl)
    )
    if args.json:
        emit_json(result.as_json())
    else:
        verdict = "identical" if result.identical else "DIFFERENT"
        print(
            f"{result.target} vs snapshot {result.snapshot_id} of {result.collection}: {verdict} "
            f"({result.live_records} live, {result.expected_records} in snapshot; missing {result.missing}, "
            f"extra {result.extra}, changed {result.changed})"
        )
        for kind, ids in result.examples.items():
            if ids:
                print(f"  {kind}: " + ", ".join(repr(i) for i in ids))
        if result.rounded:
            print(
                f"  {result.rounded} cosine-space vectors differ from the snapshot by at most "
                "2 units in the last place (Chroma re-rounds vectors it stores in cosine space)"
            )
        for difference in result.index_differences:
            print(f"  collection: {difference}")
    return 0 if result.identical else 1
