"""Prometheus metrics of the daemon (served at /metrics by the HTTP server, api.py)."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

from chroma_backup.states import HEALTH_STATUSES


class Metrics:
    def __init__(self, replica: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("chroma_backup_replica_info", "1, labelled with this daemon's name", ["replica"], registry=r).labels(
            replica
        ).set(1)
        self.last_success = Gauge(
            "chroma_backup_last_success_timestamp_seconds",
            "Unix time of the last complete backup",
            ["collection"],
            registry=r,
        )
        self.last_duration = Gauge(
            "chroma_backup_last_duration_seconds", "Duration of the last complete backup", ["collection"], registry=r
        )
        self.records = Gauge(
            "chroma_backup_records", "Records in the last complete snapshot", ["collection"], registry=r
        )
        self.changes = Counter(
            "chroma_backup_changes", "Record changes captured by backups", ["collection", "kind"], registry=r
        )
        self.failures = Counter("chroma_backup_failures", "Failed runs", ["collection", "job"], registry=r)
        self.health = Gauge(
            "chroma_backup_health_status",
            "1 for the collection's current health status",
            ["collection", "status"],
            registry=r,
        )
        self.restores = Counter("chroma_backup_restores", "Restores by outcome", ["collection", "result"], registry=r)
        self.http = Counter(
            "chroma_backup_http_responses",
            "HTTP responses of the daemon's server by status class",
            ["code"],
            registry=r,
        )
        self.loop = Gauge(
            "chroma_backup_daemon_loop_timestamp_seconds", "Unix time of the last scheduler loop turn", registry=r
        )
        # The process's own memory, descriptors and CPU (process_resident_memory_bytes,
        # process_open_fds, ...) and threads: what an alert on steady growth reads.
        ProcessCollector(registry=r)
        self.dependency_up = Gauge(
            "chroma_backup_dependency_up",
            "1 while PostgreSQL / Chroma answer the daemon's probe",
            ["dependency"],
            registry=r,
        )
        self.deep = Gauge(
            "chroma_backup_deep_records",
            "Records the last deep check found, by kind: checked, unreadable, unindexed, gone",
            ["collection", "kind"],
            registry=r,
        )
        self.deep_time = Gauge(
            "chroma_backup_deep_check_timestamp_seconds",
            "Unix time of the collection's last deep check",
            ["collection"],
            registry=r,
        )
        self.notify_failures = Counter(
            "chroma_backup_notifications_failed",
            "Notifications that could not be delivered, by target host (or queue, command)",
            ["target"],
            registry=r,
        )
        self.server_wiped = Gauge(
            "chroma_backup_server_wiped",
            "1 while the last health round found every selected collection with backups gone at once",
            registry=r,
        )
        self.threads = Gauge("chroma_backup_process_threads", "Threads of the daemon's process", registry=r)
        self.threads.set_function(threading.active_count)

    def backup_ok(
        self, collection: str, *, seconds: float, records: int, added: int, updated: int, deleted: int
    ) -> None:
        self.last_success.labels(collection).set(time.time())
        self.last_duration.labels(collection).set(seconds)
        self.records.labels(collection).set(records)
        for kind, value in (("added", added), ("updated", updated), ("deleted", deleted)):
            self.changes.labels(collection, kind).inc(value)

    def forget_backups(self, collection: str) -> None:
        """A collection gone and recovered into another one is no longer backed up: its backup
        series go, so the stale-backup alert does not fire for a name that is handled."""
        for gauge in (self.last_success, self.last_duration, self.records):
            try:
                gauge.remove(collection)
            except KeyError:
                pass

    def failure(self, collection: str, job: str) -> None:
        self.failures.labels(collection, job).inc()

    def health_status(self, collection: str, status: str) -> None:
        for candidate in HEALTH_STATUSES:
            self.health.labels(collection, candidate).set(1 if candidate == status else 0)

    def deep_check(self, collection: str, counts: dict[str, int]) -> None:
        for kind in ("checked", "unreadable", "unindexed", "gone"):
            self.deep.labels(collection, kind).set(counts[kind])
        self.deep_time.labels(collection).set(time.time())

    def restore(self, collection: str, result: str) -> None:
        self.restores.labels(collection, result).inc()

    def tick(self) -> None:
        self._loop_time = time.time()
        self.loop.set(self._loop_time)

    def loop_time(self) -> float:
        """Unix time of the last scheduler loop turn (0 before the first)."""
        return getattr(self, "_loop_time", 0.0)
