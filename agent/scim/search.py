"""Root-level search across resource types (RFC 7644 §3.4.3 ``POST /.search``), as pure functions.

RFC 7644 §3.4.2 lets a query at the server root return Users and Groups together; the filter is
evaluated per resource type. The rules here, all deliberate:

* **Filter**: a resource type whose schema does not know an attribute of the filter (or for which
  the filter is otherwise invalid) contributes no resources; only when the filter is invalid for
  *every* type is it a ``400 invalidFilter`` (the first type's error, User before Group).
* **Order without sortBy**: every matching User (in the /Users order), then every matching Group.
* **sortBy** (RFC 7644 §3.4.2.3): resolved per type; a type that lacks the attribute sorts as if
  the value were absent for all of its resources (last ascending, first descending). Unknown to
  every type (or multi-valued) -> ``400 invalidValue``. Values compare as the per-type SQL does:
  case-insensitive strings by their lower-cased form, code point order, instants for dateTime;
  ties keep Users before Groups.
* **Paging** is over the combined list. Merging two sorted streams needs the first
  ``startIndex + count - 1`` resources of each; beyond :data:`MAX_MERGE_WINDOW` that is
  ``400 tooMany`` (RFC 7644 §3.12: more than the server is willing to process), unless only one
  type has matches, which pages directly.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.scim.errors import ScimError
from agent.scim.filter import AttrDef, ResourceType, parse_datetime, parse_filter, resolve_attr

__all__ = [
    "MAX_MERGE_WINDOW",
    "RESOURCE_TYPES",
    "Slice",
    "filterable_types",
    "merge_sorted",
    "merge_window",
    "sort_attr",
    "sort_attrs",
    "sort_key",
    "unsorted_slices",
]

T = TypeVar("T")
RESOURCE_TYPES: tuple[ResourceType, ...] = ("User", "Group")
MAX_MERGE_WINDOW = 10_000


def filterable_types(filter_text: str | None) -> list[ResourceType]:
    """The resource types ``filter_text`` is valid for (all of them without a filter)."""
    if not filter_text:
        return list(RESOURCE_TYPES)
    valid: list[ResourceType] = []
    first_error: ScimError | None = None
    for resource_type in RESOURCE_TYPES:
        try:
            parse_filter(filter_text, resource_type)
        except ScimError as exc:
            first_error = first_error or exc
            continue
        valid.append(resource_type)
    if not valid:
        assert first_error is not None
        raise first_error
    return valid


def sort_attr(sort_by: str, resource_type: ResourceType) -> AttrDef | None:
    """The sortable attribute ``sort_by`` names in ``resource_type``, or None if it has none."""
    try:
        attr = resolve_attr(sort_by, resource_type, "invalidValue")
    except ScimError:
        return None
    return None if attr.multi_parent is not None else attr


def sort_attrs(sort_by: str, types: Iterable[ResourceType]) -> dict[ResourceType, AttrDef | None]:
    """``sort_attr`` per type; 400 invalidValue when no type can sort by ``sort_by``."""
    found = {t: sort_attr(sort_by, t) for t in RESOURCE_TYPES}
    if all(a is None for a in found.values()):
        raise ScimError(
            400, f"Cannot sort by '{sort_by}': no resource type has that attribute", "invalidValue"
        )
    return {t: found[t] for t in types}


def _lookup(resource: Mapping[str, Any], path: str) -> Any:
    container: Any = resource
    if path.startswith("urn:"):
        urn, _, path = path.rpartition(":")
        container = _get(resource, urn)
    for part in path.split("."):
        if not isinstance(container, Mapping):
            return None
        container = _get(container, part)
    return container


def _get(container: Mapping[str, Any], name: str) -> Any:
    lowered = name.lower()
    return next((v for k, v in container.items() if k.lower() == lowered), None)


def sort_key(resource: Mapping[str, Any], attr: AttrDef | None) -> tuple:
    """A key that orders rendered resources as ``sortBy`` orders rows (absent values last)."""
    value = None if attr is None else _lookup(resource, attr.path)
    if value is None:
        return (1, None)
    if attr is not None and attr.type == "dateTime" and isinstance(value, str):
        return (0, parse_datetime(value, attr.path))
    if isinstance(value, str) and attr is not None and not attr.case_exact:
        return (0, value.lower())
    return (0, value)


def merge_sorted(
    streams: Iterable[tuple[Sequence[tuple[T, Mapping[str, Any]]], AttrDef | None]],
    descending: bool,
) -> list[T]:
    """Merge per-type lists of ``(item, rendered resource)`` that are each already in
    ``sortBy`` order; returns the items. heapq.merge is stable: on equal keys the earlier
    stream (Users) comes first."""
    keyed = [
        [(sort_key(resource, attr), n, item) for n, (item, resource) in enumerate(items)]
        for items, attr in streams
    ]
    merged = heapq.merge(*keyed, key=lambda entry: entry[0], reverse=descending)
    return [item for _, _, item in merged]


@dataclass(frozen=True)
class Slice:
    """Take ``count`` resources of ``resource_type`` from 1-based ``start_index``."""

    resource_type: ResourceType
    start_index: int
    count: int


def unsorted_slices(
    totals: Mapping[ResourceType, int], start_index: int, count: int
) -> list[Slice]:
    """Which part of each type a page of the combined, unsorted list covers (types in order)."""
    slices = []
    offset = start_index - 1  # 0-based position in the combined list
    remaining = count
    for resource_type, total in totals.items():
        if remaining <= 0:
            break
        if offset >= total:
            offset -= total
            continue
        take = min(remaining, total - offset)
        slices.append(Slice(resource_type, offset + 1, take))
        remaining -= take
        offset = 0
    return slices


def merge_window(start_index: int, count: int) -> int:
    """How many resources of each type a sorted merge must read; 400 tooMany past the bound."""
    window = start_index - 1 + count
    if window > MAX_MERGE_WINDOW:
        raise ScimError(
            400,
            f"A sorted search across resource types can page through the first "
            f"{MAX_MERGE_WINDOW} results only; search /Users or /Groups instead",
            "tooMany",
        )
    return window
