"""``demo``: a self-contained backup -> failure -> recovery run in a temporary directory."""

from __future__ import annotations

import argparse

from chroma_backup.cli.parser import positive_int

NAME = "demo"
SUMMARY = "a self-contained backup -> failure -> recovery run in a temporary directory"
HELP = "Self-contained demo: throwaway Chroma and PostgreSQL, backup, failure, auto-recovery, verify."
NEEDS_STORES = False  # it makes its own


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=positive_int, default=3000, metavar="N", help="records in the sample collection")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")


def run(args: argparse.Namespace, ops: object = None) -> int:
    from chroma_backup.app.demo import run_demo

    run_demo(args.records, args.keep, lambda line: print(line, flush=True))
    return 0
