"""Notifications with real parts: local HTTP receivers (one that records, one that answers 500,
one that never answers), a command, and the daemon's own events through them."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import FAST, make_collection, wait_for

from chroma_backup.service import notify
from chroma_backup.service.notify import Event, Notifier


class Receiver:
    """A local webhook: records every request; ``status`` to answer, or ``hang`` to never answer."""

    def __init__(self, status: int = 200, hang: bool = False):
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((dict(self.headers), body))
                if hang:
                    time.sleep(3)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def test_events_are_delivered_signed_to_webhooks_slack_and_a_command_and_failures_are_counted_once_logged(
    receivers, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(notify, "TIMEOUT", 0.5)
    monkeypatch.setattr(notify, "BACKOFF_SECONDS", (0.05, 0.05, 0.05))
    ok, slack, broken, hanging = receivers(), receivers(), receivers(status=500), receivers(hang=True)
    out = tmp_path / "events.jsonl"
    command = f"{sys.executable} -c \"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + chr(10))\""
    failures: list[str] = []
    notifier = Notifier(
        [ok.url, "slack+" + slack.url, broken.url, hanging.url],
        "s3cret",
        command,
        10,
        "replica-a",
        on_failure=failures.append,
    ).start()
    notifier.publish(Event("backup_failed", "listing ids: Chroma unreachable", "docs", data={"snapshot_id": None}))
    notifier.publish(Event("restore_verified", "restored snapshot 4 into docs_restored", "docs"))
    notifier.close(timeout=30)

    assert [e["event"] for e in ok.events()] == ["backup_failed", "restore_verified"]
    first = ok.events()[0]
    assert (first["collection"], first["replica"], first["detail"]) == (
        "docs",
        "replica-a",
        "listing ids: Chroma unreachable",
    )
    headers, body = ok.requests[0]
    assert headers["X-Chroma-Backup-Signature"] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Chroma-Backup-Event"] == "backup_failed"
    assert [json.loads(b)["text"] for _, b in slack.requests] == [
        "chroma-backup docs: backup failed: listing ids: Chroma unreachable",
        "chroma-backup docs: restore verified: restored snapshot 4 into docs_restored",
    ]
    assert len(broken.requests) == 2 * notify.ATTEMPTS  # retried, bounded
    targets = [broken.url.split("/")[2], hanging.url.split("/")[2]]
    assert sorted(failures) == sorted(targets * 2)  # both messages to each failing target, counted
    for target in targets:
        assert caplog.text.count(f"notify target={target} failed") == 1  # logged once per failing streak
    assert [json.loads(line)["event"] for line in out.read_text().splitlines()] == ["backup_failed", "restore_verified"]
    assert "s3cret" not in caplog.text and "s3cret" not in json.dumps(ok.events())


def test_the_daemon_tells_a_webhook_once_per_change_of_state(env, tmp_path, client, name, receivers, daemons):
    hook = receivers()
    make_collection(client, name, 50)
    daemon = daemons(
        {
            **env,
            **FAST,
            "CHROMA_COLLECTION_NAME": f"{name},{name}-never",  # one collection that does not exist
            "NOTIFY_URLS": hook.url,
            "NOTIFY_SECRET": "hook-s3cret",
        },
        tmp_path,
    )
    wait_for(lambda: daemon.output().count("job=backup done") >= 3, timeout=60, what="three backup rounds")
    client.delete_collection(name)
    wait_for(lambda: any(e["event"] == "restore_verified" for e in hook.events()), timeout=60, what="the restore")
    wait_for(lambda: daemon.output().count("job=backup done") >= 8, timeout=60, what="more rounds")
    time.sleep(2)
    kinds = [(e["event"], e["collection"]) for e in hook.events()]
    assert kinds.count(("backup_failed", f"{name}-never")) == 1  # failing every round: told once
    assert kinds.count(("restore_started", name)) == 1 and kinds.count(("restore_verified", name)) == 1
    assert kinds.count(("unhealthy", name)) == 1
    assert daemon.terminate()[0] == 0
    assert "hook-s3cret" not in daemon.output()
