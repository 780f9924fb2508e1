"""SCIM filter parsing into a typed, validated intermediate representation.

RFC 7644 §3.4.2.2 defines the filter grammar; this module uses scim2-filter-parser's lexer and
parser for the syntax only and then resolves every attribute path against an explicit
catalogue (RFC 7643 §4.1, §4.2, §4.3 and the seat-agent extension). Nothing is ever silently
ignored: an attribute or sub-attribute the catalogue does not know, a value of the wrong type,
or an operator the attribute type does not allow is ``400 invalidFilter`` (RFC 7644 §3.12).

The result is a small tree of frozen dataclasses (:class:`Compare`, :class:`And`, :class:`Or`,
:class:`Not`, :class:`ValuePath`) with comparison values already converted to the attribute's
declared type (``bool`` for boolean, an aware UTC ``datetime`` for dateTime, ``str`` otherwise).
This module is pure: no SQL and no web framework; ``agent.storage.filter_sql`` turns the tree
into a SQLAlchemy WHERE clause.

Notes on the third-party parser (scim2-filter-parser 0.7.0):

* its precedence table gives ``and`` and ``or`` the *same* precedence, so ``a or b and c``
  parses as ``(a or b) and c``. RFC 7644 §3.4.2.2 says ``and`` binds tighter than ``or``;
  unbracketed ``and``/``or`` chains are therefore flattened here and re-associated with the
  right precedence (an explicit ``( ... )`` group is a distinct node in the parser's tree, so
  grouping is kept);
* ``CompValue.value`` is always a ``str`` (``true`` and ``"true"`` look alike), so the token stream
  is wrapped to mark JSON string literals, which lets ``title eq null`` be told apart from
  ``title eq "null"``; JSON escapes inside string literals (RFC 7159 §7) are decoded.

``null`` (RFC 7644 §3.4.2.2 compValue) means unassigned (RFC 7643 §2.5): ``attr eq null`` is
``not (attr pr)`` and ``attr ne null`` is ``attr pr``; other operators with null are 400. A filter
with more than :data:`MAX_COMPARISONS` comparisons is 400 invalidFilter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

from scim2_filter_parser import ast as sast  # type: ignore[import-untyped]
from scim2_filter_parser.lexer import SCIMLexer  # type: ignore[import-untyped]
from scim2_filter_parser.parser import SCIMParser  # type: ignore[import-untyped]

from agent.scim import names
from agent.scim.characters import refusal
from agent.scim.errors import ScimError
from agent.scim.resources import ENTERPRISE, GROUP_SCHEMA, MULTI_VALUED, SEAT_EXT, USER_SCHEMA

__all__ = [
    "CORE_GROUP",
    "CORE_USER",
    "ENTERPRISE_USER",
    "GROUP_ATTRS",
    "GROUP_MULTI_VALUED",
    "SEAT_USER",
    "USER_ATTRS",
    "USER_MULTI_VALUED",
    "MAX_COMPARISONS",
    "MAX_DEPTH",
    "OPERATORS",
    "And",
    "AttrDef",
    "AttrType",
    "Compare",
    "Expr",
    "Not",
    "Or",
    "ResourceType",
    "ValuePath",
    "attribute_paths",
    "attrs_for",
    "parse_datetime",
    "parse_filter",
    "resolve_attr",
]

CORE_USER = USER_SCHEMA
CORE_GROUP = GROUP_SCHEMA
ENTERPRISE_USER = ENTERPRISE
SEAT_USER = SEAT_EXT

AttrType: TypeAlias = Literal["string", "boolean", "dateTime", "reference"]
ResourceType: TypeAlias = Literal["User", "Group"]
Value: TypeAlias = str | bool | datetime | None

OPERATORS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr"})
_ORDERING = frozenset({"gt", "ge", "lt", "le"})
_SUBSTRING = frozenset({"co", "sw", "ew"})

# Deeper trees are refused: they serve no real client and would exhaust the recursion of the
# SQL compiler. Unbracketed and/or chains are balanced, so this bounds nesting, not length.
MAX_DEPTH = 64

# More comparisons than this in one filter are refused (400 invalidFilter): no IdP sends more
# than a handful, and SQLite's parser gives up on very wide expressions ("Expression tree is
# too large", SQLITE_MAX_EXPR_DEPTH 1000) long before PostgreSQL does. Counted in the token
# stream, so an oversized filter is refused before it is parsed.
MAX_COMPARISONS = 200
_COMPARISON_TOKENS = frozenset({"EQ", "NE", "CO", "SW", "EW", "GT", "GE", "LT", "LE", "PR"})


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttrDef:
    """A filterable attribute (RFC 7643 §2.2 characteristics that matter for filtering).

    ``path`` is canonical: core attributes without their schema URN (``name.givenName``),
    extension attributes with it (``urn:...:enterprise:2.0:User:department``).
    ``multi_parent`` names the multi-valued attribute a sub-attribute belongs to
    (``"emails"`` for ``emails.value``), ``None`` for singular attributes.
    """

    path: str
    type: AttrType
    case_exact: bool
    multi_parent: str | None = None

    @property
    def sub_attr(self) -> str | None:
        """The sub-attribute name of a multi-valued attribute's member (``value``, ``type``...)."""
        if self.multi_parent is None:
            return None
        return self.path[len(self.multi_parent) + 1 :]


def _s(path: str, case_exact: bool = False, multi: str | None = None) -> AttrDef:
    return AttrDef(path, "string", case_exact, multi)


def _index(defs: Iterable[AttrDef]) -> dict[str, AttrDef]:
    return {d.path.lower(): d for d in defs}


# RFC 7643 §4.1 (User), §4.3 (enterprise extension), §3.1 (common attributes: id and
# externalId are caseExact, meta.resourceType is caseExact).
_USER_SINGULAR = [
    _s("id", case_exact=True),
    _s("externalId", case_exact=True),
    _s("userName"),
    _s("displayName"),
    _s("nickName"),
    _s("title"),
    _s("userType"),
    _s("locale"),
    _s("timezone"),
    _s("preferredLanguage"),
    AttrDef("profileUrl", "reference", False),
    _s("name.givenName"),
    _s("name.familyName"),
    _s("name.formatted"),
    AttrDef("active", "boolean", False),
    AttrDef("meta.created", "dateTime", False),
    AttrDef("meta.lastModified", "dateTime", False),
    _s("meta.resourceType", case_exact=True),
    _s(f"{ENTERPRISE_USER}:employeeNumber"),
    _s(f"{ENTERPRISE_USER}:department"),
    _s(f"{ENTERPRISE_USER}:organization"),
    _s(f"{ENTERPRISE_USER}:division"),
    _s(f"{ENTERPRISE_USER}:costCenter"),
    _s(f"{ENTERPRISE_USER}:manager.value"),
    _s(f"{SEAT_USER}:licenseState"),
    _s(f"{SEAT_USER}:appStatus"),
]

#: Multi-valued User attributes stored as rows of ``user_values`` (RFC 7643 §4.1.2), plus
#: ``groups`` (group membership, RFC 7643 §4.1.2 "groups").
USER_MULTI_VALUED: tuple[str, ...] = (*MULTI_VALUED, "groups")


def _user_multi() -> list[AttrDef]:
    out: list[AttrDef] = []
    for parent in USER_MULTI_VALUED[:-1]:
        value_type: AttrType = "reference" if parent == "photos" else "string"
        out.append(AttrDef(f"{parent}.value", value_type, False, parent))
        out.append(_s(f"{parent}.type", multi=parent))
        out.append(AttrDef(f"{parent}.primary", "boolean", False, parent))
    # groups.value is the group's id, which is caseExact (RFC 7643 §3.1).
    out.append(_s("groups.value", case_exact=True, multi="groups"))
    out.append(_s("groups.display", multi="groups"))
    return out


USER_ATTRS: dict[str, AttrDef] = _index(_USER_SINGULAR + _user_multi())

#: Multi-valued Group attributes (RFC 7643 §4.2).
GROUP_MULTI_VALUED: tuple[str, ...] = ("members",)

GROUP_ATTRS: dict[str, AttrDef] = _index(
    [
        _s("id", case_exact=True),
        _s("externalId", case_exact=True),
        _s("displayName"),
        AttrDef("meta.created", "dateTime", False),
        AttrDef("meta.lastModified", "dateTime", False),
        _s("meta.resourceType", case_exact=True),
        # members.value is a member's id: caseExact like every id (RFC 7643 §3.1).
        _s("members.value", case_exact=True, multi="members"),
    ]
)

_CORE_URN: dict[str, str] = {"User": CORE_USER, "Group": CORE_GROUP}
_MULTI: dict[str, tuple[str, ...]] = {"User": USER_MULTI_VALUED, "Group": GROUP_MULTI_VALUED}
# Singular complex attributes a value path may name (``name[givenName eq "x"]``).
_COMPLEX: dict[str, tuple[str, ...]] = {
    "User": ("name", "meta", f"{ENTERPRISE_USER}:manager"),
    "Group": ("meta",),
}


def attrs_for(resource_type: ResourceType) -> dict[str, AttrDef]:
    """The catalogue of filterable attributes for ``resource_type`` (lower-cased path keys)."""
    if resource_type == "User":
        return USER_ATTRS
    if resource_type == "Group":
        return GROUP_ATTRS
    raise ValueError(f"unknown resource type {resource_type!r}")


def _unknown(text: str, scim_type: str = "invalidFilter") -> ScimError:
    if scim_type != "invalidFilter":  # a bare path (sortBy), not a filter
        return ScimError(400, f"Unknown attribute '{text}'", scim_type)
    return ScimError(400, f"Unknown or unfilterable attribute '{text}' in filter", scim_type)


def _qualify(name: str, uri: str | None, resource_type: ResourceType, text: str, st: str) -> str:
    """Lower-cased catalogue key for ``[uri:]name`` (RFC 7644 §3.10: the core URN is optional)."""
    if uri is None:
        return name.lower()
    urn = names.for_resource(resource_type).urn(uri)
    if urn is None:
        raise _unknown(text, st)
    if urn == _CORE_URN[resource_type]:
        return name.lower()
    return f"{urn.lower()}:{name.lower()}"


def _lookup(key: str, resource_type: ResourceType, text: str, st: str) -> AttrDef:
    catalogue = attrs_for(resource_type)
    found = catalogue.get(key)
    if found is None and key in {m.lower() for m in _MULTI[resource_type]}:
        # A multi-valued attribute named without a sub-attribute means its "value"
        # (RFC 7644 §3.4.2.2, e.g. ``emails eq "x"``).
        found = catalogue.get(f"{key}.value")
    if found is None:
        raise _unknown(text, st)
    return found


_PATH_RE = re.compile(
    r"^(?:(?P<uri>[A-Za-z][A-Za-z0-9:._-]*):)?"
    r"(?P<name>[A-Za-z][A-Za-z0-9_-]*)(?:\.(?P<sub>[A-Za-z][A-Za-z0-9_-]*))?$"
)


def resolve_attr(
    path: str, resource_type: ResourceType, scim_type: str = "invalidFilter"
) -> AttrDef:
    """Resolve an attribute path string (RFC 7644 §3.10) against the catalogue.

    Used for ``sortBy`` (RFC 7644 §3.4.2.3) and anywhere else a bare path is given.
    Case-insensitive (RFC 7643 §2.1); a schema URN prefix is accepted for the core schema and
    the extensions of ``resource_type``. Unknown paths raise ``ScimError(400, ..., scim_type)``.
    """
    m = _PATH_RE.match(path.strip())
    if m is None:
        raise _unknown(path, scim_type)
    name = m["name"] if m["sub"] is None else f"{m['name']}.{m['sub']}"
    key = _qualify(name, m["uri"], resource_type, path, scim_type)
    return _lookup(key, resource_type, path, scim_type)


# --------------------------------------------------------------------------------------------
# Intermediate representation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    """``attr op value`` (RFC 7644 §3.4.2.2 attrExp); ``value`` is ``None`` for ``pr``."""

    attr: AttrDef
    op: str
    value: Value


@dataclass(frozen=True)
class And:
    """Both sides match (RFC 7644 §3.4.2.2 logExp ``and``)."""

    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    """Either side matches (RFC 7644 §3.4.2.2 logExp ``or``)."""

    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    """The inner filter does not match (RFC 7644 §3.4.2.2 ``not ( ... )``)."""

    expr: Expr


@dataclass(frozen=True)
class ValuePath:
    """At least one value of the multi-valued ``parent`` satisfies ``expr`` (RFC 7644 §3.4.2.2).

    ``expr`` only contains :class:`Compare` nodes on sub-attributes of ``parent`` (combined with
    And/Or/Not) and is evaluated against one value at a time, so ``emails[type eq "work" and
    value eq "a"]`` needs a single e-mail that is both. Plain comparisons on a multi-valued
    attribute (``emails.value eq "a"``, ``emails eq "a"``) are represented as a ValuePath too.
    """

    parent: str
    expr: Expr


Expr: TypeAlias = Compare | And | Or | Not | ValuePath


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


class _Quoted(str):
    """A compValue that was a JSON string literal in the filter text."""

    __slots__ = ()


def _decode_string(raw: str) -> str:
    """Decode JSON escapes in a string literal (RFC 7159 §7); the lexer keeps them verbatim."""
    if "\\" not in raw:
        return raw
    try:
        decoded = json.loads(f'"{raw}"')
    except ValueError:
        raise ScimError(
            400, f'Invalid escape sequence in filter string "{raw}"', "invalidFilter"
        ) from None
    assert isinstance(decoded, str)
    return decoded


# A JSON string literal (RFC 8259 §7), escaped quotes included. scim2-filter-parser's lexer
# ends a string at the first quote ("[^"]*"), so ``displayName eq "O\"Brien"`` came apart.
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_FILLER = "\ue000"  # a private-use character: neither quote nor backslash


def _masked_literals(text: str) -> tuple[str, dict[int, str]]:
    """``text`` with the inside of each string literal replaced by as many filler characters
    (so the lexer sees one string there and every position stays the same), and the literals'
    raw insides by their opening quote's position."""
    literals: dict[int, str] = {}

    def mask(found: re.Match[str]) -> str:
        literals[found.start()] = found.group()[1:-1]
        return '"' + _FILLER * (len(found.group()) - 2) + '"'

    return _STRING_LITERAL.sub(mask, text), literals


class _TokenStream:
    """Wraps the lexer's tokens: marks string literals and remembers the last token seen."""

    def __init__(self, text: str) -> None:
        self.text, self._literals = _masked_literals(text)
        self.last: Any = None
        self.comparisons = 0

    def __iter__(self) -> Iterator[Any]:
        for tok in SCIMLexer().tokenize(self.text):
            if tok.type == "COMP_VALUE":
                raw = self._literals.get(tok.index, tok.value)
                tok.value = _Quoted(_decode_string(raw))
            elif tok.type in _COMPARISON_TOKENS:
                self.comparisons += 1
                if self.comparisons > MAX_COMPARISONS:
                    raise ScimError(
                        400,
                        f"Invalid filter: more than {MAX_COMPARISONS} comparisons",
                        "invalidFilter",
                    )
            self.last = tok
            yield tok


def _syntax_error(stream: _TokenStream, exc: BaseException) -> ScimError:
    if isinstance(exc, ValueError) and "Illegal character" in str(exc):
        detail = f"Invalid filter: {exc}"
    elif str(exc).endswith("None"):
        detail = "Invalid filter: unexpected end of filter"
    elif stream.last is not None:
        detail = f"Invalid filter: unexpected {stream.last.value!r} at position {stream.last.index}"
    else:
        detail = "Invalid filter syntax"
    return ScimError(400, detail, "invalidFilter")


@dataclass(frozen=True)
class _Ctx:
    resource_type: ResourceType
    # Inside ``parent[...]``: the canonical path of the parent (lower-cased key prefix),
    # and the text for messages.
    parent_key: str | None = None
    parent_text: str | None = None


def _path_text(ap: Any) -> str:
    name = ap.attr_name if isinstance(ap.attr_name, str) else "<valuePath>"
    text = f"{ap.uri}:{name}" if ap.uri else name
    if ap.sub_attr is not None:
        text = f"{text}.{ap.sub_attr.value}"
    return text


def _resolve_path(ap: Any, ctx: _Ctx) -> AttrDef:
    """Resolve a plain ``AttrPath`` (not a value path) in ``ctx``."""
    text = _path_text(ap)
    if ctx.parent_key is not None:
        # Inside brackets names are sub-attributes of the parent (RFC 7644 §3.4.2.2 valFilter).
        full = f"{ctx.parent_text}.{text}"
        if ap.uri is not None or ap.sub_attr is not None:
            raise _unknown(full)
        key = f"{ctx.parent_key}.{ap.attr_name.lower()}"
        found = attrs_for(ctx.resource_type).get(key)
        if found is None:
            raise _unknown(full)
        return found
    name = ap.attr_name if ap.sub_attr is None else f"{ap.attr_name}.{ap.sub_attr.value}"
    key = _qualify(name, ap.uri, ctx.resource_type, text, "invalidFilter")
    return _lookup(key, ctx.resource_type, text, "invalidFilter")


def _convert_value(attr: AttrDef, op: str, comp: Any) -> Value:
    """Type a compValue by the attribute's declared type (RFC 7643 §2.3, RFC 7644 §3.4.2.2)."""
    if op == "pr":
        return None
    if comp is None:  # pragma: no cover - the grammar requires a value for other operators
        raise ScimError(400, f"Operator '{op}' needs a value", "invalidFilter")
    raw: str = comp.value
    quoted = isinstance(raw, _Quoted)
    if attr.type == "boolean":
        if op in _ORDERING or op in _SUBSTRING:
            raise ScimError(
                400,
                f"Operator '{op}' is not allowed on boolean attribute '{attr.path}'",
                "invalidFilter",
            )
        low = str(raw).lower()
        if low in ("true", "false"):
            return low == "true"
        raise ScimError(
            400, f"Invalid boolean value '{raw}' for attribute '{attr.path}'", "invalidFilter"
        )
    if not quoted:
        raise ScimError(
            400,
            f"Attribute '{attr.path}' must be compared with a string, not {raw}",
            "invalidFilter",
        )
    if attr.type == "dateTime":
        if op in _SUBSTRING:
            raise ScimError(
                400,
                f"Operator '{op}' is not allowed on dateTime attribute '{attr.path}'",
                "invalidFilter",
            )
        return parse_datetime(str(raw), attr.path)
    reason = refusal(raw)
    if reason is not None:
        # An escape in the literal (``"\u0000"``) decodes to what no database can store.
        raise ScimError(
            400,
            f"The filter value for '{attr.path}' contains {reason}, which cannot be stored; "
            "remove it",
            "invalidValue",
        )
    return str(raw)


_DT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})?$")


def parse_datetime(text: str, attr: str = "dateTime") -> datetime:
    """Parse an xsd:dateTime (RFC 7643 §2.3.5) into an aware UTC datetime.

    A value without an offset is taken as UTC. Anything else -> 400 invalidFilter.
    """
    if not _DT_RE.match(text):
        raise ScimError(400, f"Invalid dateTime '{text}' for attribute '{attr}'", "invalidFilter")
    try:
        dt = datetime.fromisoformat(text.upper() if text[-1:] in "zZ" else text)
    except ValueError:
        raise ScimError(
            400, f"Invalid dateTime '{text}' for attribute '{attr}'", "invalidFilter"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _is_chain(node: Any) -> bool:
    """An unbracketed ``and``/``or`` expression (a parenthesised one is wrapped in a Filter)."""
    return (
        isinstance(node, sast.Filter)
        and node.namespace is None
        and not node.negated
        and isinstance(node.expr, sast.LogExpr)
    )


def _balanced(items: list[Expr], kind: type[And] | type[Or]) -> Expr:
    if len(items) == 1:
        return items[0]
    mid = len(items) // 2
    return kind(_balanced(items[:mid], kind), _balanced(items[mid:], kind))


def _convert_chain(node: Any, ctx: _Ctx) -> Expr:
    """Re-associate an unbracketed chain: ``and`` before ``or`` (RFC 7644 §3.4.2.2)."""
    operands: list[Any] = []
    ops: list[str] = []
    stack: list[Any] = [node]
    while stack:  # in-order walk without recursion (chains can be long)
        item = stack.pop()
        if isinstance(item, str):
            ops.append(item)
        elif _is_chain(item):
            stack.append(item.expr.expr2)
            stack.append(item.expr.op.lower())
            stack.append(item.expr.expr1)
        else:
            operands.append(item)
    groups: list[list[Expr]] = [[_convert(operands[0], ctx)]]
    for op, operand in zip(ops, operands[1:], strict=True):
        converted = _convert(operand, ctx)
        if op == "and":
            groups[-1].append(converted)
        else:
            groups.append([converted])
    return _balanced([_balanced(g, And) for g in groups], Or)


def _value_path(ns: Any, inner: Any, ctx: _Ctx) -> tuple[str, str | None, Expr]:
    """Resolve ``parent[inner]``; returns (parent canonical path, parent text, inner expr).

    The returned parent is ``""`` for a singular complex attribute (no EXISTS needed).
    """
    if ctx.parent_key is not None or not isinstance(ns.attr_name, str):
        raise ScimError(400, "Nested value paths are not allowed in a filter", "invalidFilter")
    text = f"{ns.uri}:{ns.attr_name}" if ns.uri else ns.attr_name
    key = _qualify(ns.attr_name, ns.uri, ctx.resource_type, text, "invalidFilter")
    multi = {m.lower(): m for m in _MULTI[ctx.resource_type]}
    complex_ = {c.lower(): c for c in _COMPLEX[ctx.resource_type]}
    if key in multi:
        parent = multi[key]
    elif key in complex_:
        parent = complex_[key]
    else:
        raise _unknown(text)
    expr = _convert(inner, _Ctx(ctx.resource_type, key, text))
    return parent, text, expr


def _wrap(parent: str, ctx: _Ctx, expr: Expr) -> Expr:
    return ValuePath(parent, expr) if parent in _MULTI[ctx.resource_type] else expr


def _convert_attr_expr(node: Any, ctx: _Ctx) -> Expr:
    op = str(node.value).lower()
    if op not in OPERATORS:  # pragma: no cover - the grammar only produces these
        raise ScimError(400, f"The operator '{op}' is not supported", "invalidFilter")
    ap = node.attr_path
    if isinstance(ap.attr_name, sast.Filter):
        # ``emails[type eq "work"].value eq "x"``: the parser moved ``.value`` onto the
        # value path's namespace. Same-value semantics: one ValuePath over (inner AND cmp).
        vp = ap.attr_name
        ns = vp.namespace
        sub = ns.sub_attr.value if ns.sub_attr is not None else "value"
        parent, text, inner = _value_path(ns, vp.expr, ctx)
        key_prefix = _qualify(ns.attr_name, ns.uri, ctx.resource_type, "", "invalidFilter")
        attr = attrs_for(ctx.resource_type).get(f"{key_prefix}.{sub.lower()}")
        if attr is None:
            raise _unknown(f"{text}.{sub}")
        null = _null_comparison(attr, op, node.comp_value)
        cmp = (
            null
            if null is not None
            else Compare(attr, op, _convert_value(attr, op, node.comp_value))
        )
        return _wrap(parent, ctx, And(inner, cmp))
    attr = _resolve_path(ap, ctx)
    null = _null_comparison(attr, op, node.comp_value)
    if null is not None:
        if attr.multi_parent is not None and ctx.parent_key is None:
            # ``emails.type eq null``: no value has it (the attribute is unassigned).
            present = ValuePath(attr.multi_parent, Compare(attr, "pr", None))
            return Not(present) if op == "eq" else present
        return null
    cmp = Compare(attr, op, _convert_value(attr, op, node.comp_value))
    if attr.multi_parent is not None and ctx.parent_key is None:
        return ValuePath(attr.multi_parent, cmp)
    return cmp


def _null_comparison(attr: AttrDef, op: str, comp: Any) -> Expr | None:
    """``attr eq null`` / ``attr ne null`` (RFC 7644 §3.4.2.2 compValue ``null``): RFC 7643 §2.5
    makes null, an empty array and an unassigned attribute the same state, so ``eq null`` is
    ``not (attr pr)`` and ``ne null`` is ``attr pr``. Any other operator with null is 400."""
    if op == "pr" or comp is None:
        return None
    raw = comp.value
    if isinstance(raw, _Quoted) or str(raw).lower() != "null":
        return None
    if op not in ("eq", "ne"):
        raise ScimError(
            400, f"Operator '{op}' cannot compare '{attr.path}' with null", "invalidFilter"
        )
    present = Compare(attr, "pr", None)
    return Not(present) if op == "eq" else present


def _convert(node: Any, ctx: _Ctx) -> Expr:
    if isinstance(node, sast.Filter):
        if node.namespace is not None:
            # A value path used as a filter: ``emails[type eq "work"]``.
            if node.namespace.sub_attr is not None:
                raise ScimError(
                    400,
                    f"Invalid value path '{_path_text(node.namespace)}[...]' in filter",
                    "invalidFilter",
                )
            parent, _, inner = _value_path(node.namespace, node.expr, ctx)
            result = _wrap(parent, ctx, inner)
        elif _is_chain(node):
            result = _convert_chain(node, ctx)
        else:
            result = _convert(node.expr, ctx)
        return Not(result) if node.negated else result
    if isinstance(node, sast.AttrExpr):
        return _convert_attr_expr(node, ctx)
    raise ScimError(400, "Invalid filter", "invalidFilter")  # pragma: no cover


def _depth(expr: Expr) -> int:
    if isinstance(expr, Compare):
        return 1
    if isinstance(expr, And | Or):
        return 1 + max(_depth(expr.left), _depth(expr.right))
    return 1 + _depth(expr.expr)


def attribute_paths(expr: Expr) -> Iterator[str]:
    """The canonical path of every attribute ``expr`` compares (value paths included)."""
    if isinstance(expr, Compare):
        yield expr.attr.path
    elif isinstance(expr, And | Or):
        yield from attribute_paths(expr.left)
        yield from attribute_paths(expr.right)
    else:
        yield from attribute_paths(expr.expr)


def parse_filter(text: str, resource_type: ResourceType) -> Expr:
    """Parse a SCIM filter (RFC 7644 §3.4.2.2) for ``resource_type`` ("User" or "Group").

    Returns the typed intermediate representation. Every problem is
    ``ScimError(400, ..., "invalidFilter")`` (RFC 7644 §3.12): syntax errors, unknown or
    unfilterable attributes (RFC 7643 §2.1 names are matched case-insensitively), a value that
    does not fit the attribute's type, ordering or substring operators on booleans, and
    substring operators on dateTimes.
    """
    attrs_for(resource_type)  # validates resource_type
    if not isinstance(text, str) or not text.strip():
        raise ScimError(400, "Invalid filter: empty filter", "invalidFilter")
    simple = _SIMPLE_EQ.fullmatch(text)
    if simple is not None:
        return _simple_eq(simple[1], simple[2], resource_type)
    return _parse_grammar(text, resource_type)


# The IdPs' lookup, ``userName eq "..."``: one plain attribute name (no schema URN), ``eq``
# and a string without escapes. The lexer of scim2-filter-parser tokenizes any such text the
# same way (its names are [a-zA-Z$][a-zA-Z0-9_$-]*, it ignores spaces and tabs, and a string
# is "[^"]*"), so this shape is read without the grammar, with the very steps the parsed tree
# goes through; tests/test_scim_filter.py checks the two agree.
_SIMPLE_EQ = re.compile(
    r"[ \t]*([A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z][A-Za-z0-9_-]*)?)"  # the attribute
    r'[ \t]+[eE][qQ][ \t]+"([^"\\]*)"[ \t]*'  # eq "value"
)


@dataclass(frozen=True)
class _Literal:
    """A compValue as the parser hands it over (``.value``)."""

    value: _Quoted


def _simple_eq(name: str, value: str, resource_type: ResourceType) -> Expr:
    key = _qualify(name, None, resource_type, name, "invalidFilter")
    attr = _lookup(key, resource_type, name, "invalidFilter")
    cmp = Compare(attr, "eq", _convert_value(attr, "eq", _Literal(_Quoted(value))))
    return ValuePath(attr.multi_parent, cmp) if attr.multi_parent is not None else cmp


def _parse_grammar(text: str, resource_type: ResourceType) -> Expr:
    """``text`` through scim2-filter-parser's grammar, then into the representation."""
    stream = _TokenStream(text)
    try:
        tree = SCIMParser().parse(iter(stream))
    except ScimError:
        raise
    except RecursionError:
        raise ScimError(400, "Invalid filter: too deeply nested", "invalidFilter") from None
    except Exception as exc:  # the parser raises SCIMParserError, ValueError and sly errors
        raise _syntax_error(stream, exc) from None
    if tree is None:
        raise ScimError(400, "Invalid filter syntax", "invalidFilter")
    try:
        expr = _convert(tree, _Ctx(resource_type))
        too_deep = _depth(expr) > MAX_DEPTH
    except RecursionError:
        too_deep = True
    if too_deep:
        raise ScimError(400, "Invalid filter: too deeply nested", "invalidFilter")
    return expr
