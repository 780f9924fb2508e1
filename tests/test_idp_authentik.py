"""authentik's SCIM provider replayed over HTTP, request by request, from its source
(goauthentik/authentik ``authentik/providers/scim/clients/{base,users,groups,schema}.py``) and
the request bodies its own tests assert (``authentik/providers/scim/tests/test_membership.py``,
``test_group.py``), with the default property mappings of
``blueprints/system/providers-scim.yaml``.

What authentik does that Okta and Entra do not:

- it reads ``/ServiceProviderConfig`` first and validates it with pydantic; ``bulk`` must carry
  ``maxOperations`` (its ``Bulk`` model requires it), or it falls back to "no PATCH" and
  rewrites groups with PUT. ``maxOperations`` is also how many PATCH operations it puts in one
  request (0: all of them);
- users are created with empty strings (``"displayName": ""``, ``"givenName": ""``) and a
  ``" "`` family name, ``"emails": []``, and updated with PUT carrying the ``id``;
- older releases sent the JSON with ``data=``, so without any Content-Type;
- one ``add`` operation per member; removal by ``members[value eq "..."]`` (older releases:
  ``path: members`` with a value list); compatibility modes add ``"type": "user"`` (Webex) or
  replace the whole group with PUT (vCenter);
- a group rename is one no-path ``replace`` whose value is the whole group, ``schemas`` and
  ``id`` included, in a PatchOp body without ``schemas`` (``exclude_unset`` drops the default);
- discovery pages with ``startIndex`` alone, no ``count``, until ``totalResults`` are seen.
"""

from __future__ import annotations

import json

from conftest import SCIM_TOKEN

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# requests' json= (authentik's lib/utils/http.py session sets the User-Agent).
AUTHENTIK = {"User-Agent": "authentik@2025.10.0", "Content-Type": "application/json"}


def authentik_user(username: str, uid: str) -> dict:
    """POST /Users for a user with no name or email, as test_membership.py asserts it."""
    return {
        "schemas": [USER],
        "emails": [],
        "active": True,
        "externalId": uid,
        "name": {"familyName": " ", "formatted": " ", "givenName": ""},
        "displayName": "",
        "userName": username,
    }


def members(api, group_id: str) -> set[str]:
    with api.agent.store.read() as tx:
        return set(tx.groups.member_ids(group_id))


def create_user(api, username: str) -> str:
    r = api.scim("POST", "/Users", authentik_user(username, "a" * 64), AUTHENTIK)
    assert r.status_code == 201, r.get_json()
    return r.get_json()["id"]


def test_authentik_reads_a_config_its_pydantic_model_accepts(api):
    """clients/base.py get_service_provider_config: patch, filter and bulk.maxOperations."""
    r = api.scim("GET", "/ServiceProviderConfig", headers=AUTHENTIK)
    assert r.status_code == 200
    config = r.get_json()
    assert config["patch"]["supported"] is True
    assert config["filter"]["supported"] is True
    assert isinstance(config["bulk"]["maxOperations"], int)
    for section in ("changePassword", "sort"):
        assert isinstance(config[section]["supported"], bool)
    assert isinstance(config["authenticationSchemes"], list)


def test_authentik_user_lifecycle(api):
    # Create (clients/users.py create): json=, so Content-Type: application/json.
    body = authentik_user("jdoe", "8c5b3a5d" * 8)
    r = api.scim("POST", "/Users", body, AUTHENTIK)
    assert r.status_code == 201, r.get_json()
    created = r.get_json()
    uid = created["id"]
    assert uid  # authentik stops the sync on a missing or empty id
    assert created["userName"] == "jdoe"
    assert created["externalId"] == "8c5b3a5d" * 8
    assert created["active"] is True

    # Update (clients/users.py update): PUT with the id in the body, name and email now set.
    update = {
        **body,
        "id": uid,
        "name": {"formatted": "Jane Doe", "givenName": "Jane", "familyName": "Doe"},
        "displayName": "Jane Doe",
        "emails": [{"value": "jane@example.com", "type": "other", "primary": True}],
        "locale": "en",
    }
    r = api.scim("PUT", f"/Users/{uid}", update, AUTHENTIK)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["name"]["givenName"] == "Jane"
    assert r.get_json()["emails"][0]["value"] == "jane@example.com"
    with api.agent.store.read() as tx:
        assert tx.users.get(uid).resource["displayName"] == "Jane Doe"

    # Deactivated in authentik: the user mapping sends active false on the next PUT.
    r = api.scim("PUT", f"/Users/{uid}", {**update, "active": False}, AUTHENTIK)
    assert r.status_code == 200
    assert r.get_json()["active"] is False

    # Delete (clients/users.py delete): 204, then gone.
    r = api.scim("DELETE", f"/Users/{uid}", headers=AUTHENTIK)
    assert r.status_code == 204
    assert api.scim("GET", f"/Users/{uid}").status_code == 404


def test_authentik_before_json_kwarg_sent_no_content_type(api):
    """Older clients/user.py: ``data=scim_user.json(exclude_unset=True)``: no Content-Type."""
    body = json.dumps(authentik_user("legacy", "b" * 64))
    r = api.client.post(
        "/scim/v2/Users", data=body, headers={"Authorization": f"Bearer {SCIM_TOKEN}"}
    )
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["userName"] == "legacy"


def test_authentik_group_sync(api):
    u1, u2, u3 = (create_user(api, name) for name in ("u1", "u2", "u3"))

    # Create (clients/groups.py create): the members follow by PATCH.
    r = api.scim(
        "POST",
        "/Groups",
        {"schemas": [GROUP], "externalId": "42", "displayName": "engineering"},
        AUTHENTIK,
    )
    assert r.status_code == 201, r.get_json()
    gid = r.get_json()["id"]

    # After a 409 it looks the group up with Django's urlencode: spaces as '+'.
    r = api.scim("GET", "/Groups?filter=displayName+eq+%22engineering%22", headers=AUTHENTIK)
    assert r.status_code == 200
    assert [g["id"] for g in r.get_json()["Resources"]] == [gid]

    # _patch_add_users: one op per member, all in one request (maxOperations 0).
    add = {
        "schemas": [PATCH],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": u}]} for u in (u1, u2)],
    }
    assert api.scim("PATCH", f"/Groups/{gid}", add, AUTHENTIK).status_code in (200, 204)
    assert members(api, gid) == {u1, u2}

    # patch_compare_users reads the group and its members back.
    r = api.scim("GET", f"/Groups/{gid}", headers=AUTHENTIK)
    assert r.status_code == 200
    assert {m["value"] for m in r.get_json()["members"]} == {u1, u2}

    # Removal, as test_membership.py asserts it: a value filter path, no value.
    remove = {
        "schemas": [PATCH],
        "Operations": [{"op": "remove", "path": f'members[value eq "{u1}"]'}],
    }
    assert api.scim("PATCH", f"/Groups/{gid}", remove, AUTHENTIK).status_code in (200, 204)
    assert members(api, gid) == {u2}

    # Older releases: path "members" with the members to remove as the value.
    assert api.scim("PATCH", f"/Groups/{gid}", add, AUTHENTIK).status_code in (200, 204)
    old_remove = {
        "schemas": [PATCH],
        "Operations": [{"op": "remove", "path": "members", "value": [{"value": u2}]}],
    }
    assert api.scim("PATCH", f"/Groups/{gid}", old_remove, AUTHENTIK).status_code in (200, 204)
    assert members(api, gid) == {u1}

    # Webex compatibility mode: members carry "type": "user".
    webex = {
        "schemas": [PATCH],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": u3, "type": "user"}]}],
    }
    assert api.scim("PATCH", f"/Groups/{gid}", webex, AUTHENTIK).status_code in (200, 204)
    assert members(api, gid) == {u1, u3}

    # Rename (_update_patch_general): no schemas in the body, the whole group as the value.
    rename = {
        "Operations": [
            {
                "op": "replace",
                "value": {
                    "schemas": [GROUP],
                    "displayName": "engineering-renamed",
                    "externalId": "42",
                    "id": gid,
                },
            }
        ]
    }
    r = api.scim("PATCH", f"/Groups/{gid}", rename, AUTHENTIK)
    assert r.status_code in (200, 204), r.get_json()
    got = api.scim("GET", f"/Groups/{gid}").get_json()
    assert got["displayName"] == "engineering-renamed"
    assert got["id"] == gid
    assert got["externalId"] == "42"
    assert members(api, gid) == {u1, u3}

    # vCenter compatibility mode: PUT with the member list, then GET to compare.
    put = {
        "schemas": [GROUP],
        "id": gid,
        "externalId": "42",
        "displayName": "engineering-renamed",
        "members": [{"value": u2}],
    }
    r = api.scim("PUT", f"/Groups/{gid}", put, AUTHENTIK)
    assert r.status_code == 200
    assert members(api, gid) == {u2}
    r = api.scim("PUT", f"/Groups/{gid}", {**put, "members": []}, AUTHENTIK)
    assert r.status_code == 200
    assert members(api, gid) == set()

    # Delete (clients/groups.py delete).
    assert api.scim("DELETE", f"/Groups/{gid}", headers=AUTHENTIK).status_code == 204
    assert api.scim("GET", f"/Groups/{gid}").status_code == 404


def test_authentik_older_group_create_without_schemas(api):
    """test_group.py of older releases asserts a POST /Groups body with no ``schemas``."""
    r = api.scim("POST", "/Groups", {"externalId": "7", "displayName": "ops"}, AUTHENTIK)
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["displayName"] == "ops"


def test_authentik_discovery_pages_with_start_index_only(api):
    """clients/groups.py discover: GET /Groups, then ?startIndex=seen+1 until totalResults."""
    made = {
        api.scim("POST", "/Groups", {"schemas": [GROUP], "displayName": f"g{i}"}).get_json()["id"]
        for i in range(5)
    }
    res = api.scim("GET", "/Groups", headers=AUTHENTIK).get_json()
    seen: list[str] = []
    expected = int(res["totalResults"])
    for _ in range(10):
        seen.extend(g["id"] for g in res["Resources"])
        if len(seen) >= expected:
            break
        res = api.scim("GET", f"/Groups?startIndex={len(seen) + 1}", headers=AUTHENTIK).get_json()
    assert expected == 5
    assert set(seen) == made and len(seen) == 5
