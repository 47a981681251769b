"""The HTTP transport to a Chroma server: one ``httpx.Client`` (a connection pool) per server,
its requests, and the translation of what comes back into the program's errors.

Chroma's REST API (``/api/v2``, served by 1.x servers and by 0.6.x) is small and stable; talking
it directly, instead of through the chromadb client, costs no import of the whole chromadb
package (over a second per command), keeps no process-wide state (the client keeps every
client's ``System`` until it is closed), and decodes the large answers our own way (``wire``).

Errors by status and by the error name in the body, never by message text: 502/503/504 and
connection failures are ``ChromaUnavailable`` (transient), 413 is ``RequestTooLarge`` (the writer
halves its requests), ``NotFoundError`` (1.x) and ``InvalidCollection`` (0.6.x) are
``CollectionNotFound``, anything else the server refuses is ``ChromaFailure``.

A 429 (the server's, or a proxy's, "too many requests": Chroma 1.x answers it when its own limits
are hit) refused the request before doing anything with it, so the transport waits and sends the
same request again: Retry-After when the answer gives one, else a capped exponential backoff with
jitter, at most THROTTLE_ATTEMPTS times within THROTTLE_SECONDS, each wait logged with its attempt
count; then ``Throttled`` (transient) goes up like any unavailability.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from chroma_backup.errors import ChromaFailure, ChromaUnavailable, CollectionNotFound, first_line

log = logging.getLogger(__name__)

TRANSIENT_STATUS = {502, 503, 504}
TOO_LARGE_STATUS = 413
THROTTLED_STATUS = 429
THROTTLE_ATTEMPTS = 8  # requests sent in all while the server answers 429
THROTTLE_SECONDS = 60.0  # and at most this long spent waiting for it
THROTTLE_FIRST_WAIT = 0.25  # then doubled, capped at THROTTLE_MAX_WAIT, +-25% jitter
THROTTLE_MAX_WAIT = 8.0
NOT_FOUND_ERRORS = {"NotFoundError", "InvalidCollection"}
JSON_HEADERS = {"Content-Type": "application/json"}


def encode(value: Any) -> bytes:
    """A request body: compact JSON in UTF-8 (what request sizes are estimated from).  orjson:
    a write batch of 5,461 records is ~12 MB of JSON, which the standard library takes 30x as long
    to write."""
    return orjson.dumps(value)


class RequestTooLarge(ChromaFailure):
    """The server (or a proxy in front of it) refused a request body as too large (HTTP 413)."""


class Throttled(ChromaUnavailable):
    """The server kept answering 429 (too many requests) for longer than the transport waits."""


def _first(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:500] if lines else ""


def _error_text(response: httpx.Response) -> tuple[str | None, str]:
    """The error name and message a Chroma error body carries (``{"error": ..., "message": ...}``)."""
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        return None, _first(text)
    if not isinstance(body, dict):
        return None, _first(text)
    name = body.get("error")
    return (str(name) if name else None), _first(str(body.get("message") or body.get("detail") or ""))


def raise_for_status(response: httpx.Response, what: str) -> None:
    """Raise the program's error for an answer that is not a success."""
    status = response.status_code
    if status < 400:
        return
    if status in TRANSIENT_STATUS:
        raise ChromaUnavailable(f"Chroma answered HTTP {status} during {what}")
    if status == THROTTLED_STATUS:
        raise Throttled(f"Chroma answered HTTP 429 (too many requests) during {what}")
    if status == TOO_LARGE_STATUS:
        raise RequestTooLarge(f"Chroma refused a request as too large (HTTP 413) during {what}")
    if not response.is_closed:
        response.read()
    name, message = _error_text(response)
    if name in NOT_FOUND_ERRORS:
        raise CollectionNotFound(f"{what}: {message or name}")
    if name:
        raise ChromaFailure(f"Chroma error during {what}: {name}: {message}".rstrip(": "))
    raise ChromaFailure(f"Chroma answered HTTP {status} during {what}: {message}".rstrip(": "))


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a 429 answer asks us to wait (None: it does not say, or says it as a date)."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class _Throttle:
    """The waits of one request while the server answers it 429 (module docstring)."""

    def __init__(self, what: str):
        self.what = what
        self.attempt = 1
        self.deadline = time.monotonic() + THROTTLE_SECONDS
        self.backoff = THROTTLE_FIRST_WAIT

    def wait(self, response: httpx.Response) -> bool:
        """Wait before the request is sent again; False when it is time to give up instead."""
        delay = _retry_after(response)
        if delay is None:
            delay = self.backoff * random.uniform(0.75, 1.25)
            self.backoff = min(THROTTLE_MAX_WAIT, self.backoff * 2)
        if self.attempt >= THROTTLE_ATTEMPTS or time.monotonic() + delay > self.deadline:
            return False
        log.warning(
            "chroma throttled what=%s status=429 attempt=%d/%d wait=%.2fs",
            self.what,
            self.attempt,
            THROTTLE_ATTEMPTS,
            delay,
        )
        time.sleep(delay)
        self.attempt += 1
        return True


@contextmanager
def _unreachable(what: str) -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as error:  # refused, reset, timed out, DNS, TLS
        raise ChromaUnavailable(
            f"Chroma unreachable during {what}: {type(error).__name__}: {first_line(error)}"
        ) from error


class Transport:
    """One Chroma server's ``/api/v2``: a pool of keep-alive connections, shared by every thread
    of a run (httpx's pool is thread-safe), closed with ``close``."""

    def __init__(self, address: str, headers: dict[str, str], timeout: float):
        self.address = address
        self.on_throttled: Callable[[], None] | None = None  # told of every 429 (the read pacer backs off)
        self._client = httpx.Client(
            base_url=address.rstrip("/") + "/api/v2", headers=headers, timeout=httpx.Timeout(timeout)
        )

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def path(*parts: str) -> str:
        return "/" + "/".join(urllib.parse.quote(part, safe="") for part in parts)

    def call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        raw: bytes | None = None,
    ) -> Any:
        """A request with a JSON body (or ``raw`` bytes), its JSON answer decoded."""
        return json.loads(self.fetch(method, path, what, body=body, params=params, raw=raw))

    def fetch(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        raw: bytes | None = None,
    ) -> bytes:
        """A request, its answer's bytes (for answers decoded elsewhere)."""
        content = raw if raw is not None else None if body is None else encode(body)
        throttle = _Throttle(what)
        while True:
            with _unreachable(what):
                response = self._client.request(
                    method, path, content=content, params=params, headers=JSON_HEADERS if content is not None else None
                )
            if response.status_code != THROTTLED_STATUS:
                break
            if self.on_throttled is not None:
                self.on_throttled()
            if not throttle.wait(response):
                break
        raise_for_status(response, what)
        return response.content

    @contextmanager
    def stream(self, method: str, path: str, what: str, *, body: Any) -> Iterator[Iterator[str]]:
        """A request whose answer is read as it arrives: yields an iterator over its text."""
        content, throttle = encode(body), _Throttle(what)
        while True:
            with (
                _unreachable(what),
                self._client.stream(method, path, content=content, headers=JSON_HEADERS) as response,
            ):
                if response.status_code == THROTTLED_STATUS:
                    if self.on_throttled is not None:
                        self.on_throttled()
                    if throttle.wait(response):
                        continue
                raise_for_status(response, what)
                yield _text(response, what)
                return


def _text(response: httpx.Response, what: str) -> Iterator[str]:
    with _unreachable(what):
        yield from response.iter_text()
