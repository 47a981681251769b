"""Logging for every command: one handler on stderr, text or JSON lines, configured once."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from chroma_backup.settings import Settings

_PACKAGE = "chroma_backup."
# Third-party chatter (every HTTP request, telemetry) is not ours to log at INFO.
NOISY = ("httpx", "httpcore", "urllib3", "uvicorn.access", "pgserver")


def _short(name: str) -> str:
    """``chroma_backup.app.rounds`` -> ``app.rounds``: the package prefix says nothing in our logs."""
    return name[len(_PACKAGE) :] if name.startswith(_PACKAGE) else name


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message``; with REPLICA_NAME set (several daemons), ``[name]`` after the
    level."""

    def __init__(self, replica: str | None = None) -> None:
        named = f" [{replica}]".replace("%", "%%") if replica else ""
        super().__init__(f"%(asctime)s %(levelname)s{named} %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.name = _short(record.name)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": _short(record.name),
            "replica": self.replica,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(settings.replica) if settings.log_format == "json" else TextFormatter(settings.replica_name)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
