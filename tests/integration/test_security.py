"""What goes over the wire: auth headers, TLS, libpq sslmode. A stub server records requests (it
stands in for nothing Chroma decides: it only observes what the client sends)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from chroma_backup.chroma import ChromaStore
from chroma_backup.errors import ChromaUnavailable
from chroma_backup.postgres import connection_kwargs
from chroma_backup.settings import load_settings


class Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):
        Recorder.seen.append(dict(self.headers))
        self.send_response(503)  # "unavailable": must be classified as transient
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    Recorder.seen = []
    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize(
    "header,expected",
    [("Authorization", ("Authorization", "Bearer tok-123")), ("X-Chroma-Token", ("X-Chroma-Token", "tok-123"))],
)
def test_the_auth_token_is_sent_in_the_configured_header(recorder, header, expected):
    settings = load_settings(
        {
            "CHROMADB_HOST": "127.0.0.1",
            "CHROMADB_PORT": str(recorder),
            "CHROMA_AUTH_TOKEN": "tok-123",
            "CHROMA_AUTH_HEADER": header,
        },
        env_file=None,
    )
    with pytest.raises(ChromaUnavailable) as info:
        ChromaStore.connect(settings)
    assert "tok-123" not in str(info.value)
    assert Recorder.seen, "no request reached the server"
    name, value = expected
    assert {k.lower(): v for k, v in Recorder.seen[0].items()}[name.lower()] == value


def test_use_ssl_speaks_tls():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    first_bytes = []

    def accept():
        conn, _ = listener.accept()
        first_bytes.append(conn.recv(5))
        conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    settings = load_settings(
        {
            "CHROMADB_HOST": "127.0.0.1",
            "CHROMADB_PORT": str(listener.getsockname()[1]),
            "CHROMADB_USE_SSL": "true",
            "CHROMA_TIMEOUT_SECONDS": "5",
        },
        env_file=None,
    )
    with pytest.raises(ChromaUnavailable):
        ChromaStore.connect(settings)
    thread.join(5)
    listener.close()
    assert first_bytes and first_bytes[0][:1] == b"\x16"  # a TLS handshake record, not "GET /"


def test_db_sslmode_is_passed_to_libpq():
    settings = load_settings({"DB_HOST": "db.example", "DB_SSLMODE": "verify-full", "DB_PASSWORD": "pw"}, env_file=None)
    kwargs = connection_kwargs(settings)
    assert kwargs["sslmode"] == "verify-full" and kwargs["host"] == "db.example"
    url_settings = load_settings({"DATABASE_URL": "postgresql://u:p@h/d", "DB_SSLMODE": "require"}, env_file=None)
    assert connection_kwargs(url_settings)["sslmode"] == "require"


def test_settings_repr_hides_secrets():
    settings = load_settings(
        {
            "DB_PASSWORD": "pw-secret",
            "CHROMA_AUTH_TOKEN": "tok-secret",
            "DATABASE_URL": "postgresql://u:url-secret@h/d",
        },
        env_file=None,
    )
    text = repr(settings)
    assert "pw-secret" not in text and "tok-secret" not in text and "url-secret" not in text
