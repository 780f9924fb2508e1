"""Text the databases cannot store, refused once where it enters (no input may become a 500).

Two kinds of code point survive JSON decoding but not the database: U+0000 (PostgreSQL text
cannot hold it: "PostgreSQL text fields cannot contain NUL", psycopg ``DataError``) and the
lone surrogates U+D800..U+DFFF (JSON's ``"\\ud800"`` escape, RFC 8259 §8.2 "unpaired
surrogates"; they are not Unicode scalar values, so no UTF-8 encoder accepts them and both
drivers fail with ``UnicodeEncodeError``). Every other code point, noncharacters and control
characters included, is stored and returned as sent on SQLite and PostgreSQL (UTF8) alike.

Pure functions, standard library only: the web layer walks request bodies, query parameters
and path ids with them; the filter and PATCH parsers check the strings they decode themselves
(escapes inside a filter's string literal).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agent.scim.errors import ScimError

__all__ = ["describe", "refusal", "unstorable_in", "where_unstorable"]


def refusal(text: str) -> str | None:
    """What in ``text`` no database can store, in the admin's words; None if it is fine."""
    if "\x00" in text:
        return "the character U+0000 (NUL)"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"U+{ord(text[err.start]):04X}, half of a surrogate pair (not a character)"
    return None


def describe(text: str, limit: int = 60) -> str:
    """``text`` fit to quote in an error message: anything unprintable escaped, bounded."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    if shown.isprintable() and shown.isascii():
        return shown
    return shown.encode("unicode_escape").decode("ascii")


def unstorable_in(value: Any) -> bool:
    """Whether any string in the JSON value ``value`` (keys included) cannot be stored.
    Iterative, so a deep value cannot exhaust the stack; the common body costs one pass."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if refusal(item) is not None:
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if refusal(key) is not None:
                    return True
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _walk(value: Any, path: str) -> Iterator[tuple[str, str, bool]]:
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            yield where, item, False
        elif isinstance(item, dict):
            for key, child in item.items():
                yield where, key, True
                stack.append((child, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{n}]") for n, child in enumerate(item))


def where_unstorable(value: Any, scim_type: str = "invalidValue") -> ScimError | None:
    """The 400 for the first string in ``value`` that cannot be stored, naming its attribute
    (``emails[0].value``); None if every string is fine."""
    for where, text, is_key in _walk(value, ""):
        reason = refusal(text)
        if reason is None:
            continue
        if is_key:
            place = f" in '{describe(where)}'" if where else ""
            detail = f"An attribute name{place} contains {reason}"
        else:
            detail = f"Attribute '{describe(where) or '(body)'}' contains {reason}"
        return ScimError(400, f"{detail}, which cannot be stored; remove it", scim_type)
    return None
