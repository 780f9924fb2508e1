"""The SCIM connector reads the application before it writes: against stock scim2-server (an
independent, strict implementation), against seat-agent's own discovery documents, and through
``seat-agent downstream check`` and ``serve`` as real processes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import responses
from scim2_peer import Scim2Peer, running_peer

from agent.connectors.base import DeliveryError, EffectiveUser
from agent.connectors.scim import ScimConnector
from agent.connectors.scim_app import (
    ENTERPRISE,
    SEAT_EXT,
    USER_SCHEMA,
    AppAttribute,
    MappingError,
    field_map,
    profile_from,
)
from agent.scim import discovery

COST_CENTER = f"{ENTERPRISE}:costCenter"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def peer(scim2_server) -> Iterator[Scim2Peer]:
    with running_peer(scim2_server) as p:
        yield p


def user(active: bool = True, status: str = "Active", role: str | None = "editor", **kw):
    base = {
        "user_id": "u-1",
        "user_name": "ada@example.com",
        "active": active,
        "app_status": status,
        "role": role,
        "display_name": "Ada",
        "emails": [{"value": "ada@example.com", "type": "work", "primary": True}],
    }
    return EffectiveUser(**{**base, **kw})


def documents(base_url: str, token: str) -> tuple[dict, dict, dict]:
    h = {"Authorization": f"Bearer {token}"}
    return tuple(  # type: ignore[return-value]
        requests.get(f"{base_url}/{p}", headers=h, timeout=5).json()
        for p in ("ServiceProviderConfig", "ResourceTypes", "Schemas")
    )


# -- what an application declares ------------------------------------------------------------


def test_profile_of_stock_scim2_server(peer):
    profile = profile_from(*documents(peer.base_url, peer.token))
    assert (profile.patch, profile.filter, profile.max_results) == (True, True, 1000)
    assert (profile.users_endpoint, profile.groups_endpoint) == ("/Users", "/Groups")
    assert profile.schemas_published
    assert profile.declares("roles") and profile.declares("EMAILS")
    assert profile.extension(ENTERPRISE) is not None
    assert profile.extension(SEAT_EXT) is None  # it does not know seat-agent's extension
    fields = field_map(profile, "auto", "auto")
    assert fields.role is not None and fields.role.path == "roles"
    assert fields.status is None  # auto: not sent where no attribute is declared for it


def test_profile_of_seat_agent_is_read_only_for_its_seat_extension():
    base = "http://agent.example/scim/v2"
    profile = profile_from(
        discovery.service_provider_config(base, 200, 1_000_000),
        {"Resources": discovery.resource_types(base, seat_extension=True)},
        {"Resources": discovery.schemas(base, seat_extension=True)},
    )
    assert profile.extension(SEAT_EXT) is not None
    assert field_map(profile, "auto", "auto").status is None  # declared, but readOnly
    with pytest.raises(MappingError) as err:
        field_map(profile, "auto", f"{SEAT_EXT}:appStatus")
    assert "status_attribute" in str(err.value) and "readOnly" in str(err.value)


@pytest.mark.parametrize(
    ("role", "status", "words"),
    [
        ("department", "auto", ["role_attribute = 'department'", "no attribute 'department'"]),
        ("auto", f"{SEAT_EXT}:appStatus", ["status_attribute", SEAT_EXT, "does not declare"]),
        ("auto", f"{ENTERPRISE}:shoeSize", ["status_attribute", "shoeSize", "costCenter"]),
        ("entitlements", "entitlements", ["both name 'entitlements'"]),
        ("active", "auto", ["already writes 'active'"]),
        ("auto", f"{ENTERPRISE}:manager", ["'manager' is a complex attribute without a 'value'"]),
        ("name", "auto", ["'name' is a complex attribute without a 'value'"]),
        ("auto", "userName", ["already writes 'userName'"]),
        ("emails", "auto", ["already writes 'emails'"]),
        ("password", "auto", ["never returns 'password'"]),
        ("x509Certificates", "auto", ["'x509Certificates' holds binary values"]),
    ],
)
def test_a_mapping_the_application_cannot_take_names_both(peer, role, status, words):
    profile = profile_from(*documents(peer.base_url, peer.token))
    with pytest.raises(MappingError) as err:
        field_map(profile, role, status)
    for word in words:
        assert word in str(err.value)


def test_an_application_without_active_cannot_be_a_target():
    spc = {"patch": {"supported": True}, "filter": {"supported": True}}
    schemas = {"Resources": [{"id": USER_SCHEMA, "attributes": [{"name": "userName"}]}]}
    with pytest.raises(MappingError) as err:
        field_map(profile_from(spc, None, schemas), "auto", "auto")
    assert "'active'" in str(err.value)


# -- pushing to stock scim2-server -------------------------------------------------------------


def test_role_and_status_go_where_the_mapping_says(peer):
    with ScimConnector(
        peer.base_url,
        peer.token,
        5,
        role_attribute="entitlements",
        status_attribute=COST_CENTER,
    ) as c:
        remote_id = c.push_user(user(), None)
        [remote] = peer.users()
        assert remote["id"] == remote_id and remote["externalId"] == "u-1"
        assert remote["entitlements"] == [{"value": "editor"}]
        assert remote[ENTERPRISE] == {"costCenter": "Active"}
        assert "roles" not in remote
        assert set(remote["schemas"]) == {USER_SCHEMA, ENTERPRISE}

        before = peer.relayed("PATCH", f"/Users/{remote_id}")
        assert c.push_user(user(active=False, status="Locked", role=None), remote_id) == remote_id
        assert peer.relayed("PATCH", f"/Users/{remote_id}") == before + 1  # patch.supported
        [remote] = peer.users()
        assert remote["active"] is False
        assert remote[ENTERPRISE] == {"costCenter": "Locked"}
        assert not remote.get("entitlements")

        [listed] = list(c.list_users())
        assert (listed.app_status, listed.role, listed.active) == ("Locked", None, False)
        assert c.reports_roles


def test_attributes_the_application_holds_but_we_do_not_manage_survive_an_update(peer):
    with ScimConnector(peer.base_url, peer.token, 5) as c:
        remote_id = c.push_user(user(), None)
        peer.replace(remote_id, title="Chief Engineer", nickName="ada")
        c.push_user(user(active=False), remote_id)
        [remote] = peer.users()
        assert (remote["title"], remote["nickName"], remote["active"]) == (
            "Chief Engineer",
            "ada",
            False,
        )


def test_a_stale_profile_is_refused_with_the_field_named_then_read_again(peer):
    """The app refuses what it does not declare (RFC 7644 §3.3); the error names it, and the
    next attempt reads the app again and succeeds: the change is not lost."""
    actual = profile_from(*documents(peer.base_url, peer.token))
    believed = dataclasses.replace(
        actual, extensions={SEAT_EXT: {"appstatus": AppAttribute("appStatus")}}
    )
    with ScimConnector(peer.base_url, peer.token, 5, profile=believed) as c:
        with pytest.raises(DeliveryError) as err:
            c.push_user(user(), None)
        assert err.value.permanent and err.value.status == 400
        assert SEAT_EXT in str(err.value)
        assert peer.users() == []
        remote_id = c.push_user(user(), None)  # re-read: the extension is not sent any more
        [remote] = peer.users()
        assert remote["id"] == remote_id and SEAT_EXT not in remote


def test_mapping_error_on_delivery_is_permanent_and_names_both(peer):
    with ScimConnector(peer.base_url, peer.token, 5, status_attribute="nickname2") as c:
        with pytest.raises(DeliveryError) as err:
            c.push_user(user(), None)
        assert err.value.permanent
        assert "status_attribute = 'nickname2'" in str(err.value)
        assert peer.users() == []


def test_unreachable_application_is_a_temporary_error_and_retried(peer):
    peer.stop()
    with ScimConnector(peer.base_url, peer.token, 5) as c:
        with pytest.raises(DeliveryError) as err:
            c.push_user(user(), None)
        assert not err.value.permanent and "ServiceProviderConfig" in str(err.value)
        assert c.describe()["reachable"] is False
        peer.start()
        assert c.push_user(user(), None)
    assert len(peer.users()) == 1


# -- an application without PATCH or filtering (responses: scim2-server declares both) --------

BASE = "http://plain.example/scim/v2"
PLAIN_SPC = {"patch": {"supported": False}, "filter": {"supported": False}}


def test_without_patch_and_filter_it_puts_and_looks_up_by_user_name():
    profile = profile_from(PLAIN_SPC, None, None)
    with responses.RequestsMock() as rsps, ScimConnector(BASE, "t", 5, profile=profile) as c:
        rsps.add(
            responses.GET,
            f"{BASE}/Users",
            match=[
                responses.matchers.query_param_matcher(
                    {"filter": 'userName eq "ada@example.com"', "count": "2"}
                )
            ],
            json={"Resources": [{"id": "r-7", "userName": "ada@example.com"}]},
        )
        rsps.add(responses.PUT, f"{BASE}/Users/r-7", json={"id": "r-7"})
        assert c.push_user(user(), None) == "r-7"
        body = json.loads(rsps.calls[1].request.body)
        assert body["schemas"] == [USER_SCHEMA]  # RFC 7643's User assumed: no extension
        assert body["roles"] == [{"value": "editor"}] and body["active"] is True
        # a delete with nothing recorded and no externalId filter touches nothing
        c.delete_user("u-1", None)
        assert len(rsps.calls) == 2


# -- seat-agent downstream check and serve, as real processes -----------------------------------


def _config(tmp_path: Path, peer: Scim2Peer, **downstream: str) -> Path:
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        "port = 18080",
        "[database]",
        f'url = "sqlite:///{tmp_path}/agent.db"',
        "[auth]",
        'scim_token = "scim-token-0123456789"',
        'admin_token = "admin-token-0123456789"',
        "[downstream]",
        'type = "scim"',
        f'url = "{peer.base_url}"',
        f'token = "{peer.token}"',
        *(f"{k} = {json.dumps(v)}" for k, v in downstream.items()),
    ]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_downstream_check_prints_what_it_learned_and_a_dry_run(peer, tmp_path):
    config = _config(tmp_path, peer, status_attribute=COST_CENTER)
    r = _run("downstream", "check", "--config", str(config), "--role", "editor", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reachable:   yes" in r.stdout
    assert "update:      PATCH" in r.stdout and "lookup:      externalId" in r.stdout
    assert "role goes to:   roles" in r.stdout
    assert f"status goes to: {COST_CENTER}" in r.stdout
    assert f"POST {peer.base_url}/Users" in r.stdout
    assert "the application declares everything this push sends" in r.stdout
    assert peer.users() == []  # a dry run writes nothing

    r = _run("downstream", "check", "--config", str(config), "--json", cwd=tmp_path)
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["application"]["app"]["patch"] is True
    [request] = data["dryRun"]["requests"]
    assert request["body"][ENTERPRISE] == {"costCenter": "Active"}


def test_downstream_check_names_a_bad_mapping_and_an_unreachable_app(peer, tmp_path):
    config = _config(tmp_path, peer, role_attribute="department")
    r = _run("downstream", "check", "--config", str(config), cwd=tmp_path)
    assert r.returncode == 1
    assert "role_attribute = 'department'" in r.stdout

    peer.stop()
    config = _config(tmp_path, peer)
    r = _run("downstream", "check", "--config", str(config), "--json", cwd=tmp_path)
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert (
        data["application"]["reachable"] is False
        and "cannot connect" in (data["application"]["error"])
    )


def test_downstream_check_without_a_downstream_is_exit_2(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/a.db"\n[auth]\n'
        'scim_token = "scim-token-0123456789"\nadmin_token = "admin-token-0123456789"\n'
    )
    r = _run("downstream", "check", "--config", str(config), cwd=tmp_path)
    assert r.returncode == 2
    assert "[downstream] type" in r.stderr


def test_serve_refuses_to_start_on_a_mapping_the_application_cannot_take(peer, tmp_path):
    config = _config(tmp_path, peer, status_attribute=f"{SEAT_EXT}:appStatus")
    r = _run("serve", "--config", str(config), cwd=tmp_path)
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "status_attribute" in line and SEAT_EXT in line


# -- groups ([downstream] push_groups) -----------------------------------------------------------


def _groups(peer: Scim2Peer) -> list[dict]:
    r = requests.get(
        f"{peer.direct_url}/Groups",
        headers={"Authorization": f"Bearer {peer.token}"},
        timeout=5,
    )
    return list(r.json().get("Resources") or [])


def test_groups_are_created_with_their_members_then_follow_changes(peer):
    from agent.connectors.base import EffectiveGroup

    with ScimConnector(peer.base_url, peer.token, 5, push_groups=True) as c:
        ada = c.push_user(user(), None)
        bob = c.push_user(user(user_id="u-2", user_name="bob@example.com"), None)
        gid = c.push_group(EffectiveGroup("g-1", "Engineering", [ada, bob]), None)
        [group] = _groups(peer)
        assert (group["id"], group["externalId"], group["displayName"]) == (
            gid,
            "g-1",
            "Engineering",
        )
        assert {m["value"] for m in group["members"]} == {ada, bob}

        # a resend without the recorded id finds the same group (externalId), no duplicate
        assert c.push_group(EffectiveGroup("g-1", "Eng", [bob]), None) == gid
        [group] = _groups(peer)
        assert group["displayName"] == "Eng"
        assert [m["value"] for m in group["members"]] == [bob]

        assert c.push_group(EffectiveGroup("g-1", "Eng", []), gid) == gid
        [group] = _groups(peer)
        assert not group.get("members")

        c.delete_group("g-1", gid)
        c.delete_group("g-1", gid)  # already gone: success
        assert _groups(peer) == []


def test_a_group_name_taken_in_the_application_is_adopted_only_when_unclaimed():
    """An app that keeps group names unique answers 409 (RFC 7644 §3.3): a group of that name
    without an externalId is taken over; one claimed by someone else is a permanent error."""
    from agent.connectors.base import EffectiveGroup

    spc = {"patch": {"supported": True}, "filter": {"supported": True}}
    profile = profile_from(spc, None, None)
    with (
        responses.RequestsMock() as rsps,
        ScimConnector(BASE, "t", 5, profile=profile, push_groups=True) as c,
    ):
        empty = {"Resources": []}
        rsps.add(responses.GET, f"{BASE}/Groups", json=empty)  # by externalId: none
        rsps.add(responses.POST, f"{BASE}/Groups", status=409, json={"detail": "taken"})
        rsps.add(responses.GET, f"{BASE}/Groups", json={"Resources": [{"id": "r-5"}]})
        rsps.add(responses.PATCH, f"{BASE}/Groups/r-5", status=204)
        assert c.push_group(EffectiveGroup("g-1", "Sales", []), None) == "r-5"
        names = [json.loads(r.request.body) for r in rsps.calls if r.request.method == "PATCH"]
        assert names[0]["Operations"][0] == {
            "op": "replace",
            "path": "displayName",
            "value": "Sales",
        }

        rsps.add(responses.GET, f"{BASE}/Groups", json=empty)
        rsps.add(responses.POST, f"{BASE}/Groups", status=409, json={"detail": "taken"})
        rsps.add(
            responses.GET,
            f"{BASE}/Groups",
            json={"Resources": [{"id": "r-6", "externalId": "theirs"}]},
        )
        with pytest.raises(DeliveryError) as err:
            c.push_group(EffectiveGroup("g-2", "Ops", []), None)
        assert err.value.permanent and "'Ops'" in str(err.value)


def test_a_scim_url_that_is_not_http_is_refused_naming_it():
    from agent.config import ConfigError, settings_from_mapping

    with pytest.raises((ConfigError, ValueError)) as err:
        settings_from_mapping(
            {
                "auth": {"scim_token": "s" * 20, "admin_token": "a" * 20},
                "downstream": {"type": "scim", "url": "ftp://x"},
            }
        )
    assert "url must be an http:// or https:// URL" in str(err.value) and "ftp://x" in str(
        err.value
    )


def test_downstream_check_dry_runs_a_deactivated_user_and_names_token_problems(peer, tmp_path):
    config = _config(tmp_path, peer)
    r = _run("downstream", "check", "--config", str(config), "--inactive", "--json", cwd=tmp_path)
    [request] = json.loads(r.stdout)["dryRun"]["requests"]
    assert request["body"]["active"] is False

    config = _config(tmp_path, peer)
    text = config.read_text().replace(f'token = "{peer.token}"', 'token = "wrong"')
    config.write_text(text)
    r = _run("downstream", "check", "--config", str(config), cwd=tmp_path)
    assert r.returncode == 1
    assert "refused the token" in r.stdout and "HTTP 401" in r.stdout

    config.write_text(text.replace('token = "wrong"\n', 'token_env = "NO_SUCH_TOKEN_VAR"\n'))
    r = _run("downstream", "check", "--config", str(config), cwd=tmp_path)
    assert r.returncode == 1
    assert "NO_SUCH_TOKEN_VAR" in r.stdout
