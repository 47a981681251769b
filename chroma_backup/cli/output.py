"""What commands print: JSON, times, and progress (a bar on a terminal, else a log line at most
every 15 seconds)."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any

from chroma_backup.errors import UsageError

log = logging.getLogger(__name__)


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def fmt_time(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def dash(value: Any) -> str:
    return "-" if value is None else str(value)


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at: expected an ISO 8601 time such as 2026-11-24T03:00:00Z, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class Progress:
    """A tqdm bar on a terminal; elsewhere a log line at most every 15 seconds."""

    def __init__(self, what: str, total: int | None, enabled: bool):
        self.what = what
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.last_log = self.started
        self.bar: Any = None
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
