"""Reading a JSON request body safely, shared by the SCIM and admin blueprints.

One set of guards for every JSON body the server accepts, so no body can become a 500:

* size: larger than ``MAX_CONTENT_LENGTH`` (``[server] max_body_bytes``) is a 413, chunked
  bodies included (Werkzeug would cut them and hand over truncated JSON);
* syntax: not JSON, or ``NaN``/``Infinity`` (not JSON, RFC 8259 §6, though Python accepts them);
* depth: arrays and objects nested deeper than :data:`MAX_JSON_DEPTH` (the standard library's
  parser and copy functions recurse, so a deep body would be a ``RecursionError``);
* text: a string, or a member name, that no database can store (agent.scim.characters).

Each refusal is a :class:`BodyRefused`; a blueprint turns it into its own error body.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, request

from agent.scim.characters import unstorable_in, where_unstorable

__all__ = ["MAX_JSON_DEPTH", "BodyRefused", "parse", "read", "refused_media_type"]

# Real SCIM bodies nest about five levels (PatchOp -> Operations -> operation -> value ->
# emails -> element); admin bodies two.
MAX_JSON_DEPTH = 32


class BodyRefused(Exception):
    """A request body refused before any use: ``status`` (400 or 413), what is wrong, and the
    RFC 7644 §3.12 ``scim_type`` a SCIM response carries (None for 413)."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type


def refused_media_type() -> str | None:
    """The body's declared media type when it is not JSON (a 415 on /scim and /admin alike);
    None for a JSON type or none declared (some clients omit Content-Type)."""
    declared = (request.mimetype or "").lower()
    return declared if declared and "json" not in declared else None


def read() -> bytes:
    """The raw body of the current request, at most ``MAX_CONTENT_LENGTH`` bytes (else 413)."""
    max_len = current_app.config["MAX_CONTENT_LENGTH"]
    too_large = BodyRefused(413, f"Request body larger than {max_len} bytes")
    if request.content_length is not None and request.content_length > max_len:
        raise too_large
    if request.content_length is None and request.environ.get("wsgi.input_terminated"):
        raw = request.environ["wsgi.input"].read(max_len + 1)
    else:
        raw = request.get_data(cache=False)
    if len(raw) > max_len:
        raise too_large
    return bytes(raw)


def parse(raw: bytes) -> Any:
    """``raw`` as JSON, through every guard of this module."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise BodyRefused(400, "Request body is not valid JSON", "invalidSyntax") from None
    # Nesting needs an opening bracket per level: a body with few brackets needs no walk.
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > MAX_JSON_DEPTH and _nesting(body) > MAX_JSON_DEPTH:
        raise _too_deep()
    if _MAY_ESCAPE_UNSTORABLE.search(raw) is not None and unstorable_in(body):
        err = where_unstorable(body)
        assert err is not None
        raise BodyRefused(400, err.detail, err.scim_type)
    return body


# JSON text decoded from UTF-8 holds neither U+0000 (a raw control character is invalid JSON)
# nor a lone surrogate (not encodable in UTF-8): only the escapes ``\u0000`` and
# ``\uD800``..``\uDFFF`` produce them. A body without such an escape, nearly every body, needs
# no walk over its strings.
_MAY_ESCAPE_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _too_deep() -> BodyRefused:
    return BodyRefused(
        400, f"Request body is nested deeper than {MAX_JSON_DEPTH} levels", "invalidSyntax"
    )


def _nesting(value: Any) -> int:
    """Depth of arrays and objects, without recursion (the PATCH and copy code recurses)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259 §6); Python's parser would accept them."""
    raise ValueError(f"{name} is not a JSON value")
