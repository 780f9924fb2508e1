"""Answers to requests refused before the app sees them: by the buffering front (408, 431:
agent.web.front) or by gunicorn's parser (400, 414, 431, 501 and the like).

The app is not there to shape them, so they are made here in the shape of the door the
request came to: a SCIM error (RFC 7644 §3.12) under ``/scim``, a JSON ``{"error": ...}``
under ``/admin``, plain text elsewhere. Every one closes the connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent.scim.urns import ERROR_SCHEMA

SCIM_PREFIX = "/scim/"
ADMIN_PREFIX = "/admin"
_DETAIL_LIMIT = 200  # characters of a parser's own message quoted back


def request_target(data: bytes | bytearray) -> str:
    """The request-target of the request line at the start of ``data`` (``""`` if there is
    none to be read): enough to tell which door the request came to."""
    line = bytes(data[:8192]).split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split(b" ")
    return parts[1].decode("latin-1") if len(parts) >= 2 else ""


def is_scim(target: str) -> bool:
    return target.startswith(SCIM_PREFIX) or target == SCIM_PREFIX.rstrip("/")


def is_admin(target: str) -> bool:
    return target == ADMIN_PREFIX or target.startswith(ADMIN_PREFIX + "/")


@dataclass(frozen=True)
class Limits:
    """What the server accepts of a request's head (gunicorn's and the front's limits)."""

    line: int  # bytes of the request line
    fields: int  # header fields
    field_bytes: int  # bytes of one header field
    head_bytes: int  # bytes of the request line and header fields together


def detail_for(status: int, target: str, limits: Limits, said: str) -> str:
    """What the client can do about it. ``said``: the parser's own message (for a 400)."""
    if status == 414:
        text = f"The request line is longer than the {limits.line} bytes this server accepts."
        if is_scim(target):
            text += (
                " Send a long filter in the body of POST /scim/v2/.search"
                " (RFC 7644 section 3.4.3) instead of the URL."
            )
        return text
    if status == 431:
        return (
            f"The request's header fields are more or larger than this server accepts (at"
            f" most {limits.fields} fields of {limits.field_bytes} bytes each and"
            f" {limits.head_bytes} bytes in all); send fewer or shorter headers."
        )
    if status == 408:
        return "The request did not arrive in time; send it again."
    if status == 501:
        return (
            "This server reads a request body as sent or chunked, nothing else; send it"
            " without another transfer coding (such as gzip)."
        )
    quoted = "".join(c if c.isprintable() else "?" for c in said[:_DETAIL_LIMIT])
    if status == 500:
        return "The server could not handle this request; nothing was changed."
    return f"The request is not valid HTTP/1.1 ({quoted})." if quoted else "Bad request."


def response(status: int, reason: str, target: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response, body included, that closes the connection."""
    if is_scim(target):
        kind = "application/scim+json"
        body = json.dumps({"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail})
    elif is_admin(target):
        kind = "application/json"
        body = json.dumps({"error": detail})
    else:
        kind = "text/plain; charset=utf-8"
        body = detail + "\n"
    data = body.encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode("latin-1") + data
