"""SCIM 2.0 PATCH (RFC 7644 §3.5.2) applied to resources held as plain JSON dicts.

Pure functions, standard library only. The web layer calls :func:`parse_patch_request` on the
body, then :func:`apply_user_patch` or :func:`apply_group_patch` on a copy of the stored
resource. Operations apply in order, each to the result of the previous one, and any
:class:`ScimError` aborts the whole request with the stored resource untouched: RFC 7644
§3.5.2 makes a PATCH request atomic.

Besides the RFC forms, the forms Okta and Microsoft Entra ID really send are accepted:
capitalised ``op`` values, ``"True"``/``"False"`` strings for booleans, dotted and full-URN keys
inside a no-path value object, value-filter paths that match nothing (an element is created),
the enterprise ``manager`` as a bare id, and Entra's ``remove`` of listed group members.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from agent.scim import names
from agent.scim.characters import describe, refusal
from agent.scim.errors import ScimError
from agent.scim.names import SchemaNames, canonical_keys
from agent.scim.resources import ENTERPRISE, GROUP_SCHEMA, NAME_PARTS, USER_SCHEMA

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CORE_USER = USER_SCHEMA
CORE_GROUP = GROUP_SCHEMA

OPERATIONS = ("add", "replace", "remove")


# --------------------------------------------------------------------------------------------
# Public API


@dataclass
class MemberDelta:
    """Membership changes of a Group PATCH, for a store that never loads the full member list.

    With ``remove_all`` the new member set is exactly ``add``; otherwise it is
    ``(current - remove) | add``. ``add`` and ``remove`` never share an id.
    """

    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    remove_all: bool = False


def parse_patch_request(body: object) -> list[dict]:
    """Validate the PatchOp envelope (RFC 7644 §3.5.2) and return normalised operations.

    Each operation becomes ``{"op": "add"|"replace"|"remove", "path": str|None, "value": ...}``.
    ``op`` and the member names are matched case-insensitively because Entra ID sends
    ``"Replace"``; paths are validated later, against the resource they address.
    """
    if not isinstance(body, dict):
        raise _syntax("The PATCH body must be a JSON object")
    _require_patch_schema(body)
    operations = _get_ignoring_case(body, "Operations")
    if not isinstance(operations, list) or not operations:
        raise _syntax("'Operations' must be a non-empty array (RFC 7644 §3.5.2)")
    return [_normalise_operation(operation) for operation in operations]


def apply_user_patch(resource: dict, operations: list[dict]) -> dict:
    """Apply ``operations`` (from :func:`parse_patch_request`) to a User, in order.

    Returns a new dict; ``resource`` is left untouched so a failing operation leaves nothing
    half-applied (RFC 7644 §3.5.2).
    """
    patched = copy.deepcopy(resource)
    for operation in copy.deepcopy(operations):
        _apply_operation(patched, USER, operation, delta=None)
    return patched


def apply_group_patch(resource: dict, operations: list[dict]) -> tuple[dict, MemberDelta]:
    """Apply ``operations`` to a Group whose members are not loaded.

    Operations on ``members`` (by path, value filter, or inside a no-path value object) are
    accumulated into a :class:`MemberDelta` instead of the dict, so a group with 100k members
    can be patched without reading them; other attributes are applied to the returned copy.
    """
    patched = copy.deepcopy(resource)
    delta = MemberDelta()
    for operation in copy.deepcopy(operations):
        _apply_operation(patched, GROUP, operation, delta=delta)
    return patched, delta


# --------------------------------------------------------------------------------------------
# Errors


def _syntax(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidSyntax")


def _invalid_path(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidPath")


def _invalid_filter(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidFilter")


def _invalid_value(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidValue")


def _no_target(detail: str) -> ScimError:
    return ScimError(400, detail, "noTarget")


# --------------------------------------------------------------------------------------------
# Envelope


def _require_patch_schema(body: dict) -> None:
    """RFC 7644 §3.5.2: the body MUST carry the PatchOp message schema. A body without
    ``schemas`` is taken as a PatchOp, as a resource without one is taken as its own type:
    authentik's group rename sends none (its PatchRequest is dumped with
    ``exclude_unset=True``, which drops the default; goauthentik/authentik
    ``providers/scim/clients/groups.py`` ``_update_patch_general``). One that names other
    schemas only is refused."""
    schemas = _get_ignoring_case(body, "schemas")
    if schemas is None:
        return
    if not isinstance(schemas, list) or not any(
        isinstance(s, str) and s.lower() == PATCH_OP.lower() for s in schemas
    ):
        raise _syntax(f"'schemas' must contain '{PATCH_OP}'")


def _normalise_operation(operation: object) -> dict:
    if not isinstance(operation, dict):
        raise _syntax("Each PATCH operation must be a JSON object")
    members = {key.lower(): value for key, value in operation.items() if isinstance(key, str)}
    op = members.get("op")
    if not isinstance(op, str) or op.lower() not in OPERATIONS:
        raise _syntax(f"Unknown PATCH op {op!r}; expected add, replace or remove")
    op = op.lower()
    path = members.get("path")
    if path is not None and not isinstance(path, str):
        raise _syntax("'path' must be a string")
    path = (path.strip() or None) if path is not None else None
    if op != "remove" and "value" not in members:
        raise _syntax(f"'{op}' requires a 'value' (RFC 7644 §3.5.2.1, §3.5.2.3)")
    if op == "remove" and path is None:
        raise _no_target("'remove' requires a 'path' (RFC 7644 §3.5.2.2)")
    return {"op": op, "path": path, "value": members.get("value")}


# --------------------------------------------------------------------------------------------
# Attribute vocabularies (RFC 7643 §4): canonical spelling and shape of known attributes


@dataclass(frozen=True)
class _Vocabulary:
    """Known attributes of one schema (agent.scim.names, built from the published schema);
    unknown ones get their shape from the data."""

    schema: SchemaNames | None = None

    def canonical(self, name: str) -> str | None:
        return self.schema.canonical(name) if self.schema is not None else None

    def kind(self, name: str) -> str | None:
        attribute = self.schema.attribute(name) if self.schema is not None else None
        if attribute is None or not attribute.stored:
            return None
        if attribute.multi_valued:
            return "multi"
        return "complex" if attribute.complex else "simple"

    def is_read_only(self, name: str) -> bool:
        """id, meta, schemas, groups (computed) and password (never stored): Okta sends
        ``groups: []`` and a placeholder password; neither is ours to store."""
        attribute = self.schema.attribute(name) if self.schema is not None else None
        return attribute is not None and not attribute.stored


@dataclass(frozen=True)
class _ResourceType:
    name: str
    core_urn: str
    core: _Vocabulary
    extensions: dict[str, _Vocabulary]


USER = _ResourceType(
    name="User",
    core_urn=CORE_USER,
    core=_Vocabulary(names.USER.core),
    # The seat-agent extension is read-only: left to sanitize_user like any foreign one.
    extensions={ENTERPRISE: _Vocabulary(names.USER.extensions[ENTERPRISE])},
)

GROUP = _ResourceType(
    name="Group",
    core_urn=CORE_GROUP,
    core=_Vocabulary(names.GROUP.core),
    extensions={},
)

_UNKNOWN_SCHEMA = _Vocabulary()
_STORED = [
    attribute
    for schema in (names.USER.core, names.USER.extensions[ENTERPRISE], names.GROUP.core)
    for attribute in schema.attributes.values()
    if attribute.stored
]
_OBJECT_ARRAYS = {a.name.lower() for a in _STORED if a.multi_valued and a.complex}
# Every sub-attribute name of a stored attribute, by any spelling: the same lower-case name
# has one spelling across the schemas, so one table serves value filters and elements alike.
_SUB_NAMES: dict[str, str] = {spelling: name for a in _STORED for spelling, name in a.subs.items()}
_SUB_ATTRIBUTES = tuple(sorted(set(_SUB_NAMES.values())))
_BOOLEAN_ATTRIBUTES = ("active", "primary")


def _sub_name(name: str) -> str | None:
    found = _SUB_NAMES.get(name)
    return found if found is not None else _SUB_NAMES.get(name.lower())


def _canonical_sub_attribute(name: str) -> str:
    return _sub_name(name) or name


def _existing_key(container: dict, name: str) -> str | None:
    """RFC 7643 §2.1: attribute names are case-insensitive, so match keys that way."""
    lowered = name.lower()
    return next((key for key in container if isinstance(key, str) and key.lower() == lowered), None)


def _get_ignoring_case(container: dict, name: str) -> Any:
    key = _existing_key(container, name)
    return container[key] if key is not None else None


def _as_boolean(attribute: str, value: Any) -> bool:
    """JSON booleans, or the "True"/"False" strings Entra ID sends (Entra SCIM known issues)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _invalid_value(f"'{attribute}' must be a boolean")


def _scalar(attribute: str, value: Any) -> Any:
    """Simple attributes and sub-attributes hold one scalar (RFC 7643 §2.3)."""
    if isinstance(value, (dict, list)):
        raise _invalid_value(f"'{attribute}' must be a single simple value")
    if attribute.lower() in _BOOLEAN_ATTRIBUTES:
        return _as_boolean(attribute, value)
    return value


# --------------------------------------------------------------------------------------------
# Value filters (RFC 7644 §3.4.2.2 grammar, restricted to one multi-valued attribute's elements)


class _Selector(Protocol):
    def matches(self, element: dict) -> bool: ...

    def seed(self) -> dict | None:
        """The element an add/replace creates when nothing matches; None if not derivable."""
        ...


@dataclass(frozen=True)
class _Comparison:
    attribute: str
    operator: str
    literal: Any

    def matches(self, element: dict) -> bool:
        return _compare(self.operator, _get_ignoring_case(element, self.attribute), self.literal)

    def seed(self) -> dict | None:
        if self.operator != "eq" or self.literal is None:
            return None
        return {_canonical_sub_attribute(self.attribute): self.literal}


@dataclass(frozen=True)
class _AllOf:
    parts: tuple[_Selector, ...]

    def matches(self, element: dict) -> bool:
        return all(part.matches(element) for part in self.parts)

    def seed(self) -> dict | None:
        seeds = [part.seed() for part in self.parts]
        if any(seed is None for seed in seeds):
            return None
        return {key: value for seed in seeds for key, value in (seed or {}).items()}


@dataclass(frozen=True)
class _AnyOf:
    parts: tuple[_Selector, ...]

    def matches(self, element: dict) -> bool:
        return any(part.matches(element) for part in self.parts)

    def seed(self) -> dict | None:
        return None


@dataclass(frozen=True)
class _Not:
    inner: _Selector

    def matches(self, element: dict) -> bool:
        return not self.inner.matches(element)

    def seed(self) -> dict | None:
        return None


@dataclass(frozen=True)
class _Everything:
    """``emails.value`` without a filter addresses every element (RFC 7644 §3.5.2.3)."""

    def matches(self, element: dict) -> bool:
        return True

    def seed(self) -> dict | None:
        return {}


_COMPARE_OPERATORS = ("eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le")
_FILTER_TOKEN = re.compile(
    r'\s*(?:(?P<paren>[()])|(?P<string>"(?:[^"\\]|\\.)*")|(?P<word>[^\s()"]+))'
)
_FILTER_ATTRIBUTE = re.compile(r"[A-Za-z$][\w$-]*")


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _loose_boolean(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _compare(operator: str, actual: Any, literal: Any) -> bool:
    """String comparisons ignore case: email types and addresses are caseExact=false."""
    if operator == "pr":
        return actual not in (None, "", [], {})
    if isinstance(literal, bool):
        actual = _loose_boolean(actual)
    elif isinstance(actual, bool):
        # Entra writes roles[primary eq "True"]: a quoted boolean against a stored boolean.
        literal = _loose_boolean(literal)
    left, right = _fold(actual), _fold(literal)
    if operator in ("eq", "ne"):
        return (left == right) == (operator == "eq")
    if left is None or right is None or isinstance(left, str) != isinstance(right, str):
        return False
    if operator in ("co", "sw", "ew"):
        if not isinstance(left, str):
            return False
        return {"co": right in left, "sw": left.startswith(right), "ew": left.endswith(right)}[
            operator
        ]
    try:
        return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[
            operator
        ]
    except TypeError:
        return False


def _tokenize_filter(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _FILTER_TOKEN.match(text, position)
        if match is None:
            raise _invalid_filter(f"Cannot read filter {text!r}")
        kind = match.lastgroup or "word"
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _FilterParser:
    """Recursive descent over: or-expr := and-expr ("or" and-expr)*; and-expr := unary
    ("and" unary)*; unary := "not" "(" or-expr ")" | "(" or-expr ")" | attr op [value]."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize_filter(text)
        self.position = 0

    def parse(self) -> _Selector:
        selector = self._or()
        if self.position != len(self.tokens):
            raise self._error()
        return selector

    def _error(self) -> ScimError:
        return _invalid_filter(f"Unsupported or malformed filter {self.text!r}")

    def _peek_word(self) -> str | None:
        if self.position < len(self.tokens) and self.tokens[self.position][0] == "word":
            return self.tokens[self.position][1].lower()
        return None

    def _take(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise self._error()
        token = self.tokens[self.position]
        self.position += 1
        return token

    def _expect_paren(self, paren: str) -> None:
        if self._take() != ("paren", paren):
            raise self._error()

    def _or(self) -> _Selector:
        parts = [self._and()]
        while self._peek_word() == "or":
            self.position += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _AnyOf(tuple(parts))

    def _and(self) -> _Selector:
        parts = [self._unary()]
        while self._peek_word() == "and":
            self.position += 1
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else _AllOf(tuple(parts))

    def _unary(self) -> _Selector:
        if self._peek_word() == "not":
            self.position += 1
            self._expect_paren("(")
            inner = self._or()
            self._expect_paren(")")
            return _Not(inner)
        kind, text = self._take()
        if (kind, text) == ("paren", "("):
            inner = self._or()
            self._expect_paren(")")
            return inner
        if kind != "word" or not _FILTER_ATTRIBUTE.fullmatch(text):
            raise self._error()
        return self._comparison(text)

    def _comparison(self, attribute: str) -> _Selector:
        kind, operator = self._take()
        operator = operator.lower()
        if kind != "word" or operator not in (*_COMPARE_OPERATORS, "pr"):
            raise self._error()
        if operator == "pr":
            return _Comparison(attribute, operator, None)
        return _Comparison(attribute, operator, self._literal())

    def _literal(self) -> Any:
        kind, text = self._take()
        if kind == "string":
            try:
                # strict=False: a control character the body carried escaped is one character.
                literal = json.loads(text, strict=False)
            except ValueError:
                raise self._error() from None
            reason = refusal(literal)
            if reason is not None:
                # An escape (``"\u0000"``) decodes to text a created element could not store.
                raise _invalid_value(
                    f"A value in filter '{describe(self.text)}' contains {reason}, which "
                    "cannot be stored; remove it"
                )
            return literal
        keywords = {"true": True, "false": False, "null": None}
        if kind == "word" and text.lower() in keywords:
            return keywords[text.lower()]
        try:
            number = json.loads(text) if kind == "word" else None
        except ValueError:
            number = None
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return number
        raise self._error()


def parse_value_filter(text: str) -> _Selector:
    """Parse the filter inside ``attr[...]`` (RFC 7644 §3.5.2 valuePath, §3.4.2.2 operators)."""
    return _FilterParser(text).parse()


# --------------------------------------------------------------------------------------------
# Paths (RFC 7644 §3.5.2: PATH = attrPath / valuePath [subAttr], attrPath = [URI ":"] ATTRNAME
# *1subAttr, valuePath = attrPath "[" valFilter "]")


@dataclass(frozen=True)
class AttributePath:
    """Where an operation lands: ``schema`` None means core; ``attribute`` None means the
    whole schema object (e.g. path ``urn:...:enterprise:2.0:User``)."""

    schema: str | None
    attribute: str | None
    value_filter: _Selector | None = None
    sub_attribute: str | None = None


_NAME = r"[A-Za-z$][\w$-]*"
_ATTR_PATH = re.compile(rf"(?P<attribute>{_NAME})(?:\.(?P<sub>{_NAME}))?")
_VALUE_PATH = re.compile(rf"(?P<attribute>{_NAME})\[(?P<filter>.*)\](?:\.(?P<sub>{_NAME}))?", re.S)


def parse_path(text: str, resource_type: _ResourceType, resource: dict) -> AttributePath:
    """Split a path into schema, attribute, value filter and sub-attribute."""
    schema, rest = _split_schema(text, resource_type, resource)
    if not rest:
        return AttributePath(schema, None)
    plain = _ATTR_PATH.fullmatch(rest)
    if plain:
        return AttributePath(schema, plain["attribute"], None, plain["sub"])
    filtered = _VALUE_PATH.fullmatch(rest)
    if filtered is None:
        raise _invalid_path(f"Malformed path {text!r}")
    selector = parse_value_filter(filtered["filter"])
    return AttributePath(schema, filtered["attribute"], selector, filtered["sub"])


def _split_schema(
    text: str, resource_type: _ResourceType, resource: dict
) -> tuple[str | None, str]:
    """A path may start with a schema URN (RFC 7644 §3.10); the core URN means top level.

    Known URNs are tried first, longest first, because URNs themselves contain ":". For an
    unknown URN the attribute is the text after the last ":" before any "[" -- unless that
    is the resource type name ("...:2.0:User"), which marks a whole extension object.
    """
    lowered = text.lower()
    if not lowered.startswith("urn:"):
        return None, text
    known = {resource_type.core_urn, *resource_type.extensions}
    known |= {key for key in resource if isinstance(key, str) and key.lower().startswith("urn:")}
    for urn in sorted(known, key=len, reverse=True):
        if lowered == urn.lower() or lowered.startswith(urn.lower() + ":"):
            return _core_as_none(urn, resource_type), text[len(urn) + 1 :]
    urn, _, attribute = text.split("[", 1)[0].rpartition(":")
    if attribute == resource_type.name:
        return text, ""
    return _core_as_none(urn, resource_type), text[len(urn) + 1 :]


def _core_as_none(urn: str, resource_type: _ResourceType) -> str | None:
    if urn.lower() == resource_type.core_urn.lower():
        return None
    canonical = next((ext for ext in resource_type.extensions if ext.lower() == urn.lower()), urn)
    return canonical


# --------------------------------------------------------------------------------------------
# Dispatch


def _apply_operation(
    resource: dict, resource_type: _ResourceType, operation: dict, delta: MemberDelta | None
) -> None:
    """A path-less add/replace is one operation per key of its value object (RFC 7644
    §3.5.2.1, §3.5.2.3); keys may themselves be paths, as Entra ID sends ``name.givenName``."""
    op, path, value = operation["op"].lower(), operation.get("path"), operation.get("value")
    if path is not None:
        _apply_path(resource, resource_type, op, path, value, delta)
        return
    if op == "remove":
        raise _no_target("'remove' requires a 'path' (RFC 7644 §3.5.2.2)")
    if not isinstance(value, dict):
        raise _invalid_value(f"'{op}' without a path needs an object value")
    for key, item in value.items():
        _apply_path(resource, resource_type, op, key, item, delta)


def _apply_path(
    resource: dict,
    resource_type: _ResourceType,
    op: str,
    path: str,
    value: Any,
    delta: MemberDelta | None,
) -> None:
    target = parse_path(path, resource_type, resource)
    if value is None and op != "remove":
        # RFC 7643 §2.5: null is "unassigned": replacing with it removes, adding it does nothing.
        if op == "add":
            return
        op = "remove"
    attribute = target.attribute
    if attribute is None:
        _apply_to_schema_object(resource, resource_type, op, target, value, delta)
        return
    target = _route_manager_alias(target, resource_type)
    if delta is not None and _targets_members(target):
        _record_members(delta, op, target, value)
        return
    _apply_attribute(resource, resource_type, op, target, attribute, value)


def _apply_attribute(
    resource: dict,
    resource_type: _ResourceType,
    op: str,
    target: AttributePath,
    attribute: str,
    value: Any,
) -> None:
    """Find the attribute's container and canonical key, then let its shape decide."""
    vocabulary = _vocabulary(resource_type, target.schema)
    if vocabulary.is_read_only(attribute):
        return  # IdPs echo id/meta/schemas/groups back; RFC 7643 §7 lets us ignore them
    _require_known(resource_type, target, attribute, vocabulary)
    container = _schema_container(resource, target.schema, create=op != "remove")
    if container is None:
        return
    key = _existing_key(container, attribute) or vocabulary.canonical(attribute) or attribute
    kind = _kind(vocabulary, target, container.get(key), value)
    _HANDLERS[kind](container, key, op, target, value)
    _drop_empty_extension(resource, target.schema)


_MANAGER_PARTS = ("value", "$ref", "displayName")


def _require_known(
    resource_type: _ResourceType, target: AttributePath, attribute: str, vocabulary: _Vocabulary
) -> None:
    """RFC 7644 §3.5.2: a path naming an attribute the schema does not define is ``400
    invalidPath``, for the core schema and the enterprise extension, whose attributes are all
    known (RFC 7643 §4, §4.3). Attributes under other extension URNs (an IdP's custom schema,
    the read-only seat-agent extension) are not ours to validate and are left to
    ``sanitize_user``, which keeps only what the server stores."""
    if target.schema is not None and target.schema not in resource_type.extensions:
        return
    if vocabulary.canonical(attribute) is None:
        raise _invalid_path(f"Unknown attribute '{_describe(target, attribute)}'")
    kind = vocabulary.kind(attribute)
    if kind == "multi" and target.value_filter is not None:
        for name in _filter_attributes(target.value_filter):
            if _sub_name(name) is None:
                raise _invalid_path(
                    f"Unknown attribute '{_describe(target, attribute)}.{name}' in value filter"
                )
    sub = target.sub_attribute
    if sub is None:
        return
    if target.schema == ENTERPRISE and attribute.lower() == "manager":
        allowed: tuple[str, ...] = _MANAGER_PARTS
    elif kind == "complex":
        allowed = NAME_PARTS
    elif kind == "multi":
        allowed = _SUB_ATTRIBUTES
    else:
        allowed = ()
    if not any(sub.lower() == known.lower() for known in allowed):
        raise _invalid_path(f"Unknown attribute '{_describe(target, attribute)}.{sub}'")


def _filter_attributes(selector: _Selector) -> list[str]:
    if isinstance(selector, _Comparison):
        return [selector.attribute]
    if isinstance(selector, _AllOf | _AnyOf):
        return [name for part in selector.parts for name in _filter_attributes(part)]
    if isinstance(selector, _Not):
        return _filter_attributes(selector.inner)
    return []


def _describe(target: AttributePath, attribute: str) -> str:
    return f"{target.schema}:{attribute}" if target.schema else attribute


def _apply_to_schema_object(
    resource: dict,
    resource_type: _ResourceType,
    op: str,
    target: AttributePath,
    value: Any,
    delta: MemberDelta | None,
) -> None:
    """A path naming a whole schema (``urn:...:enterprise:2.0:User``) addresses its attributes:
    add/replace merge the object key by key; remove drops the extension."""
    if op == "remove":
        if target.schema is None:
            raise _invalid_path("The core schema itself cannot be removed")
        key = _existing_key(resource, target.schema)
        if key is not None:
            del resource[key]
            _undeclare_schema(resource, target.schema)
        return
    if not isinstance(value, dict):
        raise _invalid_value(f"'{target.schema or resource_type.core_urn}' needs an object value")
    prefix = f"{target.schema}:" if target.schema else ""
    for key, item in value.items():
        _apply_path(resource, resource_type, op, prefix + key, item, delta)


def _route_manager_alias(target: AttributePath, resource_type: _ResourceType) -> AttributePath:
    """Some IdP mappings send ``manager`` without the enterprise URN; there is no core one."""
    if (
        ENTERPRISE in resource_type.extensions
        and target.schema is None
        and target.attribute
        and target.attribute.lower() == "manager"
    ):
        return replace(target, schema=ENTERPRISE)
    return target


def _vocabulary(resource_type: _ResourceType, schema: str | None) -> _Vocabulary:
    if schema is None:
        return resource_type.core
    return resource_type.extensions.get(schema, _UNKNOWN_SCHEMA)


def _kind(vocabulary: _Vocabulary, target: AttributePath, existing: Any, value: Any) -> str:
    """Known attributes have a fixed shape (RFC 7643 §4); unknown ones take it from the data."""
    assert target.attribute is not None
    if target.schema == ENTERPRISE and target.attribute.lower() == "manager":
        return "manager"
    known = vocabulary.kind(target.attribute)
    if known:
        return known
    if target.value_filter is not None or isinstance(existing, list):
        return "multi"
    if isinstance(existing, dict):
        return "complex"
    if existing is None and isinstance(value, list):
        return "multi"
    if existing is None and isinstance(value, dict):
        return "complex"
    return "simple"


# --------------------------------------------------------------------------------------------
# Extension objects


def _schema_container(resource: dict, schema: str | None, create: bool) -> dict | None:
    """Core attributes live at top level; extension attributes under their URN (RFC 7643 §3)."""
    if schema is None:
        return resource
    key = _existing_key(resource, schema)
    if key is None:
        if not create:
            return None
        key = schema
        resource[key] = {}
        _declare_schema(resource, schema)
    if not isinstance(resource[key], dict):
        raise _invalid_value(f"'{schema}' must be an object")
    return resource[key]


def _declare_schema(resource: dict, schema: str) -> None:
    """RFC 7643 §3: "schemas" lists every schema the resource uses."""
    schemas = resource.get("schemas")
    if isinstance(schemas, list) and not any(
        isinstance(s, str) and s.lower() == schema.lower() for s in schemas
    ):
        schemas.append(schema)


def _undeclare_schema(resource: dict, schema: str) -> None:
    schemas = resource.get("schemas")
    if isinstance(schemas, list):
        schemas[:] = [
            s for s in schemas if not (isinstance(s, str) and s.lower() == schema.lower())
        ]


def _drop_empty_extension(resource: dict, schema: str | None) -> None:
    key = _existing_key(resource, schema) if schema else None
    if key is not None and resource[key] == {}:
        del resource[key]
        _undeclare_schema(resource, schema or key)


# --------------------------------------------------------------------------------------------
# Simple and complex attributes


def _patch_simple(container: dict, key: str, op: str, target: AttributePath, value: Any) -> None:
    if target.value_filter is not None or target.sub_attribute is not None:
        raise _invalid_path(f"'{key}' has no sub-attributes or values to filter")
    if op == "remove":
        container.pop(key, None)
        return
    container[key] = _scalar(key, value)


def _patch_complex(container: dict, key: str, op: str, target: AttributePath, value: Any) -> None:
    """RFC 7644 §3.5.2.1/§3.5.2.3: add and replace on a complex attribute merge sub-attributes;
    sub-attributes not mentioned are left unchanged."""
    if target.value_filter is not None:
        raise _invalid_path(f"'{key}' is not multi-valued; it cannot take a value filter")
    if op == "remove" and target.sub_attribute is None:
        container.pop(key, None)
        return
    if target.sub_attribute is not None:
        value = {target.sub_attribute: None if op == "remove" else value}
    elif not isinstance(value, dict):
        raise _invalid_value(f"'{key}' must be an object")
    parent = container.get(key)
    parent = dict(parent) if isinstance(parent, dict) else {}
    _merge_sub_attributes(parent, value)
    if parent:
        container[key] = parent
    else:
        container.pop(key, None)  # an empty complex attribute is an unassigned one


def _merge_sub_attributes(parent: dict, changes: dict) -> None:
    for name, sub_value in canonical_keys(changes, _SUB_NAMES).items():
        sub_key = _existing_key(parent, name) or _canonical_sub_attribute(name)
        if sub_value is None:
            parent.pop(sub_key, None)
        else:
            parent[sub_key] = _scalar(sub_key, sub_value)


def _patch_manager(container: dict, key: str, op: str, target: AttributePath, value: Any) -> None:
    """Enterprise ``manager`` (RFC 7643 §4.3) is stored as ``{"value": id}`` plus the
    ``displayName`` an IdP sends (as on POST), whatever the form: a bare id (Entra), an object,
    or a one-element list; an empty id removes it. ``$ref`` is derived from the id."""
    key = _existing_key(container, "manager") or "manager"
    if target.value_filter is not None:
        raise _invalid_path("'manager' is not multi-valued; it cannot take a value filter")
    current = container.get(key) if isinstance(container.get(key), dict) else None
    sub = target.sub_attribute.lower() if target.sub_attribute is not None else None
    if sub == "$ref":
        return  # derived from the id on output
    if sub == "displayname":
        if current is None:
            return  # a display name without a manager id names nobody
        name = None if op == "remove" else _manager_display_name(value)
        updated = {k: v for k, v in current.items() if k != "displayName"}
        if name:
            updated["displayName"] = name
        container[key] = updated
        return
    manager_id = None if op == "remove" else _manager_id(value)
    if not manager_id:
        container.pop(key, None)
        return
    if sub == "value":
        name = (current or {}).get("displayName")
    else:
        element = value[0] if isinstance(value, list) and value else value
        name = (
            _manager_display_name(_get_ignoring_case(element, "displayName"))
            if isinstance(element, dict)
            else None
        )
    container[key] = {"value": manager_id, **({"displayName": name} if name else {})}


def _manager_display_name(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value.strip() or None if value else None
    raise _invalid_value("'manager.displayName' must be a string")


def _manager_id(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = _get_ignoring_case(value, "value")
    if value is None or isinstance(value, str):
        return value.strip() if value else None
    raise _invalid_value("'manager' must be an id string or an object with a 'value'")


# --------------------------------------------------------------------------------------------
# Multi-valued attributes


def _patch_multi_valued(
    container: dict, key: str, op: str, target: AttributePath, value: Any
) -> None:
    existing = container.get(key)
    items = list(existing) if isinstance(existing, list) else [existing]
    items = [item for item in items if item is not None]
    if target.value_filter is None and target.sub_attribute is None:
        items = _patch_whole_list(items, key, op, value)
    elif op == "remove":
        items = _remove_selected(items, target.value_filter or _Everything(), target.sub_attribute)
    else:
        selector = target.value_filter or _Everything()
        _write_selected(items, key, op, selector, target.sub_attribute, value)
    if items:
        container[key] = items
    else:
        container.pop(key, None)  # RFC 7643 §2.5: an empty array is unassigned


def _patch_whole_list(items: list, key: str, op: str, value: Any) -> list:
    """No filter: add appends new values (RFC 7644 §3.5.2.1), replace swaps the whole set
    (§3.5.2.3), remove drops everything (§3.5.2.2) or, when a value lists elements as Entra
    ID does, just those."""
    if op == "remove":
        if value is None:
            return []
        unwanted = _elements(key, value)
        return [item for item in items if not any(_contains(item, u) for u in unwanted)]
    new = _elements(key, value)
    if op == "replace":
        items = []
    written = []
    for element in new:
        if element not in items:
            items.append(element)
            written.append(element)
    _keep_single_primary(items, written)
    return items


def _elements(key: str, value: Any) -> list:
    """Normalise a multi-valued attribute's value to a list. The standard ones hold objects
    (RFC 7643 §4.1.2); unknown extension attributes may be arrays of strings (Okta custom
    "string array" attributes)."""
    values = value if isinstance(value, list) else [value]
    if key.lower() in _OBJECT_ARRAYS:
        if isinstance(value, list):
            # As on POST (resources._multi): Okta's "string array" roles, ["Member", "Viewer"],
            # are values given by their "value" alone.
            values = [{"value": e} if isinstance(e, str) else e for e in values]
        if not all(isinstance(e, dict) for e in values):
            raise _invalid_value(
                f"'{key}' takes an object, an array of objects or an array of strings"
            )
    if any(isinstance(e, list) for e in values):
        raise _invalid_value(f"'{key}' cannot hold nested arrays")
    return [_normalise_element(e, key) if isinstance(e, dict) else e for e in values]


def _normalise_element(element: dict, key: str) -> dict:
    """One value of a multi-valued attribute: sub-attribute names in the schema's spelling
    (RFC 7643 §2.1), ``primary`` a boolean."""
    return {
        name: _as_boolean(name, item) if name == "primary" else item
        for name, item in canonical_keys(element, _SUB_NAMES, key).items()
    }


def _contains(item: Any, wanted: Any) -> bool:
    """Whether ``item`` has every non-null sub-attribute of ``wanted`` (Entra sends
    ``{"$ref": null, "value": id}`` to name the element it removes)."""
    if not isinstance(wanted, dict):
        return _compare("eq", item, wanted)
    pairs = [(name, v) for name, v in wanted.items() if v is not None]
    return (
        isinstance(item, dict)
        and bool(pairs)
        and all(_compare("eq", _get_ignoring_case(item, name), v) for name, v in pairs)
    )


def _remove_selected(items: list, selector: _Selector, sub_attribute: str | None) -> list:
    """RFC 7644 §3.5.2.2: remove the matching elements, or one sub-attribute of each."""
    if sub_attribute is None:
        return [item for item in items if not (isinstance(item, dict) and selector.matches(item))]
    kept = []
    for item in items:
        if isinstance(item, dict) and selector.matches(item):
            item = {k: v for k, v in item.items() if k.lower() != sub_attribute.lower()}
        if item != {}:
            kept.append(item)
    return kept


def _write_selected(
    items: list, key: str, op: str, selector: _Selector, sub_attribute: str | None, value: Any
) -> None:
    """RFC 7644 §3.5.2.3 replaces the matching elements (or a sub-attribute of each). When
    nothing matches, the RFC says noTarget, but Okta and Entra ID use
    ``emails[type eq "work"].value`` to create the work email, so an element is created from
    the filter's ``eq`` terms; filters without such terms still fail with noTarget."""
    matches = [item for item in items if isinstance(item, dict) and selector.matches(item)]
    if sub_attribute is not None:
        sub_value = _scalar(sub_attribute, value)
        targets = matches or [_new_element(items, key, selector, {})]
        for element in targets:
            element_key = _existing_key(element, sub_attribute)
            element[element_key or _canonical_sub_attribute(sub_attribute)] = sub_value
        _keep_single_primary(items, targets)
        return
    if not isinstance(value, dict):
        raise _invalid_value(f"'{key}[...]' takes an object value")
    element_value = _normalise_element(value, key)
    if not matches:
        if op == "add" and selector.seed() is None:
            items.append(element_value)
            matches = [element_value]
        else:
            matches = [_new_element(items, key, selector, element_value)]
    elif op == "add":
        for element in matches:
            for name, item in element_value.items():
                element[_existing_key(element, name) or name] = item
    else:
        matches = [_replace_element(items, element, selector, element_value) for element in matches]
    _keep_single_primary(items, matches)


def _new_element(items: list, key: str, selector: _Selector, value: dict) -> dict:
    seed = selector.seed()
    if seed is None:
        raise _no_target(f"No '{key}' value matches the filter and none can be created from it")
    element = {**seed, **value}
    items.append(element)
    return element


def _replace_element(items: list, element: dict, selector: _Selector, value: dict) -> dict:
    """The filter's ``eq`` terms survive unless the value overrides them, so replacing
    ``emails[type eq "work"]`` with ``{"value": ...}`` keeps it a work email."""
    replacement = {**(selector.seed() or {}), **value}
    items[next(i for i, item in enumerate(items) if item is element)] = replacement
    return replacement


def _keep_single_primary(items: list, written: Iterable[Any]) -> None:
    """RFC 7644 §3.5.2: setting one value's primary to true sets it to false on the others."""
    chosen = [e for e in written if isinstance(e, dict) and _get_ignoring_case(e, "primary")]
    if not chosen:
        return
    for item in items:
        if item is not chosen[-1] and isinstance(item, dict):
            primary_key = _existing_key(item, "primary")
            if primary_key and item[primary_key] is True:
                item[primary_key] = False


_HANDLERS = {
    "simple": _patch_simple,
    "complex": _patch_complex,
    "manager": _patch_manager,
    "multi": _patch_multi_valued,
}


# --------------------------------------------------------------------------------------------
# Group members


def _targets_members(target: AttributePath) -> bool:
    return (
        target.schema is None
        and target.attribute is not None
        and target.attribute.lower() == "members"
    )


def _record_members(delta: MemberDelta, op: str, target: AttributePath, value: Any) -> None:
    """Translate a members operation into set changes (RFC 7644 §3.5.2; Okta group push;
    Entra ID's remove-with-value, which removes only the listed members)."""
    if target.sub_attribute is not None:
        raise _invalid_path("Member sub-attributes cannot be patched; add or remove the member")
    filtered = _member_ids_from_filter(target.value_filter) if target.value_filter else None
    if op == "add":
        _include(delta, _member_ids(value))
    elif op == "remove" and filtered is not None:
        _exclude(delta, filtered)
    elif op == "remove" and value is not None:
        _exclude(delta, _member_ids(value))
    elif op == "remove":
        _reset(delta, [])
    elif filtered is not None:
        _exclude(delta, filtered)
        _include(delta, _member_ids(value))
    else:
        _reset(delta, _member_ids(value))


def _member_ids(value: Any) -> list[str]:
    """Members arrive as ``[{"value": id, "display": ...}]``, a single object, or bare ids."""
    ids: list[str] = []
    for element in value if isinstance(value, list) else [value]:
        member_id = _get_ignoring_case(element, "value") if isinstance(element, dict) else element
        if not isinstance(member_id, str) or not member_id.strip():
            raise _invalid_value("Each member needs a non-empty string 'value'")
        if member_id.strip() not in ids:
            ids.append(member_id.strip())
    return ids


def _member_ids_from_filter(selector: _Selector) -> list[str]:
    """Without the member list only ``value eq "id"`` terms joined by ``or`` can be honoured."""
    if isinstance(selector, _AnyOf):
        return [i for part in selector.parts for i in _member_ids_from_filter(part)]
    if (
        isinstance(selector, _Comparison)
        and selector.attribute.lower() == "value"
        and selector.operator == "eq"
        and isinstance(selector.literal, str)
    ):
        return [selector.literal]
    raise _invalid_filter('Member filters must be value eq "id", optionally joined by or')


def _include(delta: MemberDelta, ids: list[str]) -> None:
    for member_id in ids:
        if member_id in delta.remove:
            delta.remove.remove(member_id)
        if member_id not in delta.add:
            delta.add.append(member_id)


def _exclude(delta: MemberDelta, ids: list[str]) -> None:
    for member_id in ids:
        if member_id in delta.add:
            delta.add.remove(member_id)
        if not delta.remove_all and member_id not in delta.remove:
            delta.remove.append(member_id)


def _reset(delta: MemberDelta, ids: list[str]) -> None:
    delta.remove_all = True
    delta.remove = []
    delta.add = []
    _include(delta, ids)
