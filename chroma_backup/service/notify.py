"""Notifications: what happened, told to a webhook, a Slack channel or a command, once per change.

Events: ``backup_failed`` and ``backup_ok`` again, ``backup_stale`` (no complete snapshot for two
scheduled intervals), ``unhealthy`` (a confirmed bad verdict) and ``healthy`` again,
``restore_started`` / ``restore_verified`` / ``restore_failed``, ``retention_deleted``.  The
``Tracker`` turns what the daemon sees into events: one per change of state, never one per check.

Delivery runs on a thread of its own with a bounded queue, so a slow or dead receiver never delays
a backup: each message is tried ``ATTEMPTS`` times with a backoff, each try within ``TIMEOUT``
seconds; a failing target is logged once until it answers again, and every failed delivery is
counted (``chroma_backup_notifications_failed_total``, by host and port).  Bodies are JSON: the event itself, or
Slack's ``{"text": ...}`` for a URL written ``slack+https://hooks.slack.com/...``.  With
NOTIFY_SECRET every request carries ``X-Chroma-Backup-Signature: sha256=<hex HMAC-SHA256 of the
body>``.  No setting, URL or secret is ever part of a body or a log line (targets are logged by
host).  ON_EVENT_COMMAND runs a command (no shell) with the event as JSON on its standard input,
within ON_EVENT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF_SECONDS = (1.0, 2.0, 4.0)
TIMEOUT = 5.0
QUEUE_SIZE = 1000
SLACK_PREFIX = "slack+"


@dataclass
class Event:
    kind: str
    detail: str
    collection: str | None = None
    replica: str = ""
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"event": self.kind, **{k: v for k, v in asdict(self).items() if k != "kind"}}

    def text(self) -> str:
        where = f" {self.collection}" if self.collection else ""
        return f"chroma-backup{where}: {self.kind.replace('_', ' ')}: {self.detail}"


class Tracker:
    """What the daemon sees, as events: one per change of state (pure; no delivery)."""

    def __init__(self) -> None:
        self._backup: dict[str, str] = {}  # collection -> ok | failed | stale
        self._health: dict[str, str] = {}  # collection -> healthy | unhealthy
        self._bad_rounds: dict[str, int] = {}

    def backup(self, collection: str, ok: bool, detail: str) -> Event | None:
        before = self._backup.get(collection)
        if ok:
            self._backup[collection] = "ok"
            if before in ("failed", "stale"):
                return Event("backup_ok", detail, collection)
            return None
        self._backup[collection] = "failed" if before != "stale" else "stale"
        return Event("backup_failed", detail, collection) if before in (None, "ok") else None

    def stale(self, collection: str, detail: str) -> Event | None:
        if self._backup.get(collection) == "stale":
            return None
        self._backup[collection] = "stale"
        return Event("backup_stale", detail, collection)

    def health(self, collection: str, healthy: bool, confirmed: bool, detail: str) -> Event | None:
        """``confirmed``: this round re-checked the failure (recovery ran); otherwise a failure
        counts as confirmed when the next round sees it too."""
        before = self._health.get(collection)
        if healthy:
            self._bad_rounds.pop(collection, None)
            self._health[collection] = "healthy"
            return Event("healthy", detail, collection) if before == "unhealthy" else None
        rounds = self._bad_rounds[collection] = self._bad_rounds.get(collection, 0) + 1
        if before != "unhealthy" and (confirmed or rounds >= 2):
            self._health[collection] = "unhealthy"
            return Event("unhealthy", detail, collection)
        return None


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """Delivers events on a thread of its own (``start``/``close``)."""

    def __init__(
        self,
        urls: list[str],
        secret: str | None,
        command: str | None,
        command_timeout: float,
        replica: str,
        on_failure: Callable[[str], None] = lambda target: None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.urls, self.secret, self.command, self.command_timeout = urls, secret, command, command_timeout
        self.replica = replica
        self.on_failure = on_failure
        self._sleep = sleep
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._failing: set[str] = set()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return bool(self.urls or self.command)

    def start(self) -> Notifier:
        if self.active and self._thread is None:
            self._thread = threading.Thread(target=self._work, name="notify", daemon=True)
            self._thread.start()
        return self

    def publish(self, event: Event | None) -> None:
        if event is None or not self.active:
            return
        event.replica = event.replica or self.replica
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.on_failure("queue")
            log.warning(
                "notify dropped event=%s collection=%s: the delivery queue is full", event.kind, event.collection
            )

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(timeout)
            self._thread = None

    def _work(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            for url in self.urls:
                self._deliver(url, event)
            if self.command:
                self._run_command(event)

    def _deliver(self, url: str, event: Event) -> None:
        slack = url.startswith(SLACK_PREFIX)
        target_url = url[len(SLACK_PREFIX) :] if slack else url
        parts = urlsplit(target_url)
        target = f"{parts.hostname}:{parts.port}" if parts.port else (parts.hostname or "?")  # never the path: a token
        body = json.dumps({"text": event.text()} if slack else event.as_json(), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "X-Chroma-Backup-Event": event.kind}
        if self.secret:
            headers["X-Chroma-Backup-Signature"] = signature(self.secret, body)
        error = ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                request = urllib.request.Request(target_url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                    answer.read()
                if target in self._failing:
                    self._failing.discard(target)
                    log.info("notify target=%s delivers again", target)
                return
            except (urllib.error.URLError, OSError, ValueError) as failure:
                error = type(failure).__name__ + (
                    f" {failure.code}" if isinstance(failure, urllib.error.HTTPError) else ""
                )
            if attempt < ATTEMPTS:
                self._sleep(BACKOFF_SECONDS[min(attempt - 1, len(BACKOFF_SECONDS) - 1)])
        self.on_failure(target)
        if target not in self._failing:  # once per failing streak
            self._failing.add(target)
            log.warning(
                "notify target=%s failed event=%s attempts=%d error=%s (logged once until it delivers again)",
                target,
                event.kind,
                ATTEMPTS,
                error,
            )

    def _run_command(self, event: Event) -> None:
        assert self.command is not None
        try:
            subprocess.run(
                shlex.split(self.command),
                input=json.dumps(event.as_json()).encode(),
                timeout=self.command_timeout,
                check=True,
                capture_output=True,
            )
        except (subprocess.SubprocessError, OSError) as failure:
            self.on_failure("command")
            log.warning("notify command failed event=%s error=%s", event.kind, type(failure).__name__)
