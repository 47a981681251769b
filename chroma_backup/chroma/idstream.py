"""Incremental parsing of a ``get(include=[])`` response: the ids of a whole collection without
holding them all.

Chroma has no cursor over ids, and offset paging can skip records when others are deleted
meanwhile, so a backup lists every id in one request.  The chromadb client would
decode that response into one Python list (about 100 bytes per id: ~100 MB at a million); this
parser takes the body as it arrives and hands out the ids as they complete, so the listing
streams straight into PostgreSQL.  Pure: no I/O.
"""

from __future__ import annotations

import json
from json.decoder import scanstring  # type: ignore[attr-defined]  # the C scanner, public but untyped
from typing import Any

_WHITESPACE = " \t\n\r"
_decoder = json.JSONDecoder()


class MalformedListing(ValueError):
    """The body is not a JSON object with an ``ids`` array of strings."""


class IdStreamParser:
    """Feed text chunks with ``feed`` (it returns the ids completed so far), then ``close``."""

    def __init__(self) -> None:
        self._buffer = ""
        self._pos = 0
        self._state = "start"  # start -> key -> colon -> value | ids -> after_value -> ... -> end
        self._key: str | None = None
        self._first_item = True
        self.fields: dict[str, Any] = {}  # the other top-level fields (small: include=[])
        self.seen_ids = False

    def feed(self, text: str) -> list[str]:
        self._buffer = self._buffer[self._pos :] + text
        self._pos = 0
        out: list[str] = []
        while self._step(out):
            pass
        return out

    def close(self) -> None:
        """Raises ``MalformedListing`` unless a whole object with an ``ids`` array was fed."""
        if self._state != "end" or self._buffer[self._pos :].strip(_WHITESPACE):
            raise MalformedListing(f"truncated or malformed id listing (state {self._state})")
        if not self.seen_ids:
            raise MalformedListing("the listing has no 'ids' array")

    # -- the state machine: each step consumes one token, or returns False to wait for more text --

    def _skip_ws(self) -> bool:
        buffer, pos = self._buffer, self._pos
        while pos < len(buffer) and buffer[pos] in _WHITESPACE:
            pos += 1
        self._pos = pos
        return pos < len(buffer)

    def _expect(self, char: str) -> None:
        if self._buffer[self._pos] != char:
            raise MalformedListing(f"expected {char!r} at {self._buffer[self._pos : self._pos + 20]!r}")
        self._pos += 1

    def _string(self) -> str | None:
        """The JSON string at the cursor, or None when it is not complete yet."""
        self._expect('"')
        try:
            value, end = scanstring(self._buffer, self._pos)
        except json.JSONDecodeError as error:
            self._pos -= 1
            if error.msg.startswith("Unterminated string") or error.pos >= len(self._buffer) - 6:
                return None  # the string (or an escape in it) goes on in the next chunk
            raise MalformedListing(f"bad string in the id listing: {error.msg}") from None
        self._pos = end
        return str(value)

    def _step(self, out: list[str]) -> bool:
        if not self._skip_ws() or self._state == "end":
            return False
        state, char = self._state, self._buffer[self._pos]
        if state == "start":
            self._expect("{")
            self._state = "key"
        elif state == "key":
            if char == "}":
                self._pos += 1
                self._state = "end"
                return True
            key = self._string()
            if key is None:
                return False
            self._key, self._state = key, "colon"
        elif state == "colon":
            self._expect(":")
            self._state = "value"
        elif state == "value":
            if self._key == "ids":
                self._expect("[")
                self._state, self._first_item, self.seen_ids = "ids", True, True
            else:
                return self._other_value()
        elif state == "ids":
            return self._next_id(char, out)
        elif state == "after_value":
            if char == ",":
                self._pos += 1
                self._state = "key"
            else:
                self._expect("}")
                self._state = "end"
        return True

    def _next_id(self, char: str, out: list[str]) -> bool:
        """Consume as many complete ids as the buffer holds (the hot loop of a listing)."""
        buffer, pos, end = self._buffer, self._pos, len(self._buffer)
        first = self._first_item
        while True:
            while pos < end and buffer[pos] in _WHITESPACE:
                pos += 1
            if pos >= end:
                break
            if buffer[pos] == "]":
                self._pos, self._first_item, self._state = pos + 1, first, "after_value"
                return True
            mark = pos
            if not first:
                if buffer[pos] != ",":
                    self._pos = pos
                    self._expect(",")
                pos += 1
                while pos < end and buffer[pos] in _WHITESPACE:
                    pos += 1
                if pos >= end:
                    pos = mark
                    break
            if buffer[pos] != '"':
                raise MalformedListing("an id in the listing is not a string")
            self._pos = pos
            value = self._string()
            if value is None:
                pos = mark
                break
            out.append(value)
            pos, first = self._pos, False
        self._pos, self._first_item = pos, first
        return False

    def _other_value(self) -> bool:
        try:
            value, end = _decoder.raw_decode(self._buffer, self._pos)
        except json.JSONDecodeError:
            return False  # incomplete (these values are small: wait for the rest)
        if end == len(self._buffer) and isinstance(value, (int, float)):
            return False  # a number may go on in the next chunk
        self.fields[self._key or ""] = value
        self._pos = end
        self._state = "after_value"
        return True
