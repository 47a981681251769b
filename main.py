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
from contextlib import ExitStack
from datetime import datetime, timezone
from typing import Any, Callable

from config import Settings, load_settings, validate_collection_name
from errors import BackupError, ChromaUnavailable, UsageError

log = logging.getLogger("main")

COMMANDS_HELP = """commands:
  run        the daemon: scheduled backups, health checks, auto-recovery (default)
  backup     back up collections now
  snapshots  list the snapshot catalog
  restore    restore a snapshot into a new (or replaced) collection, verified
  verify     compare a live collection with a snapshot
  health     check collections' health (optionally recover them)
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


# -- stores -------------------------------------------------------------------------------------

class Stores:
    """Opens PostgreSQL (embedded if not configured) and Chroma on first use, with retries."""

    def __init__(self, settings: Settings, stack: ExitStack):
        self.settings = settings
        self._stack = stack
        self._embedded_dsn: str | None = None
        self._embedded_started = False
        self._db = None
        self._chroma = None

    def embedded_dsn(self) -> str | None:
        if self.settings.embedded_postgres and not self._embedded_started:
            from db import EmbeddedPostgres

            self._embedded_dsn = EmbeddedPostgres(self.settings.data_dir).start(self.settings.db_name)
            self._embedded_started = True
        return self._embedded_dsn

    def new_db(self):
        """A fresh, migrated Database (one per thread)."""
        from db import Database
        from retry import call_with_retry

        database = Database(self.settings, self.embedded_dsn())
        call_with_retry(database.connect, what="postgres connect", attempts=self.settings.retry_max_attempts,
                        max_seconds=self.settings.retry_max_seconds)
        self._stack.callback(database.close)
        return database

    @property
    def db(self):
        if self._db is None:
            self._db = self.new_db()
            self._db.migrate()
        return self._db

    def chroma_at(self, host: str | None = None, port: int | None = None, ssl: bool | None = None):
        """The configured Chroma server, or the one named by host/port/ssl overrides."""
        if host is None and port is None and ssl is None:
            return self.chroma
        return self._connect_chroma(host, port, ssl)

    def _connect_chroma(self, host: str | None, port: int | None, ssl: bool | None):
        from chroma import ChromaStore
        from retry import call_with_retry

        return call_with_retry(lambda: ChromaStore.connect(self.settings, host=host, port=port, ssl=ssl),
                               what="chroma connect", attempts=self.settings.retry_max_attempts,
                               max_seconds=self.settings.retry_max_seconds)

    @property
    def chroma(self):
        if self._chroma is None:
            self._chroma = self._connect_chroma(None, None, None)
        return self._chroma


def single_collection(settings: Settings, requested: str | None) -> str:
    if requested:
        return requested
    if not settings.all_collections and len(settings.collections) == 1:
        return settings.collections[0]
    raise UsageError("--collection NAME is required (CHROMA_COLLECTION_NAME names more than one collection)")


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

def cmd_backup(args: argparse.Namespace, stores: Stores) -> int:
    from daemon import log_backup
    from export_import import BackupResult
    from health import guarded_backup
    from targets import selected_collections

    settings = stores.settings
    chroma, db = stores.chroma, stores.db
    results = []
    for name in args.collection or []:
        validate_collection_name(name, "--collection")
    for name in selected_collections(settings, chroma, args.collection):
        progress = Progress(f"backup {name}", None, not args.json)
        try:
            result = guarded_backup(chroma, db, name, force=args.force, min_ratio=settings.health_min_record_ratio,
                                    sample_size=settings.health_sample_size, batch_size=settings.batch_size,
                                    progress=progress)
        except BackupError as error:
            result = BackupResult(collection=name, status="failed", error=str(error))
        finally:
            progress.close()
        log_backup(result)
        results.append(result)
    if args.json:
        emit_json([r.as_json() for r in results])
    else:
        for r in results:
            if r.status == "complete":
                print(f"{r.collection}: snapshot {r.snapshot_id} complete, {r.records} records "
                      f"(+{r.added} ~{r.updated} -{r.deleted}) in {r.seconds:.1f}s")
            else:
                print(f"{r.collection}: {r.status}: {r.error}")
    if not results:
        print("no collections to back up", file=sys.stderr)
    return 0 if results and all(r.status == "complete" for r in results) else 1


def cmd_snapshots(args: argparse.Namespace, stores: Stores) -> int:
    settings = stores.settings
    snapshots = stores.db.list_snapshots(settings.chroma_tenant, settings.chroma_database, args.collection,
                                         limit=args.limit)
    if args.json:
        emit_json([s.as_json() for s in snapshots])
        return 0
    if not snapshots:
        print("no snapshots")
        return 0
    print(f"{'ID':>6}  {'COLLECTION':<24} {'STATUS':<9} {'FINISHED (UTC)':<19} {'RECORDS':>9} "
          f"{'ADDED':>7} {'UPDATED':>7} {'DELETED':>7} {'DIM':>5}  DIGEST")
    for s in snapshots:
        print(f"{s.snapshot_id:>6}  {s.collection:<24} {s.status:<9} {_fmt_time(s.finished_at):<19} "
              f"{_dash(s.records):>9} {_dash(s.added):>7} {_dash(s.updated):>7} {_dash(s.deleted):>7} "
              f"{_dash(s.dimension):>5}  {(s.digest or '-')[:16]}" + (f"  {s.error}" if s.error else ""))
    return 0


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def cmd_restore(args: argparse.Namespace, stores: Stores) -> int:
    from export_import import import_postgres_to_chroma

    settings = stores.settings
    name = single_collection(settings, args.collection)
    target = args.to or settings.target_name(name)
    validate_collection_name(target, "--to")
    at = parse_time(args.at) if args.at else None
    chroma = stores.chroma_at(args.to_host, args.to_port, args.to_ssl)
    progress = Progress(f"restore {name}", None, not args.json and not args.dry_run)
    try:
        result = import_postgres_to_chroma(
            chroma, stores.db, name, target=target, snapshot_id=args.snapshot, at=at, overwrite=args.overwrite,
            dry_run=args.dry_run, trigger="cli", reason=args.reason, tenant=settings.chroma_tenant,
            database=settings.chroma_database, batch_size=settings.batch_size, progress=progress,
        )
    finally:
        progress.close()
    if not args.dry_run:
        log.info("restore collection=%s snapshot=%d target=%s records=%d verified=%s seconds=%.2f",
                 name, result.snapshot_id, target, result.records, result.verified, result.seconds)
    if args.json:
        emit_json(result.as_json())
    elif args.dry_run:
        print(f"dry run: would restore snapshot {result.snapshot_id} of {name} ({result.records} records, "
              f"space {result.space}) into {target} on {result.server}"
              + (" replacing the existing collection" if result.target_exists else ""))
    else:
        print(f"restored snapshot {result.snapshot_id} of {name} into {target}: {result.records} records, "
              f"verified identical, {result.seconds:.1f}s" + (" (replaced the existing collection)" if result.replaced else ""))
    return 0


def cmd_verify(args: argparse.Namespace, stores: Stores) -> int:
    from export_import import verify_collection

    name = single_collection(stores.settings, args.collection)
    chroma = stores.chroma_at(args.host, args.port, args.ssl)
    result = verify_collection(chroma, stores.db, name, snapshot_id=args.snapshot, target=args.target,
                               tenant=stores.settings.chroma_tenant, database=stores.settings.chroma_database)
    log.info("verify collection=%s target=%s snapshot=%d identical=%s missing=%d extra=%d changed=%d",
             name, result.target, result.snapshot_id, result.identical, result.missing, result.extra, result.changed)
    if args.json:
        emit_json(result.as_json())
    else:
        verdict = "identical" if result.identical else "DIFFERENT"
        print(f"{result.target} vs snapshot {result.snapshot_id} of {name}: {verdict} "
              f"({result.live_records} live, {result.expected_records} in snapshot; missing {result.missing}, "
              f"extra {result.extra}, changed {result.changed})")
        for kind, ids in result.examples.items():
            if ids:
                print(f"  {kind}: " + ", ".join(repr(i) for i in ids))
        if result.rounded:
            print(f"  {result.rounded} cosine-space vectors differ from the snapshot by at most "
                  "2 units in the last place (Chroma re-rounds vectors it stores in cosine space)")
        for difference in result.index_differences:
            print(f"  index: {difference}")
    return 0 if result.identical else 1


def cmd_prune(args: argparse.Namespace, stores: Stores) -> int:
    from export_import import prune_snapshots

    settings = stores.settings
    results = prune_snapshots(stores.db, tenant=settings.chroma_tenant, database=settings.chroma_database,
                              retention_days=settings.retention_days, min_snapshots=settings.retention_min_snapshots,
                              dry_run=args.dry_run)
    for r in results:
        log.info("prune collection=%s snapshots_deleted=%d failed_deleted=%d versions_deleted=%d dry_run=%s",
                 r.collection, len(r.snapshots_deleted), len(r.failed_runs_deleted), r.versions_deleted, r.dry_run)
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
    p.add_argument("--force", action="store_true", help="back up even a collection that fails its health check")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = add("snapshots", "List snapshots, newest first.")
    p.add_argument("--collection", metavar="NAME", help="only this collection")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N snapshots")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("restore", "Restore a snapshot into a new collection (default NEW_COLLECTION_NAME), verified.")
    p.add_argument("--collection", metavar="NAME", help="source collection (default: CHROMA_COLLECTION_NAME if one)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--snapshot", type=_positive_int, metavar="ID", help="snapshot id (default: latest complete)")
    which.add_argument("--at", metavar="ISO8601", help="newest complete snapshot finished at or before this time (UTC if no zone)")
    p.add_argument("--to", metavar="TARGET", help="target collection name (default: NEW_COLLECTION_NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing target (after the restore verified)")
    p.add_argument("--dry-run", action="store_true", help="show what would be restored, change nothing")
    _server_options(p, "to-", "restore into the Chroma server at HOST instead of CHROMADB_HOST")
    p.add_argument("--reason", metavar="TEXT", help="why (recorded in the restores table)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("verify", "Compare a live collection with a snapshot record by record (exit 1 when different).")
    p.add_argument("--collection", metavar="NAME", help="collection whose snapshot to compare with")
    p.add_argument("--snapshot", type=_positive_int, metavar="ID", help="snapshot id (default: latest complete)")
    p.add_argument("--target", metavar="LIVE", help="live collection to compare (default: the collection itself)")
    _server_options(p, "", "the Chroma server holding LIVE (default CHROMADB_HOST)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("health", "Check collections' health: ok, unreachable, missing, corrupt or shrunk (exit 1 unless all ok).")
    p.add_argument("--collection", action="append", metavar="NAME", help="collection to check (repeatable)")
    p.add_argument("--restore", action="store_true", help="apply the auto-recovery policy to failing collections")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")

    p = add("prune", "Apply the retention policy (RETENTION_DAYS, RETENTION_MIN_SNAPSHOTS).")
    p.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("demo", "Self-contained demo: throwaway Chroma and PostgreSQL, backup, failure, auto-recovery, verify.")
    p.add_argument("--records", type=_positive_int, default=3000, metavar="N", help="records in the sample collection")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


def cmd_run(args: argparse.Namespace, stores: Stores) -> int:
    import threading

    from daemon import Daemon, install_signal_handlers
    from metrics import Metrics

    stop = threading.Event()
    install_signal_handlers(stop)
    return Daemon(stores.settings, stores, Metrics(), stop).run()


def cmd_health(args: argparse.Namespace, stores: Stores) -> int:
    from daemon import log_verdict
    from health import HealthVerdict, check_and_recover
    from targets import health_targets

    s = stores.settings
    db = stores.db
    try:
        chroma = stores.chroma_at()
    except ChromaUnavailable as error:
        chroma, unreachable = None, str(error)
    for name in args.collection or []:
        validate_collection_name(name, "--collection")
    rows = []
    for name in health_targets(s, chroma, db, args.collection):
        recovery = None
        if chroma is None:
            verdict = HealthVerdict(name, "unreachable", unreachable, None, None, None,
                                    datetime.now(timezone.utc).isoformat(timespec="seconds"), 0.0)
        else:
            verdict, recovery = check_and_recover(
                chroma, db, name, min_ratio=s.health_min_record_ratio, sample_size=s.health_sample_size,
                confirm_seconds=s.health_confirm_seconds, target=s.target_name(name), restore=args.restore,
                batch_size=s.batch_size)
        log_verdict(verdict)
        rows.append((verdict, recovery))
    if args.json:
        emit_json([{**v.as_json(), "recovery": r.as_json() if r else None} for v, r in rows])
    else:
        for verdict, recovery in rows:
            print(f"{verdict.collection}: {verdict.status} ({verdict.detail})")
            if recovery is not None:
                print(f"  recovery: {recovery.action}: {recovery.detail}")
        if not rows:
            print("no collections to check")
    return 0 if rows and all(v.ok for v, _ in rows) else 1


def _commands() -> dict[str, Callable]:
    from demo import cmd_demo

    return {"run": cmd_run, "backup": cmd_backup, "snapshots": cmd_snapshots, "restore": cmd_restore,
            "verify": cmd_verify, "health": cmd_health, "prune": cmd_prune, "demo": cmd_demo}


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
        with ExitStack() as stack:
            return args.func(args, Stores(settings, stack))
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
