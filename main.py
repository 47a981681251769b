"""Command line and wiring: parse arguments, configure logging, open the stores, run a command.

``python main.py COMMAND`` (no command = ``run``).  Exit codes: 0 ok, 1 failure / unhealthy /
mismatch, 2 usage or configuration error.  ``main()`` alone turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from datetime import datetime, timezone
from typing import Any, Callable

from config import Settings, load_settings
from errors import BackupError, UsageError
from jobs import Backend, Operations
from states import COMPLETE, OK

log = logging.getLogger("main")

COMMANDS_HELP = """commands:
  run        the daemon: scheduled backups, health checks, auto-recovery (default)
  backup     back up collections now
  snapshots  list the snapshot catalog
  restore    restore a snapshot into a new (or replaced) collection, verified
  verify     compare a live collection with a snapshot
  health     check collections' health (optionally recover them), or list its history
  accept     accept a collection's new size after a deliberate deletion
  prune      apply the retention policy
  demo       a self-contained backup -> failure -> recovery run in a temporary directory
"""


# -- logging ------------------------------------------------------------------------------------

class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Third-party chatter (every HTTP request, telemetry) is not ours to log at INFO.
    for noisy in ("httpx", "httpcore", "chromadb", "urllib3", "posthog", "opentelemetry"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))


# -- progress -----------------------------------------------------------------------------------

class Progress:
    """A tqdm bar on a terminal; elsewhere a log line at most every 15 seconds."""

    def __init__(self, what: str, total: int | None, enabled: bool):
        self.what = what
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.last_log = self.started
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit="rec", unit_scale=True, file=sys.stderr)

    def __call__(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last_log >= 15:
            self.last_log = now
            rate = self.done / max(now - self.started, 1e-9)
            log.info("progress what=%s records=%d rate=%.0f/s", self.what, self.done, rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- output -------------------------------------------------------------------------------------

def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at: expected an ISO 8601 time such as 2026-11-24T03:00:00Z, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# -- commands -----------------------------------------------------------------------------------

def _progress_factory(json_output: bool) -> Callable[[str], Progress]:
    return lambda name: Progress(f"backup {name}", None, not json_output)


def cmd_backup(args: argparse.Namespace, ops: Operations) -> int:
    if args.force:
        log.info("backup --force is a no-op: every readable collection is backed up, labelled with its verdict")
    results = ops.backup_round(args.collection, progress=_progress_factory(args.json))
    if args.json:
        emit_json([r.as_json() for r in results])
    else:
        for r in results:
            if r.status == COMPLETE:
                label = "" if r.health == OK else f" [health: {r.health}]"
                print(f"{r.collection}: snapshot {r.snapshot_id} complete, {r.records} records "
                      f"(+{r.added} ~{r.updated} -{r.deleted}) in {r.seconds:.1f}s{label}")
            else:
                print(f"{r.collection}: {r.status}: {r.error}")
    if not results:
        print("no collections to back up", file=sys.stderr)
    return 0 if results and all(r.status == COMPLETE for r in results) else 1


def cmd_snapshots(args: argparse.Namespace, ops: Operations) -> int:
    snapshots = ops.snapshots(args.collection, limit=args.limit)
    if args.json:
        emit_json([s.as_json() for s in snapshots])
        return 0
    if not snapshots:
        print("no snapshots")
        return 0
    print(f"{'ID':>6}  {'COLLECTION':<24} {'STATUS':<9} {'HEALTH':<11} {'FINISHED (UTC)':<19} {'RECORDS':>9} "
          f"{'ADDED':>7} {'UPDATED':>7} {'DELETED':>7} {'DIM':>5}  DIGEST")
    for s in snapshots:
        notes = []
        if s.accepted:
            notes.append("accepted by an operator")
        if s.origin_collection:
            notes.append(f"restored from {s.origin_collection} snapshot {s.origin_snapshot_id}")
        if s.error:
            notes.append(s.error)
        print(f"{s.snapshot_id:>6}  {s.collection:<24} {s.status:<9} {_dash(s.health):<11} "
              f"{_fmt_time(s.finished_at):<19} {_dash(s.records):>9} {_dash(s.added):>7} {_dash(s.updated):>7} "
              f"{_dash(s.deleted):>7} {_dash(s.dimension):>5}  {(s.digest or '-')[:16]}"
              + ("  " + "; ".join(notes) if notes else ""))
    return 0


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def cmd_restore(args: argparse.Namespace, ops: Operations) -> int:
    progress = Progress(f"restore {args.collection or ''}".strip(), None, not args.json and not args.dry_run)
    try:
        result = ops.restore(args.collection, to=args.to, snapshot_id=args.snapshot,
                             at=parse_time(args.at) if args.at else None, overwrite=args.overwrite,
                             dry_run=args.dry_run, reason=args.reason, host=args.to_host, port=args.to_port,
                             ssl=args.to_ssl, to_database=args.to_database, progress=progress)
    finally:
        progress.close()
    name, target = result.source, result.target
    if args.json:
        emit_json(result.as_json())
    elif args.dry_run:
        print(f"dry run: would restore snapshot {result.snapshot_id} of {name} ({result.records} records, "
              f"space {result.space}) into {target} on {result.server}"
              + (" replacing the existing collection" if result.target_exists else ""))
    else:
        replaced = ""
        if result.replaced:
            replaced = " (replaced the existing collection" + (
                f"; the old one remains as {result.replaced_kept})" if result.replaced_kept else ")")
        print(f"restored snapshot {result.snapshot_id} of {name} into {target}: {result.records} records, "
              f"verified identical, {result.seconds:.1f}s{replaced}")
    if result.differences:
        # The copy is kept (its records are identical); its configuration is not exact.
        print(f"error: {target} holds every record of snapshot {result.snapshot_id} identically, but its "
              f"configuration differs from the snapshot: " + "; ".join(result.differences), file=sys.stderr)
        return 1
    return 0


def cmd_verify(args: argparse.Namespace, ops: Operations) -> int:
    result = ops.verify(args.collection, snapshot_id=args.snapshot, target=args.target, host=args.host,
                        port=args.port, ssl=args.ssl)
    if args.json:
        emit_json(result.as_json())
    else:
        verdict = "identical" if result.identical else "DIFFERENT"
        print(f"{result.target} vs snapshot {result.snapshot_id} of {result.collection}: {verdict} "
              f"({result.live_records} live, {result.expected_records} in snapshot; missing {result.missing}, "
              f"extra {result.extra}, changed {result.changed})")
        for kind, ids in result.examples.items():
            if ids:
                print(f"  {kind}: " + ", ".join(repr(i) for i in ids))
        if result.rounded:
            print(f"  {result.rounded} cosine-space vectors differ from the snapshot by at most "
                  "2 units in the last place (Chroma re-rounds vectors it stores in cosine space)")
        for difference in result.index_differences:
            print(f"  collection: {difference}")
    return 0 if result.identical else 1


def cmd_prune(args: argparse.Namespace, ops: Operations) -> int:
    results = ops.prune(dry_run=args.dry_run)
    if args.json:
        emit_json([r.as_json() for r in results])
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for r in results:
            if r.skipped:
                print(f"{r.collection}: skipped: {r.skipped}")
            else:
                print(f"{r.collection}: {verb} {len(r.snapshots_deleted)} snapshots, {len(r.failed_runs_deleted)} "
                      f"failed runs, {r.versions_deleted} record versions")
    return 1 if any(r.skipped for r in results) else 0


def cmd_health(args: argparse.Namespace, ops: Operations) -> int:
    if args.history:
        return _health_history(args, ops)
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
    healthy = (lambda r: r.recovered) if args.restore else (lambda r: r.verdict.ok)
    return 0 if reports and all(healthy(r) for r in reports) else 1


def _health_history(args: argparse.Namespace, ops: Operations) -> int:
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
        print(f"{_fmt_time(row['time'])}  {row['collection']:<24} -> {row['status']:<11} {row['detail'] or ''}")
    return 0


def cmd_accept(args: argparse.Namespace, ops: Operations) -> int:
    result = ops.accept(args.collection)
    if args.json:
        emit_json(result.as_json())
    else:
        print(f"{result.collection}: accepted {result.records} records as the new baseline (snapshot "
              f"{result.snapshot_id}; was {result.verdict_before})")
    return 0


# -- parser -------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 1 and 65535, got {text!r}")
    return value


def _bool_word(text: str) -> bool:
    word = text.lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _server_options(p: argparse.ArgumentParser, prefix: str, what: str) -> None:
    """--[prefix]host/port/ssl: another Chroma server than the configured one."""
    p.add_argument(f"--{prefix}host", metavar="HOST", help=what)
    p.add_argument(f"--{prefix}port", type=_port, metavar="PORT", help="port of that server (default CHROMADB_PORT)")
    p.add_argument(f"--{prefix}ssl", type=_bool_word, metavar="BOOL", help="use https for that server")


def build_parser(commands: dict[str, Callable]) -> argparse.ArgumentParser:
    parser = _Parser(prog="main.py", description="Versioned backups of ChromaDB collections in PostgreSQL.",
                     epilog=COMMANDS_HELP + "\nRun 'python main.py COMMAND --help' for a command's options.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=commands[name])
        return p

    p = add("run", "Run the daemon: backup at start and every EXPORT_INTERVAL_MINUTES, health checks every "
                   "HEALTH_CHECK_INTERVAL_MINUTES, auto-recovery when AUTO_RESTORE.")

    p = add("backup", "Back up collections now (only changed records are written).")
    p.add_argument("--collection", action="append", metavar="NAME",
                   help="collection to back up (repeatable; default: CHROMA_COLLECTION_NAME)")
    p.add_argument("--force", action="store_true",
                   help="no-op, kept for old scripts: every readable collection is backed up, labelled with its verdict")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = add("snapshots", "List snapshots, newest first.")
    p.add_argument("--collection", metavar="NAME", help="only this collection")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N snapshots")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("restore", "Restore a snapshot into a new collection (default NEW_COLLECTION_NAME), verified.")
    p.add_argument("--collection", metavar="NAME", help="source collection, or DATABASE/NAME where databases share "
                                                         "names (default: CHROMA_COLLECTION_NAME if one)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--snapshot", type=_positive_int, metavar="ID", help="snapshot id (default: latest complete)")
    which.add_argument("--at", metavar="ISO8601", help="newest complete snapshot finished at or before this time (UTC if no zone)")
    p.add_argument("--to", metavar="TARGET", help="target collection name (default: NEW_COLLECTION_NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing target (after the restore verified)")
    p.add_argument("--dry-run", action="store_true", help="show what would be restored, change nothing")
    _server_options(p, "to-", "restore into the Chroma server at HOST instead of CHROMADB_HOST")
    p.add_argument("--to-database", metavar="DATABASE", help="restore into this database of the tenant "
                                                             "(default: the source collection's)")
    p.add_argument("--reason", metavar="TEXT", help="why (recorded in the restores table)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("verify", "Compare a live collection with a snapshot record by record (exit 1 when different).")
    p.add_argument("--collection", metavar="NAME", help="collection whose snapshot to compare with")
    p.add_argument("--snapshot", type=_positive_int, metavar="ID", help="snapshot id (default: latest complete)")
    p.add_argument("--target", metavar="LIVE", help="live collection to compare (default: the collection itself)")
    _server_options(p, "", "the Chroma server holding LIVE (default CHROMADB_HOST)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("health", "Check collections' health: ok, unreachable, missing, corrupt or shrunk (exit 1 unless all "
                      "ok; with --restore, unless all ok or recovered).")
    p.add_argument("--collection", action="append", metavar="NAME", help="collection to check (repeatable)")
    p.add_argument("--restore", action="store_true", help="apply the auto-recovery policy to failing collections")
    p.add_argument("--history", action="store_true", help="list status transitions instead of checking")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="with --history: at most N transitions")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")

    p = add("accept", "Accept a collection's current size as its new baseline after a deliberate deletion "
                      "(the 'shrunk' verdict then clears).")
    p.add_argument("--collection", required=True, metavar="NAME", help="the collection")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("prune", "Apply the retention policy (RETENTION_DAYS, RETENTION_MIN_SNAPSHOTS).")
    p.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("demo", "Self-contained demo: throwaway Chroma and PostgreSQL, backup, failure, auto-recovery, verify.")
    p.add_argument("--records", type=_positive_int, default=3000, metavar="N", help="records in the sample collection")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


def cmd_run(args: argparse.Namespace, ops: Operations) -> int:
    import threading

    from daemon import Daemon, install_signal_handlers
    from metrics import Metrics

    stop = threading.Event()
    install_signal_handlers(stop)
    return Daemon(ops.backend, Metrics(), stop).run()


def _commands() -> dict[str, Callable]:
    from demo import cmd_demo

    return {"run": cmd_run, "backup": cmd_backup, "snapshots": cmd_snapshots, "restore": cmd_restore,
            "verify": cmd_verify, "health": cmd_health, "accept": cmd_accept, "prune": cmd_prune,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset (containers): not ours to show.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        parser = build_parser(_commands())
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args(["run", *argv])
        if args.command == "demo":
            setup_logging(Settings(log_level="ERROR"))
            return args.func(args)
        settings = load_settings()
        setup_logging(settings)
        ops = Operations(Backend(settings))
        try:
            return args.func(args, ops)
        finally:
            ops.close()
    except BackupError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    except Exception as error:  # the last boundary: one line, no traceback unless DEBUG
        log.debug("unexpected error", exc_info=True)
        print(f"error: unexpected {type(error).__name__}: {error} (LOG_LEVEL=DEBUG shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
