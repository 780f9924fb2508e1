"""SCIM filters (RFC 7644 §3.4.2.2) and sortBy (RFC 7644 §3.4.2.3) as SQLAlchemy Core expressions.

Input is the typed tree from :func:`agent.scim.filter.parse_filter`; output is a boolean
``ColumnElement`` for ``select(users).where(...)`` / ``select(groups).where(...)`` that gives
the same rows on SQLite and PostgreSQL. Semantics, all deliberate:

* **Case** (RFC 7644 §3.4.2.2, RFC 7643 §2.2 caseExact): case-insensitive attributes compare
  ``lower(column)`` with ``value.lower()``, except columns that already hold a lowered copy
  (``users.user_name_ci``, ``groups.display_name_ci``, ``user_values.value_ci``), which are
  compared directly so their indexes are used. Case-exact attributes (``id``, ``externalId``,
  ``groups.value``, ``members.value``, ``meta.resourceType``) compare as stored; their
  ``co``/``sw``/``ew`` use ``strpos``/``instr``/``substr`` rather than LIKE, because SQLite's
  LIKE ignores ASCII case. (SQLite's ``lower()`` only folds ASCII; the ``*_ci`` columns are
  lowered by the application and are exact for all of Unicode.)
* **co / sw / ew** on case-insensitive strings use LIKE with ``%``, ``_`` and the escape
  character escaped (``autoescape``), so they only ever match literally; except ``sw`` on the
  lowered, indexed columns, which is a range (``col >= 'abc' AND col < 'abd'``) the index
  serves, on SQLite and on a PostgreSQL database with a code point collation (C, POSIX,
  C.UTF-8; probed once per engine). Other PostgreSQL collations get the same range under
  ``COLLATE "C"``: still exact, without the index.
* **gt / ge / lt / le** on strings are lexicographic by code point (RFC 7644 §3.4.2.2), which
  is SQLite's default BINARY collation and ``COLLATE "C"`` on PostgreSQL. On dateTime they
  compare instants; values are bound in UTC, the zone the application stores (SQLite keeps
  DateTime as text without an offset, so the bound UTC text compares correctly).
* **Booleans** are bound as booleans (``IS true``/``IS 1``), never as strings.
* **Absent values**: ``ne "x"`` matches a resource whose attribute is absent (NULL) as well as
  one whose value differs, i.e. ``ne`` is exactly ``not (eq)``; ``eq``, ``co``, ``sw``, ``ew``,
  ``gt``... never match an absent value; ``pr`` needs a non-NULL (and, for strings, non-empty)
  value (RFC 7644 §3.4.2.2 "pr"). Every comparison is two-valued (never SQL NULL), so
  ``not (title eq "x")`` includes users without a title.
* **Multi-valued attributes** (RFC 7644 §3.4.2.2: "the filter matches if any of the values ...
  match") become a correlated EXISTS over ``user_values`` / ``group_members``; every condition of
  one value path applies to the same row, so ``emails[type eq "work" and value eq "a"]`` needs one
  e-mail that is both. ``emails ne "x"`` therefore means "has an e-mail other than x".
* ``meta.resourceType`` is a constant per table and folds to TRUE/FALSE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Engine,
    Integer,
    String,
    and_,
    bindparam,
    event,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from agent.scim.errors import ScimError
from agent.scim.filter import (
    ENTERPRISE_USER,
    SEAT_USER,
    And,
    AttrDef,
    Compare,
    Expr,
    Not,
    Or,
    ResourceType,
    ValuePath,
    resolve_attr,
)
from agent.storage.tables import group_members, groups, user_values, users

__all__ = [
    "LOOKUP_VALUE",
    "Lookup",
    "group_sort_column",
    "group_where",
    "user_lookup",
    "user_sort_column",
    "user_where",
]


# --------------------------------------------------------------------------------------------
# Portable helpers
# --------------------------------------------------------------------------------------------


class _StrPos(FunctionElement[int]):
    """1-based position of the second argument in the first (0 if absent), case-sensitive."""

    type = Integer()
    inherit_cache = True
    name = "strpos"


@compiles(_StrPos)
def _strpos_default(element: _StrPos, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


@compiles(_StrPos, "sqlite")
def _strpos_sqlite(element: _StrPos, compiler: SQLCompiler, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


class _Lexical(FunctionElement[str]):
    """Its argument, compared by code point: as is on SQLite (BINARY) and on a PostgreSQL
    database whose collation already is code point order (then its indexes serve range
    comparisons), ``COLLATE "C"`` on any other PostgreSQL database (exact, but no index)."""

    type = String()
    inherit_cache = True
    name = "lexical"


@compiles(_Lexical)
def _lexical_default(element: _Lexical, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)})"


@compiles(_Lexical, "postgresql")
def _lexical_pg(element: _Lexical, compiler: SQLCompiler, **kw: Any) -> str:
    if getattr(compiler.dialect, _CODE_POINT_ATTR, False):
        return f"({compiler.process(element.clauses, **kw)})"
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


_CODE_POINT_ATTR = "seat_agent_code_point_collation"
# libc collations that order by code point (PostgreSQL "Collation Support"; glibc C.UTF-8).
_CODE_POINT_COLLATIONS = frozenset({"c", "posix", "c.utf-8", "c.utf8"})


@event.listens_for(Engine, "engine_connect")
def _probe_collation(conn: Connection) -> None:
    """Once per PostgreSQL dialect (engine): is the database's default collation code point
    order? Only then may ``sw`` and ``gt``... compare the columns as they are, which lets the
    B-tree indexes (built in that collation) serve them."""
    dialect = conn.dialect
    if dialect.name != "postgresql" or hasattr(dialect, _CODE_POINT_ATTR):
        return
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        cursor.execute("SELECT to_jsonb(d) FROM pg_database d WHERE d.datname = current_database()")
        row = cursor.fetchone()
    finally:
        cursor.close()
        raw.rollback()
    info = row[0] if row else {}
    provider = info.get("datlocprovider", "c")  # PostgreSQL 15+: "c" libc, "i" ICU
    collate = str(info.get("datcollate") or "").lower()
    setattr(dialect, _CODE_POINT_ATTR, provider == "c" and collate in _CODE_POINT_COLLATIONS)


def _prefix_successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (code point
    order), or None when there is none (the prefix is all U+10FFFF)."""
    trimmed = prefix.rstrip("\U0010ffff")
    if not trimmed:
        return None
    following = ord(trimmed[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are not characters: no string holds one
        following = 0xE000
    return trimmed[:-1] + chr(following)


def _starts_with_range(col: Any, prefix: str) -> ColumnElement[bool]:
    """``col`` starts with ``prefix`` as a range, ``col >= prefix AND col < successor``, which
    an index on ``col`` serves (a LIKE 'x%' does not: SQLite's LIKE ignores case and so cannot
    use a BINARY index, and PostgreSQL needs C collation or pattern_ops for it). Exact for
    every string: both bounds compare by code point (_Lexical)."""
    if prefix == "":
        return true()
    upper = _prefix_successor(prefix)
    lower_bound: ColumnElement[bool] = _Lexical(col) >= prefix
    if upper is None:
        return lower_bound
    return and_(lower_bound, _Lexical(col) < upper)


# --------------------------------------------------------------------------------------------
# Attribute -> column maps (canonical AttrDef.path -> (column, already lowered))
# --------------------------------------------------------------------------------------------

_ENT = ENTERPRISE_USER
_SEAT = SEAT_USER

_Target = tuple[Any, bool]

_USER_COLUMNS: dict[str, _Target] = {
    "id": (users.c.id, False),
    "externalId": (users.c.external_id, False),
    "userName": (users.c.user_name_ci, True),
    "displayName": (users.c.display_name, False),
    "nickName": (users.c.nick_name, False),
    "title": (users.c.title, False),
    "userType": (users.c.user_type, False),
    "locale": (users.c.locale, False),
    "timezone": (users.c.timezone, False),
    "preferredLanguage": (users.c.preferred_language, False),
    "profileUrl": (users.c.profile_url, False),
    "name.givenName": (users.c.given_name, False),
    "name.familyName": (users.c.family_name, False),
    "name.formatted": (users.c.formatted_name, False),
    "active": (users.c.active, False),
    "meta.created": (users.c.created, False),
    "meta.lastModified": (users.c.last_modified, False),
    f"{_ENT}:employeeNumber": (users.c.employee_number, False),
    f"{_ENT}:department": (users.c.department, False),
    f"{_ENT}:organization": (users.c.organization, False),
    f"{_ENT}:division": (users.c.division, False),
    f"{_ENT}:costCenter": (users.c.cost_center, False),
    f"{_ENT}:manager.value": (users.c.manager_id, False),
    f"{_SEAT}:licenseState": (users.c.license_state, False),
    f"{_SEAT}:appStatus": (users.c.app_status, False),
}

_GROUP_COLUMNS: dict[str, _Target] = {
    "id": (groups.c.id, False),
    "externalId": (groups.c.external_id, False),
    "displayName": (groups.c.display_name_ci, True),
    "meta.created": (groups.c.created, False),
    "meta.lastModified": (groups.c.last_modified, False),
}

_USER_VALUE_COLUMNS: dict[str, _Target] = {
    "value": (user_values.c.value_ci, True),
    "type": (user_values.c.type, False),
    "primary": (user_values.c.is_primary, False),
}

_USER_GROUP_COLUMNS: dict[str, _Target] = {
    "value": (group_members.c.group_id, False),
    "display": (groups.c.display_name_ci, True),
}

_MEMBER_COLUMNS: dict[str, _Target] = {"value": (group_members.c.user_id, False)}

_RESOURCE_TYPE = "meta.resourceType"


def _invalid(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidFilter")


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------


def _constant(attr: AttrDef, op: str, value: Any, const: str) -> ColumnElement[bool]:
    """A comparison on a per-table constant (``meta.resourceType``), folded in Python."""
    if op == "pr":
        return true()
    a, b = (const, str(value)) if attr.case_exact else (const.lower(), str(value).lower())
    result = {
        "eq": a == b,
        "ne": a != b,
        "co": b in a,
        "sw": a.startswith(b),
        "ew": a.endswith(b),
        "gt": a > b,
        "ge": a >= b,
        "lt": a < b,
        "le": a <= b,
    }[op]
    return true() if result else false()


def _compare(attr: AttrDef, op: str, value: Any, target: _Target) -> ColumnElement[bool]:
    """One attrExp (RFC 7644 §3.4.2.2) on one column, two-valued (never NULL)."""
    col, lowered = target
    nullable = bool(getattr(col, "nullable", True))

    if op == "pr":
        present: ColumnElement[bool] = col.is_not(None) if nullable else true()
        if attr.type in ("string", "reference"):
            present = and_(present, col != "")
        return present

    if attr.type == "boolean":
        if op not in ("eq", "ne") or not isinstance(value, bool):
            raise _invalid(f"Operator '{op}' is not allowed on boolean attribute '{attr.path}'")
        # IS / IS NOT: bound as a real boolean and never NULL.
        return col.is_(value) if op == "eq" else col.is_not(value)

    cmp: ColumnElement[bool]
    if attr.type == "dateTime":
        if op in ("co", "sw", "ew"):
            raise _invalid(f"Operator '{op}' is not allowed on dateTime attribute '{attr.path}'")
        cmp = {
            "eq": col.__eq__,
            "ne": col.__ne__,
            "gt": col.__gt__,
            "ge": col.__ge__,
            "lt": col.__lt__,
            "le": col.__le__,
        }[op](value)
    else:
        if not isinstance(value, str):
            raise _invalid(f"Attribute '{attr.path}' must be compared with a string")
        exact = attr.case_exact
        v = value if exact else value.lower()
        lhs = _string_side(attr, target)
        if op == "eq":
            cmp = lhs == v
        elif op == "ne":
            cmp = lhs != v
        elif op == "co":
            cmp = _StrPos(lhs, v) > 0 if exact else lhs.contains(v, autoescape=True)
        elif op == "sw" and lowered:
            cmp = _starts_with_range(col, v)
        elif op == "sw":
            cmp = func.substr(lhs, 1, len(v)) == v if exact else lhs.startswith(v, autoescape=True)
        elif op == "ew":
            if exact:
                cmp = func.substr(lhs, func.length(lhs) - len(v) + 1) == v
            else:
                cmp = lhs.endswith(v, autoescape=True)
        else:
            lex = _Lexical(lhs)
            cmp = {"gt": lex.__gt__, "ge": lex.__ge__, "lt": lex.__lt__, "le": lex.__le__}[op](v)

    return _two_valued(col, op, cmp)


def _string_side(attr: AttrDef, target: _Target) -> Any:
    """The column side of a string comparison: the column itself when the attribute is case
    exact or the column holds a lowered copy, else ``lower(column)``."""
    col, lowered = target
    return col if attr.case_exact or lowered else func.lower(col)


def _two_valued(col: Any, op: str, cmp: ColumnElement[bool]) -> ColumnElement[bool]:
    """``cmp`` never NULL: on a nullable column ``ne`` also matches an absent value and every
    other operator never does."""
    if not bool(getattr(col, "nullable", True)):
        return cmp
    if op == "ne":
        return or_(col.is_(None), cmp)
    return and_(col.is_not(None), cmp)


# --------------------------------------------------------------------------------------------
# Tree -> SQL
# --------------------------------------------------------------------------------------------


def _sub_targets(resource_type: ResourceType, parent: str) -> dict[str, _Target]:
    if resource_type == "Group":
        return _MEMBER_COLUMNS
    if parent == "groups":
        return _USER_GROUP_COLUMNS
    return _USER_VALUE_COLUMNS


def _exists(resource_type: ResourceType, parent: str, cond: ColumnElement[bool]) -> Any:
    """Some value of ``parent`` satisfies ``cond`` (all on one row), as ``id IN (subquery)``.

    Not a correlated EXISTS: SQLite runs that once per user (a full scan at 100k users), while
    an uncorrelated IN uses the (attr, value) index and then the primary key. Exact under
    ``not``: the subquery's ids are never NULL.
    """
    if resource_type == "Group":
        if parent != "members":
            raise _invalid(f"Unknown or unfilterable attribute '{parent}' in filter")
        return groups.c.id.in_(select(group_members.c.group_id).where(cond))
    if parent == "groups":
        return users.c.id.in_(
            select(group_members.c.user_id)
            .select_from(group_members.join(groups, groups.c.id == group_members.c.group_id))
            .where(cond)
        )
    return users.c.id.in_(select(user_values.c.user_id).where(user_values.c.attr == parent, cond))


def _to_sql(expr: Expr, resource_type: ResourceType, scope: str | None) -> ColumnElement[bool]:
    if isinstance(expr, And):
        return and_(
            _to_sql(expr.left, resource_type, scope), _to_sql(expr.right, resource_type, scope)
        )
    if isinstance(expr, Or):
        return or_(
            _to_sql(expr.left, resource_type, scope), _to_sql(expr.right, resource_type, scope)
        )
    if isinstance(expr, Not):
        return not_(_to_sql(expr.expr, resource_type, scope))
    if isinstance(expr, ValuePath):
        if scope is not None:
            raise _invalid("Nested value paths are not allowed in a filter")
        return _exists(resource_type, expr.parent, _to_sql(expr.expr, resource_type, expr.parent))
    if isinstance(expr, Compare):
        attr = expr.attr
        if scope is None and attr.multi_parent is not None:
            # A bare comparison on a multi-valued sub-attribute: any one value.
            return _to_sql(ValuePath(attr.multi_parent, expr), resource_type, None)
        if scope is not None:
            sub = attr.sub_attr
            targets = _sub_targets(resource_type, scope)
            if attr.multi_parent != scope or sub is None or sub not in targets:
                raise _invalid(f"Unknown or unfilterable attribute '{attr.path}' in filter")
            return _compare(attr, expr.op, expr.value, targets[sub])
        if attr.path == _RESOURCE_TYPE:
            return _constant(attr, expr.op, expr.value, resource_type)
        columns = _USER_COLUMNS if resource_type == "User" else _GROUP_COLUMNS
        if attr.path not in columns:
            raise _invalid(f"Unknown or unfilterable attribute '{attr.path}' in filter")
        return _compare(attr, expr.op, expr.value, columns[attr.path])
    raise TypeError(f"not a filter expression: {expr!r}")


def user_where(expr: Expr) -> ColumnElement[bool]:
    """WHERE clause over ``users`` for a parsed User filter (RFC 7644 §3.4.2.2).

    Semantics (absent values, case, multi-valued attributes) are in the module docstring; in
    short ``ne`` also matches absent values and ``not (...)`` is exact negation.
    """
    return _to_sql(expr, "User", None)


# The bind parameter of a Lookup's WHERE clause.
LOOKUP_VALUE = "lookup_value"


@dataclass(frozen=True)
class Lookup:
    """A User filter of the shape IdPs send before every create and link: one ``eq`` on a
    singular string attribute held in a column of ``users`` (``userName eq "..."``,
    ``externalId eq "..."``, ``id eq "..."``).

    ``where`` is the clause :func:`user_where` gives for it, built once per attribute with the
    value as the bind parameter :data:`LOOKUP_VALUE`; ``value`` is what to bind (lowered for a
    case-insensitive attribute). Because the clause is shared, the statements around it can be
    built once too (``UserPages.lookup``): building and cache-keying a fresh statement
    tree cost more than the indexed probe it runs.
    """

    attribute: str
    where: ColumnElement[bool]
    value: str


_LOOKUP_WHERE: dict[str, ColumnElement[bool]] = {}


def user_lookup(expr: Expr) -> Lookup | None:
    """``expr`` as a :class:`Lookup`, or None when it has another shape."""
    if not isinstance(expr, Compare) or expr.op != "eq" or not isinstance(expr.value, str):
        return None
    attr = expr.attr
    target = _USER_COLUMNS.get(attr.path)
    if target is None or attr.multi_parent is not None or attr.type not in ("string", "reference"):
        return None
    where = _LOOKUP_WHERE.get(attr.path)
    if where is None:
        where = _LOOKUP_WHERE.setdefault(attr.path, _eq_template(attr, target))
    return Lookup(attr.path, where, expr.value if attr.case_exact else expr.value.lower())


def _eq_template(attr: AttrDef, target: _Target) -> ColumnElement[bool]:
    """What :func:`_compare` builds for ``attr eq <string>``, the value a bind parameter."""
    cmp = _string_side(attr, target) == bindparam(LOOKUP_VALUE, type_=String())
    return _two_valued(target[0], "eq", cmp)


def group_where(expr: Expr) -> ColumnElement[bool]:
    """WHERE clause over ``groups`` for a parsed Group filter (RFC 7644 §3.4.2.2)."""
    return _to_sql(expr, "Group", None)


def _sort_column(attr: str, resource_type: ResourceType) -> ColumnElement[Any]:
    try:
        d = resolve_attr(attr, resource_type, "invalidValue")
    except ScimError as exc:
        raise ScimError(400, f"Cannot sort by '{attr}': {exc.detail}", "invalidValue") from None
    if d.multi_parent is not None:
        raise ScimError(400, f"Cannot sort by multi-valued attribute '{attr}'", "invalidValue")
    table = users if resource_type == "User" else groups
    if d.path == _RESOURCE_TYPE:
        # The same for every row: no order; the insertion sequence keeps pages stable.
        return table.c.seq
    columns = _USER_COLUMNS if resource_type == "User" else _GROUP_COLUMNS
    col, lowered = columns[d.path]
    if d.type in ("string", "reference") and not d.case_exact and not lowered:
        return func.lower(col)
    return col  # type: ignore[no-any-return]


def user_sort_column(attr: str) -> ColumnElement[Any]:
    """ORDER BY expression for ``sortBy`` on Users (RFC 7644 §3.4.2.3).

    Case-insensitive strings sort by their lowered form ("sorted ... according to caseExact").
    Multi-valued or unknown attributes -> ``ScimError(400, ..., "invalidValue")``. RFC 7644
    §3.4.2.3 puts absent values last in ascending order: use ``.asc().nulls_last()`` /
    ``.desc().nulls_first()`` (SQLite orders NULL first by default, PostgreSQL last).
    """
    return _sort_column(attr, "User")


def group_sort_column(attr: str) -> ColumnElement[Any]:
    """ORDER BY expression for ``sortBy`` on Groups (RFC 7644 §3.4.2.3); see user_sort_column."""
    return _sort_column(attr, "Group")
