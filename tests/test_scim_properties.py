"""Property-based tests (Hypothesis): whatever a client sends (bodies, PATCH operations,
filters, ids), the answer is a success or a 4xx with a SCIM (or admin JSON) error body, never
a 5xx, and a refused request changes nothing in the database. Run on SQLite and PostgreSQL.

Bounded and reproducible: a fixed number of examples, derandomized, no example database, so
the suite's run time and outcome do not vary from run to run.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from conftest import ADMIN_TOKEN, SCIM_TOKEN, bounded_examples
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from test_scim_protocol import ENTERPRISE, ERROR, GROUP, PATCH, SCIM_JSON, USER, create

from agent.storage.tables import metadata

BOUNDED = bounded_examples(100)

# -- strategies ----------------------------------------------------------------------------------

# The characters that have caused trouble, then anything Hypothesis likes.
_NASTY = ["\ud800", "\udfff", "\x00", "\x01", '"', "\\", "[", "]", "%", "_", "é", "😀", "\uffff"]
_chunk = st.one_of(
    st.sampled_from(_NASTY), st.text(max_size=6), st.sampled_from(["a@x.com", "work", " "])
)
texts = st.lists(_chunk, max_size=4).map("".join)

USER_NAMES = [
    "userName",
    "displayName",
    "nickName",
    "title",
    "active",
    "externalId",
    "locale",
    "profileUrl",
    "name",
    "emails",
    "phoneNumbers",
    "addresses",
    "roles",
    "groups",
    "password",
    "id",
    "meta",
    "schemas",
    ENTERPRISE,
]
SUB_NAMES = [
    "value",
    "type",
    "primary",
    "display",
    "$ref",
    "givenName",
    "familyName",
    "formatted",
    "streetAddress",
    "manager",
    "department",
    "displayName",
]


def _spellings(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper(), name.swapcase()])


attribute_names = st.sampled_from(USER_NAMES).flatmap(_spellings)
sub_names = st.sampled_from(SUB_NAMES).flatmap(_spellings)
keys = st.one_of(attribute_names, sub_names, texts)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.sampled_from(["True", "false", "work", "a@x.com"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)


def _user_with(where: str, text: Any) -> dict:
    """A valid User but for ``text`` at ``where``."""
    body: dict[str, Any] = {"schemas": [USER], "userName": "valid@example.com"}
    if where == "emails":
        body["emails"] = [{"value": text, "type": "work"}]
    elif where == "Emails":
        body["Emails"] = [{"Value": "a@x.com", "Type": text, "Primary": True}]
    elif where == "name":
        body["name"] = {"givenName": text}
    elif where == ENTERPRISE:
        body[ENTERPRISE] = {"department": text, "manager": {"value": text}}
    else:
        body[where] = text
    return body


valid_but_one = st.builds(
    _user_with,
    st.sampled_from(["userName", "displayName", "title", "emails", "Emails", "name", ENTERPRISE]),
    st.one_of(texts, scalars),
)
user_bodies = st.one_of(
    valid_but_one,
    valid_but_one,
    st.dictionaries(keys, json_values, max_size=6),
    st.fixed_dictionaries(
        {"userName": st.one_of(texts, scalars)},
        optional={
            "schemas": st.one_of(st.just([USER]), st.lists(texts, max_size=2), json_values),
            "emails": json_values,
            "name": json_values,
            "active": scalars,
            ENTERPRISE: json_values,
            "Emails": st.lists(st.dictionaries(sub_names, scalars, max_size=3), max_size=2),
        },
    ),
    json_values,
)
group_bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["displayName", "members", "externalId", "schemas"]).flatmap(_spellings),
        json_values,
        max_size=4,
    ),
    json_values,
)

_FILTER_OPERATORS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "EQ", "xx"]
_FILTER_ATTRIBUTES = [
    "userName",
    "emails",
    "emails.value",
    "emails.type",
    "emails.primary",
    "name.givenName",
    "active",
    "meta.lastModified",
    "members.value",
    "displayName",
    f"{ENTERPRISE}:department",
    "id",
    "fooBar",
]


def _quoted(text: str) -> str:
    """A filter string literal holding ``text``, escaped as JSON (surrogates as ``\\ud800``)."""
    return json.dumps(text)


filter_values = st.one_of(
    texts.map(_quoted),
    st.sampled_from(["true", "false", "null", "1", '"2026-01-01T00:00:00Z"', '"\\u0000"']),
    texts,
)
comparisons = st.builds(
    lambda attr, op, value: f"{attr} {op} {value}" if op.lower() != "pr" else f"{attr} pr",
    st.sampled_from(_FILTER_ATTRIBUTES).flatmap(_spellings),
    st.sampled_from(_FILTER_OPERATORS),
    filter_values,
)
lookups = st.builds(
    lambda attr, value: f"{attr} eq {value}",
    st.sampled_from(["userName", "displayName", "emails.value", "externalId"]),
    texts.map(_quoted),
)
filters = (
    lookups
    | lookups
    | st.recursive(
        comparisons,
        lambda inner: st.one_of(
            st.builds(lambda a, b: f"{a} and {b}", inner, inner),
            st.builds(lambda a, b: f"{a} or {b}", inner, inner),
            inner.map(lambda a: f"not ({a})"),
            inner.map(lambda a: f"({a})"),
            inner.map(lambda a: f"emails[{a}]"),
        ),
        max_leaves=5,
    )
    | texts
)

_PATH_TEMPLATES = [
    "{a}",
    "{a}.{s}",
    "{a}[{s} eq {v}]",
    "{a}[{s} eq {v}].{s}",
    f"{ENTERPRISE}:{{s}}",
    f"{ENTERPRISE}:manager.{{s}}",
    f"{ENTERPRISE}",
    "{t}",
]
paths = st.builds(
    lambda template, a, s, v, t: template.format(a=a, s=s, v=v, t=t),
    st.sampled_from(_PATH_TEMPLATES),
    attribute_names,
    sub_names,
    filter_values,
    texts,
)
operations = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(["add", "replace", "remove", "Add", "REPLACE"]), texts)},
    optional={"path": st.one_of(paths, scalars), "value": json_values},
)
string_patches = st.builds(
    lambda op, path, value: {
        "schemas": [PATCH],
        "Operations": [{"op": op, "path": path, "value": value}],
    },
    st.sampled_from(["add", "replace", "Replace"]),
    st.sampled_from(
        [
            "title",
            "displayName",
            "userName",
            "emails",
            'emails[type eq "work"].value',
            f"{ENTERPRISE}:department",
            "name.givenName",
        ]
    ),
    st.one_of(texts, texts.map(lambda t: [{"value": t, "Primary": True}])),
)
patch_bodies = st.one_of(
    string_patches,
    string_patches,
    st.fixed_dictionaries(
        {
            "schemas": st.just([PATCH]),
            "Operations": st.lists(operations, min_size=1, max_size=3),
        }
    ),
    json_values,
)
ids = st.one_of(texts, st.sampled_from(["%00", "..", ".search", "a/b", " "]))


# -- the property --------------------------------------------------------------------------------


def _state(api) -> dict[str, list[str]]:
    """Every row of every table, as text: a refused request must leave this unchanged."""
    with api.agent.store.read() as tx:
        return {
            table.name: sorted(repr(tuple(row)) for row in tx.conn.execute(select(table)))
            for table in metadata.sorted_tables
        }


def _send(api, method: str, path: str, body: Any = None, *, admin: bool = False):
    token = ADMIN_TOKEN if admin else SCIM_TOKEN
    kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}}
    if body is not None:
        # json.dumps writes a lone surrogate as the escape a client would send.
        kwargs["data"] = json.dumps(body)
        kwargs["content_type"] = "application/json" if admin else SCIM_JSON
    return api.client.open(path, method=method, **kwargs)


_known_state: dict[int, dict[str, list[str]]] = {}


def _assert_safe(api, method: str, path: str, body: Any = None, *, admin: bool = False):
    # The state after the last refused request is the state before this one: only a success
    # can have changed it, so only then is it read again.
    before = _known_state.pop(id(api), None) or _state(api)
    r = _send(api, method, path, body, admin=admin)
    assert r.status_code < 500, (method, path, body, r.get_data(as_text=True))
    if r.status_code >= 400:
        payload = r.get_json()
        if admin:
            assert isinstance(payload.get("error"), str) and payload["error"]
        else:
            assert payload["schemas"] == [ERROR]
            assert payload["status"] == str(r.status_code)
            assert isinstance(payload["detail"], str) and payload["detail"]
        assert _state(api) == before, (method, path, body, payload)
        _known_state[id(api)] = before
    return r


def _url_part(text: str) -> str:
    """``text`` percent-encoded as UTF-8; a lone surrogate as its (invalid) UTF-8 bytes."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@pytest.fixture
def seeded(api):
    user = create(api, "seed@example.com", emails=[{"value": "seed@x.com", "type": "work"}])
    group = api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "Seed"}).get_json()
    yield api, user["id"], group["id"]
    _known_state.pop(id(api), None)


@BOUNDED
@given(body=user_bodies)
def test_user_bodies_never_5xx(seeded, body):
    api, user_id, _ = seeded
    _assert_safe(api, "POST", "/scim/v2/Users", body)
    _assert_safe(api, "PUT", f"/scim/v2/Users/{user_id}", body)


@BOUNDED
@given(body=valid_but_one, patch=string_patches)
def test_any_text_in_a_valid_request_never_5xx(seeded, body, patch):
    """Valid requests but for one string: the text itself (a lone surrogate, U+0000) must
    not reach the database."""
    api, user_id, _ = seeded
    _assert_safe(api, "POST", "/scim/v2/Users", body)
    _assert_safe(api, "PATCH", f"/scim/v2/Users/{user_id}", patch)
    _assert_safe(api, "POST", "/scim/v2/.search", {"filter": f"title eq {_quoted(str(body))}"})


@BOUNDED
@given(body=group_bodies)
def test_group_bodies_never_5xx(seeded, body):
    api, _, group_id = seeded
    _assert_safe(api, "POST", "/scim/v2/Groups", body)
    _assert_safe(api, "PUT", f"/scim/v2/Groups/{group_id}", body)


@BOUNDED
@given(body=patch_bodies)
def test_patch_operations_never_5xx(seeded, body):
    api, user_id, group_id = seeded
    _assert_safe(api, "PATCH", f"/scim/v2/Users/{user_id}", body)
    _assert_safe(api, "PATCH", f"/scim/v2/Groups/{group_id}", body)


@BOUNDED
@given(
    text=filters,
    sort_by=st.one_of(st.none(), st.sampled_from(_FILTER_ATTRIBUTES).flatmap(_spellings), texts),
    attributes=st.one_of(st.none(), texts, st.lists(texts, max_size=2), json_values),
)
def test_filters_never_5xx(seeded, text, sort_by, attributes):
    api, _, _ = seeded
    search: dict[str, Any] = {"filter": text}
    if sort_by is not None:
        search["sortBy"] = sort_by
    if attributes is not None:
        search["attributes"] = attributes
    for path in ("/scim/v2/Users/.search", "/scim/v2/Groups/.search", "/scim/v2/.search"):
        _assert_safe(api, "POST", path, search)
    query = f"filter={_url_part(text)}"
    if isinstance(sort_by, str):
        query += f"&sortBy={_url_part(sort_by)}"
    _assert_safe(api, "GET", f"/scim/v2/Users?{query}")
    _assert_safe(api, "GET", f"/scim/v2/Groups?{query}")


@settings(BOUNDED, max_examples=60)
@given(resource_id=ids)
def test_ids_never_5xx(seeded, resource_id):
    api, _, _ = seeded
    part = _url_part(resource_id)
    patch = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}
    _assert_safe(api, "GET", f"/scim/v2/Users/{part}")
    _assert_safe(api, "PATCH", f"/scim/v2/Users/{part}", patch)
    _assert_safe(api, "DELETE", f"/scim/v2/Groups/{part}")
    _assert_safe(api, "POST", f"/admin/users/{part}/reevaluate", admin=True)


@BOUNDED
@given(body=json_values)
def test_admin_bodies_never_5xx(seeded, body):
    api, _, _ = seeded
    _assert_safe(api, "PUT", "/admin/licenses", body, admin=True)
    _assert_safe(api, "PUT", "/admin/licenses", {"seats": body}, admin=True)
