"""Attribute names resolved against the schemas this server publishes (RFC 7643 §2.1:
"Attribute names are case insensitive"; §3: schema URNs likewise).

Every place a client writes a name goes through here: request bodies at every depth
(attributes, sub-attributes of complex and multi-valued attributes, extension objects),
PATCH paths and their value filters, and the schema URNs of ``schemas`` and of extension keys.
The maps are built once, at import, from the very definitions ``/Schemas`` serves
(agent.scim.discovery), plus the common attributes of RFC 7643 §3.1 that no schema lists.
A name already in canonical case is one dict probe; any other spelling is two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.scim.discovery import attribute_definitions
from agent.scim.errors import ScimError
from agent.scim.urns import ENTERPRISE, GROUP_SCHEMA, SEAT_EXT, USER_SCHEMA

__all__ = [
    "GROUP",
    "USER",
    "Attribute",
    "ResourceNames",
    "SchemaNames",
    "canonical_keys",
    "for_resource",
]


def _lookup(names: Iterable[str]) -> dict[str, str]:
    """``name -> name`` and ``name.lower() -> name``: a canonical name is found in one probe."""
    table: dict[str, str] = {}
    for name in names:
        table[name.lower()] = name
        table[name] = name
    return table


def _find(table: Mapping[str, Any], name: str) -> Any:
    found = table.get(name)
    return found if found is not None else table.get(name.lower())


@dataclass(frozen=True)
class Attribute:
    """One attribute of a schema (RFC 7643 §7) and the canonical names of its sub-attributes."""

    name: str
    type: str
    multi_valued: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    subs: Mapping[str, str] = field(default_factory=dict)

    @property
    def complex(self) -> bool:
        return self.type == "complex"

    @property
    def stored(self) -> bool:
        """Whether a client's value is kept: readOnly ones are computed, writeOnly ones
        (``password``) are never stored (RFC 7643 §7)."""
        return self.mutability not in ("readOnly", "writeOnly")

    def sub(self, name: str) -> str | None:
        """The canonical spelling of sub-attribute ``name``; None if the schema has none."""
        found: str | None = _find(self.subs, name)
        return found


@dataclass(frozen=True)
class SchemaNames:
    """The attributes of one schema, by any spelling of their names."""

    urn: str
    attributes: Mapping[str, Attribute]
    #: Every spelling of an attribute name -> its canonical one (canonical names included).
    spelling: Mapping[str, str]

    def attribute(self, name: str) -> Attribute | None:
        found: Attribute | None = _find(self.attributes, name)
        return found

    def require(self, name: str) -> Attribute:
        """An attribute the code relies on; KeyError if the schema lost it."""
        found = self.attribute(name)
        if found is None:
            raise KeyError(name)
        return found

    def canonical(self, name: str) -> str | None:
        found = self.attribute(name)
        return found.name if found is not None else None


@dataclass(frozen=True)
class ResourceNames:
    """A resource type's core schema (with the common attributes, RFC 7643 §3.1) and its
    extensions (RFC 7643 §3.3)."""

    name: str
    core: SchemaNames
    extensions: Mapping[str, SchemaNames]
    _urns: Mapping[str, str]

    @property
    def body_keys(self) -> Mapping[str, str]:
        """The top-level keys of a resource body: core attributes and extension URNs."""
        return {**self.core.spelling, **self._urns}

    def urn(self, text: str) -> str | None:
        """The canonical spelling of a schema URN this resource type uses; None if unknown."""
        found: str | None = _find(self._urns, text)
        return found

    def schema(self, urn: str | None) -> SchemaNames | None:
        """Names of the core schema (``urn`` None or the core URN) or of a known extension."""
        if urn is None:
            return self.core
        canonical = self.urn(urn)
        if canonical is None:
            return None
        return self.core if canonical == self.core.urn else self.extensions[canonical]


def _attribute(definition: Mapping[str, Any]) -> Attribute:
    subs = [sub["name"] for sub in definition.get("subAttributes", ())]
    return Attribute(
        name=definition["name"],
        type=definition["type"],
        multi_valued=definition["multiValued"],
        mutability=definition["mutability"],
        returned=definition["returned"],
        subs=_lookup(subs),
    )


def _schema(urn: str, extra: Iterable[Attribute] = ()) -> SchemaNames:
    attributes = [*(_attribute(d) for d in attribute_definitions(urn)), *extra]
    table: dict[str, Attribute] = {}
    for attribute in attributes:
        table[attribute.name.lower()] = attribute
        table[attribute.name] = attribute
    return SchemaNames(urn, table, {key: attribute.name for key, attribute in table.items()})


_META_SUBS = ("resourceType", "created", "lastModified", "location", "version")
# RFC 7643 §3.1 common attributes, and "schemas" (§3): part of every resource, in no schema.
COMMON = (
    Attribute("id", "string", mutability="readOnly", returned="always"),
    Attribute("externalId", "string"),
    Attribute("meta", "complex", mutability="readOnly", subs=_lookup(_META_SUBS)),
    Attribute("schemas", "reference", multi_valued=True, mutability="readOnly"),
)
# An extension object may echo its own "schemas" (scim2-models does); it is not stored.
_EXTENSION_EXTRA = (Attribute("schemas", "reference", multi_valued=True, mutability="readOnly"),)


def _resource(name: str, core: str, extensions: Iterable[str]) -> ResourceNames:
    ext = {urn: _schema(urn, _EXTENSION_EXTRA) for urn in extensions}
    return ResourceNames(name, _schema(core, COMMON), ext, _lookup([core, *ext]))


USER = _resource("User", USER_SCHEMA, (ENTERPRISE, SEAT_EXT))
GROUP = _resource("Group", GROUP_SCHEMA, ())


def for_resource(name: str) -> ResourceNames:
    """``USER`` or ``GROUP`` by resource type name."""
    return USER if name == "User" else GROUP


def canonical_keys(
    obj: Mapping[str, Any], spelling: Mapping[str, str], where: str = ""
) -> Mapping[str, Any]:
    """``obj`` with each key spelled as ``spelling`` gives it (unknown keys as sent): one of
    the tables of this module (``Attribute.subs``, ``SchemaNames.spelling``,
    ``ResourceNames.body_keys``). An object whose keys are all canonical, the common case, is
    returned as it is, after one probe per key.

    Two keys that name the same attribute (``value`` and ``Value``) are ambiguous: RFC 8259
    §4 leaves duplicate names undefined and RFC 7643 §2.1 makes these duplicates, so the
    request is ``400 invalidSyntax`` rather than one spelling silently winning.
    """
    get = spelling.get
    for key in obj:
        if get(key) != key:
            break
    else:
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = key
        if isinstance(key, str):
            name = get(key) or get(key.lower()) or key
        if name in out:
            place = f"{where}.{name}" if where else name
            raise ScimError(
                400,
                f"Attribute '{place}' is given more than once (attribute names are "
                "case-insensitive); send it once",
                "invalidSyntax",
            )
        out[name] = value
    return out
