"""PingOne's and PingFederate's SCIM provisioner replayed over HTTP.

Sources (docs.pingidentity.com):

- "SCIM filter expressions" (PingOne): the provisioner finds an existing user with a filter
  the admin may override; the documented examples are ``username Eq "%s"`` and
  ``email Co "%s"``, ``%s`` being the user identifier (``userName`` or ``workEmail``).
- "SCIM provisioner settings reference" (PingFederate): the default filters are
  ``userName eq <userName_value>`` and, for ``workEmail``, ``emails eq <workEmail_value>``.
- "SCIM provisioning features" (PingOne): create, update, disable and delete; "provision
  disabled user accounts"; configurable deprovisioning actions (disable or delete).
- harness/harness-core#39517: PingFederate's provisioner sends and asks for
  ``application/json`` (``Accept: application/json``), not ``application/scim+json``.

The pages name the update and disable actions but not their bodies; those steps replay the
RFC 7644 forms (§3.5.1 PUT, §3.5.2.3 PATCH replace), with Ping's JSON headers.
"""

from __future__ import annotations

from urllib.parse import quote

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PING = {"Accept": "application/json", "Content-Type": "application/json"}


def ping_user(user_name: str, email: str, active: bool = True) -> dict:
    return {
        "schemas": [USER, ENTERPRISE],
        "userName": user_name,
        "name": {"givenName": "Janet", "familyName": "Smith"},
        "emails": [{"value": email, "type": "work", "primary": True}],
        "active": active,
        ENTERPRISE: {"department": "Finance"},
    }


def lookup(api, expression: str):
    return api.scim("GET", "/Users?filter=" + quote(expression, safe=""), headers=PING)


def test_pingone_finds_users_with_each_documented_filter(api):
    r = api.scim("POST", "/Users", ping_user("jsmith", "janet.smith@example.com"), PING)
    assert r.status_code == 201, r.get_json()
    uid = r.get_json()["id"]

    for expression in (
        'userName eq "jsmith"',  # PingFederate's default (userName)
        'emails eq "janet.smith@example.com"',  # PingFederate's default for workEmail
        'username Eq "jsmith"',  # PingOne's example: names and operators in any case
        'emails co "janet.smith"',
    ):
        r = lookup(api, expression)
        assert r.status_code == 200, (expression, r.get_json())
        assert r.headers["Content-Type"] == "application/json", expression
        body = r.get_json()
        assert body["totalResults"] == 1, expression
        assert [u["id"] for u in body["Resources"]] == [uid], expression

    # Not found: an empty list, so the provisioner creates the user.
    r = lookup(api, 'userName eq "nobody"')
    assert (r.status_code, r.get_json()["totalResults"]) == (200, 0)


def test_pingone_email_example_names_the_attribute_to_use(api):
    """``email`` is PingOne's own attribute name, not SCIM's (``emails``): a 400 that says
    which attribute is unknown, so the admin can correct the filter expression."""
    r = lookup(api, 'email Co "janet"')
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    body = r.get_json()
    assert body["scimType"] == "invalidFilter"
    assert "'email'" in body["detail"]


def test_pingone_user_lifecycle(api):
    # "Provision disabled user accounts": created inactive, holding no seat.
    r = api.scim("POST", "/Users", ping_user("dormant", "dormant@example.com", False), PING)
    assert r.status_code == 201, r.get_json()
    assert r.headers["Content-Type"] == "application/json"
    assert r.get_json()["active"] is False
    assert api.admin("GET", "/seats").get_json()["consumed"] == 0

    r = api.scim("POST", "/Users", ping_user("jsmith", "janet.smith@example.com"), PING)
    uid = r.get_json()["id"]
    assert api.admin("GET", "/seats").get_json()["consumed"] == 1

    # Update: the mapped attributes again, whole.
    changed = ping_user("jsmith", "janet.smith@example.com")
    changed[ENTERPRISE] = {"department": "Treasury"}
    r = api.scim("PUT", f"/Users/{uid}", changed, PING)
    assert r.status_code == 200
    assert r.get_json()[ENTERPRISE]["department"] == "Treasury"

    # Deprovisioning action "disable".
    disable = {
        "schemas": [PATCH],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    r = api.scim("PATCH", f"/Users/{uid}", disable, PING)
    assert r.status_code in (200, 204)
    assert api.scim("GET", f"/Users/{uid}", headers=PING).get_json()["active"] is False
    assert api.admin("GET", "/seats").get_json()["consumed"] == 0

    # Deprovisioning action "delete".
    assert api.scim("DELETE", f"/Users/{uid}", headers=PING).status_code == 204
    assert api.scim("GET", f"/Users/{uid}", headers=PING).status_code == 404


def test_scim_json_stays_the_default_media_type(api):
    """RFC 7644 §3.8: without an Accept header, or with one that allows anything or asks for
    both, the answer is application/scim+json; only a client asking for JSON alone gets it."""
    for accept in (None, "*/*", "application/scim+json", "application/json, application/scim+json"):
        headers = {"Accept": accept} if accept else {}
        r = api.scim("GET", "/Users", headers=headers)
        assert r.headers["Content-Type"] == "application/scim+json", accept
