"""Cursors of cursor-based paging (RFC 9865): opaque, signed, keyset positions.

A cursor says where a walk stands: after (``nextCursor``) or before (``previousCursor``) one
``seq`` of the walked table, so the page it asks for is ``seq > X ORDER BY seq LIMIT count``
(or ``seq < X`` walked backwards): an index range from X, the same cost at any depth, and
exact however many users are created or deleted between pages (each resource that exists for
the whole walk is returned exactly once; ``seq`` never changes and is never reused).

The server keeps nothing per cursor (RFC 9865 §5.3: no resources spent per cursor). A cursor
is the base64url (RFC 4648 §5, no padding: only RFC 3986 §2.3 unreserved characters, as RFC
9865 §2 requires) of::

    version (1) | flags (1: backward, phase) | walk (1) | seq (8) | count (4) | issued (4)
    | query digest (8) | HMAC-SHA256 of all that, first 12 bytes

* the HMAC (key generated once per database, ``agent_state``) makes a forged or altered cursor
  ``invalidCursor`` (RFC 9865 §5.2: "Service providers should be able to easily detect forged
  cursor values");
* ``walk`` and the query digest (the filter) tie it to its endpoint and query (RFC 9865 §2: the
  next request repeats every parameter of the first): another endpoint's or another filter's
  cursor is ``invalidCursor``;
* ``count`` is the first page's: another count is ``invalidCount`` (RFC 9865 §2.1);
* ``issued``: a cursor older than ``CURSOR_TIMEOUT_SECONDS`` is ``expiredCursor`` (announced
  as ``cursorTimeout`` in /ServiceProviderConfig).

Pure: no Flask, no SQL. Refusals are :class:`CursorRefused`; the SCIM layer makes them SCIM
errors, the admin API JSON ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "CURSOR_TIMEOUT_SECONDS",
    "CursorCodec",
    "CursorRefused",
    "Position",
    "query_digest",
]

# RFC 9865 §4 cursorTimeout: the least time a cursor stays valid between two page requests.
CURSOR_TIMEOUT_SECONDS = 3600

_VERSION = 1
_LAYOUT = struct.Struct(">BBBQIIQ")  # version, flags, walk, seq, count, issued, query digest
_MAC_BYTES = 12
_BACKWARD = 0x01
_PHASE_SHIFT = 1  # flags bits 1..7: the phase of a walk over several tables (POST /.search)
WALKS = {"Users": 1, "Groups": 2, "search": 3, "admin users": 4}


class CursorRefused(Exception):
    """A cursor or count that cannot continue a walk; ``scim_type`` is RFC 9865 §2.1's."""

    def __init__(self, scim_type: str, detail: str):
        super().__init__(detail)
        self.scim_type = scim_type
        self.detail = detail


@dataclass(frozen=True)
class Position:
    """Where a page starts: after ``seq`` (forward) or before it (``backward``), in ``phase``
    (the index of the table walked, for a walk over several; 0 otherwise)."""

    seq: int
    backward: bool = False
    phase: int = 0


def query_digest(*parts: str | None) -> int:
    """A number that names a query (its filter, its admin filters): a cursor from another
    query is refused rather than continued with a different filter."""
    text = "\x1f".join("" if p is None else p for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class CursorCodec:
    """Encodes and decodes the cursors of one database (its key) with the injected clock."""

    def __init__(
        self,
        key: bytes,
        clock: Callable[[], datetime],
        timeout_seconds: int = CURSOR_TIMEOUT_SECONDS,
    ):
        self.key = key
        self.clock = clock
        self.timeout_seconds = timeout_seconds

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self.key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, walk: str, position: Position, count: int, query: int) -> str:
        flags = (_BACKWARD if position.backward else 0) | (position.phase << _PHASE_SHIFT)
        issued = int(self.clock().timestamp())
        body = _LAYOUT.pack(_VERSION, flags, WALKS[walk], position.seq, count, issued, query)
        return base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode("ascii")

    def decode(self, cursor: str, walk: str, count: int, query: int) -> Position:
        """The position ``cursor`` continues from, for a request of ``walk`` with ``count`` and
        ``query``; :class:`CursorRefused` when it cannot be."""
        raw = _unbase64(cursor)
        if raw is None or len(raw) != _LAYOUT.size + _MAC_BYTES:
            raise _invalid()
        body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise _invalid()
        version, flags, got_walk, seq, got_count, issued, got_query = _LAYOUT.unpack(body)
        if version != _VERSION:
            raise _invalid()
        if got_walk != WALKS[walk] or got_query != query:
            raise CursorRefused(
                "invalidCursor",
                "This cursor belongs to another query (another endpoint or filter): repeat "
                "the first request's parameters unchanged, or send an empty cursor to start "
                "again.",
            )
        if int(self.clock().timestamp()) - issued > self.timeout_seconds:
            raise CursorRefused(
                "expiredCursor",
                f"This cursor has expired: request each page within {self.timeout_seconds} "
                "seconds (cursorTimeout) of the previous one, or send an empty cursor to "
                "start again.",
            )
        if got_count != count:
            raise CursorRefused(
                "invalidCount",
                f"count must stay {got_count}, the count of the first page of this walk.",
            )
        return Position(seq, bool(flags & _BACKWARD), flags >> _PHASE_SHIFT)


def _invalid() -> CursorRefused:
    return CursorRefused(
        "invalidCursor",
        "Cursor value is invalid: send an empty cursor for the first page, then the "
        "nextCursor or previousCursor of a previous page, unchanged.",
    )


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _unbase64(cursor: str) -> bytes | None:
    if not _BASE64URL.fullmatch(cursor):
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        return None
