"""The SCIM connector against a real downstream SCIM server, and its HTTP error handling."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
import responses
from downstream import Downstream, running_downstream

from agent.config import DownstreamSettings
from agent.connectors import build_connector
from agent.connectors.base import DeliveryError, EffectiveUser, effective_user
from agent.connectors.http import retry_after_seconds
from agent.connectors.scim import SEAT_EXT, ScimConnector
from agent.connectors.scim_app import USER_SCHEMA, profile_from
from agent.storage.records import SeatState, UserRecord

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def downstream(tmp_path) -> Iterator[Downstream]:
    with running_downstream(tmp_path / "downstream") as server:
        yield server


@pytest.fixture
def connector(downstream: Downstream) -> Iterator[ScimConnector]:
    with ScimConnector(downstream.base_url, downstream.token, timeout=5) as c:
        yield c


def state(user_id: str = "u-1", user_name: str = "ada@example.com", **kw) -> EffectiveUser:
    values = {
        "user_id": user_id,
        "user_name": user_name,
        "active": True,
        "app_status": "Active",
        "role": "Editor",
        "display_name": "Ada Lovelace",
        "emails": [{"value": user_name, "type": "work", "primary": True}],
    }
    values.update(kw)
    return EffectiveUser(**values)


# -- against a real downstream ---------------------------------------------------------------


def test_push_creates_then_updates_the_same_user(downstream, connector):
    remote = connector.push_user(state(), None)
    [created] = downstream.users()
    assert created["id"] == remote
    assert created["externalId"] == "u-1"
    assert created["userName"] == "ada@example.com"
    assert created["active"] is True
    assert created["displayName"] == "Ada Lovelace"
    assert created["roles"] == [{"value": "Editor"}]
    assert created["emails"][0]["value"] == "ada@example.com"

    again = connector.push_user(state(display_name="Ada King", role="Viewer"), remote)
    assert again == remote
    [updated] = downstream.users()
    assert updated["id"] == remote
    assert updated["displayName"] == "Ada King"
    assert updated["roles"] == [{"value": "Viewer"}]


def test_resend_without_remote_id_finds_the_user_it_created(downstream, connector):
    # A crash after the POST and before the link was stored: the resend knows no remote id.
    first = connector.push_user(state(), None)
    second = connector.push_user(state(), None)
    assert first == second
    assert len(downstream.users_named("ada@example.com")) == 1


def test_resend_after_a_rename_updates_the_user_the_first_send_created(downstream, connector):
    # The userName changed before the resend: only the externalId lookup can find the user
    # (a POST would not conflict and would create a second one).
    first = connector.push_user(state(), None)
    second = connector.push_user(state(user_name="ada.king@example.com"), None)
    assert first == second
    [user] = downstream.users()
    assert user["userName"] == "ada.king@example.com"


def test_deactivation_pushes_active_false(downstream, connector):
    remote = connector.push_user(state(), None)
    connector.push_user(state(active=False, app_status="Inactive"), remote)
    [user] = downstream.users()
    assert user["active"] is False


def test_stale_remote_id_recreates_the_user(downstream, connector):
    remote = connector.push_user(state(), None)
    downstream.delete(remote)  # removed by hand in the application
    new = connector.push_user(state(), remote)
    assert new != remote
    [user] = downstream.users()
    assert user["id"] == new and user["externalId"] == "u-1"


def test_conflict_on_post_adopts_an_unclaimed_user_with_that_user_name(downstream, connector):
    existing = downstream.create({"userName": "ada@example.com", "active": False})
    remote = connector.push_user(state(), None)
    assert remote == existing["id"]
    [user] = downstream.users()
    assert user["externalId"] == "u-1"
    assert user["active"] is True


def test_conflict_with_a_user_claimed_by_someone_else_is_permanent(downstream, connector):
    downstream.create({"userName": "ada@example.com", "externalId": "someone-else"})
    with pytest.raises(DeliveryError) as err:
        connector.push_user(state(), None)
    assert err.value.permanent
    [user] = downstream.users()
    assert user["externalId"] == "someone-else"


def test_delete_removes_and_repeated_delete_succeeds(downstream, connector):
    remote = connector.push_user(state(), None)
    connector.delete_user("u-1", remote)
    assert downstream.users() == []
    connector.delete_user("u-1", remote)  # 404: already gone
    connector.delete_user("u-1", None)  # nothing found by externalId


def test_delete_without_remote_id_looks_the_user_up(downstream, connector):
    connector.push_user(state(), None)
    connector.push_user(state("u-2", "bob@example.com"), None)
    connector.delete_user("u-1", None)
    assert [u["userName"] for u in downstream.users()] == ["bob@example.com"]


def test_list_users_pages_and_maps_back(downstream):
    with ScimConnector(downstream.base_url, downstream.token, 5, page_size=2) as paged:
        ids = {
            paged.push_user(state(f"u-{i}", f"user{i}@example.com", active=i % 2 == 0), None): i
            for i in range(5)
        }
        listed = list(paged.list_users())
    assert len(listed) == 5
    assert {u.remote_id for u in listed} == set(ids)
    for u in listed:
        i = ids[u.remote_id]
        assert u.external_id == f"u-{i}"
        assert u.user_name == f"user{i}@example.com"
        assert u.active is (i % 2 == 0)
        assert u.role == "Editor"
        assert u.last_login is None


def test_wrong_token_is_permanent(downstream):
    with ScimConnector(downstream.base_url, "wrong", 5) as bad:
        with pytest.raises(DeliveryError) as err:
            bad.push_user(state(), None)
    assert err.value.permanent
    assert "401" in str(err.value)


def test_closed_port_is_a_temporary_error(downstream):
    url = downstream.base_url
    downstream.stop()
    with ScimConnector(url, downstream.token, 2) as c:
        with pytest.raises(DeliveryError) as err:
            c.push_user(state(), None)
    assert not err.value.permanent and err.value.retry_after is None


def test_build_connector_from_settings():
    assert build_connector(DownstreamSettings()) is None
    built = build_connector(
        DownstreamSettings(type="scim", url="http://app.example/scim/v2/", token="t")
    )
    assert isinstance(built, ScimConnector)
    assert built.base_url == "http://app.example/scim/v2"
    assert built.headers["Authorization"] == "Bearer t"
    built.close()


# -- HTTP failures (responses) ---------------------------------------------------------------

BASE = "http://app.example/scim/v2"


def _attr(name: str, type_: str = "string", multi: bool = False, **kw) -> dict:
    subs = [{"name": "value", "type": "string"}] if type_ == "complex" else []
    return {"name": name, "type": type_, "multiValued": multi, "subAttributes": subs, **kw}


# An app that declares PUT only, filtering, roles and a writable seat-agent extension.
MOCK_SPC = {"patch": {"supported": False}, "filter": {"supported": True, "maxResults": 200}}
MOCK_TYPES = {
    "Resources": [
        {
            "name": "User",
            "endpoint": "/Users",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": SEAT_EXT, "required": False}],
        }
    ]
}
MOCK_SCHEMAS = {
    "Resources": [
        {
            "id": USER_SCHEMA,
            "attributes": [
                _attr("userName"),
                _attr("active", "boolean"),
                _attr("displayName"),
                _attr("emails", "complex", True),
                _attr("roles", "complex", True),
            ],
        },
        {"id": SEAT_EXT, "attributes": [_attr("appStatus"), _attr("lastLogin", "dateTime")]},
    ]
}


def mock_discovery(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, f"{BASE}/ServiceProviderConfig", json=MOCK_SPC)
    rsps.add(responses.GET, f"{BASE}/ResourceTypes", json=MOCK_TYPES)
    rsps.add(responses.GET, f"{BASE}/Schemas", json=MOCK_SCHEMAS)


@pytest.fixture
def mocked() -> Iterator[tuple[responses.RequestsMock, ScimConnector]]:
    profile = profile_from(MOCK_SPC, MOCK_TYPES, MOCK_SCHEMAS)
    with (
        responses.RequestsMock(assert_all_requests_are_fired=False) as rsps,
        ScimConnector(BASE, "t", 5, clock=lambda: T0, profile=profile) as c,
    ):
        mock_discovery(rsps)
        yield rsps, c


@pytest.mark.parametrize(
    "exc", [requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout]
)
def test_timeouts_are_temporary(mocked, exc):
    rsps, c = mocked
    rsps.add(responses.PUT, f"{BASE}/Users/r-1", body=exc("slow"))
    with pytest.raises(DeliveryError) as err:
        c.push_user(state(), "r-1")
    assert not err.value.permanent
    assert err.value.retry_after is None
    assert "timed out" in str(err.value)


def test_500_is_temporary(mocked):
    rsps, c = mocked
    rsps.add(responses.PUT, f"{BASE}/Users/r-1", status=500, json={"detail": "boom"})
    with pytest.raises(DeliveryError) as err:
        c.push_user(state(), "r-1")
    assert not err.value.permanent and err.value.retry_after is None
    assert "HTTP 500: boom" in str(err.value)


def test_503_with_retry_after_seconds(mocked):
    rsps, c = mocked
    rsps.add(responses.PUT, f"{BASE}/Users/r-1", status=503, headers={"Retry-After": "7"})
    with pytest.raises(DeliveryError) as err:
        c.push_user(state(), "r-1")
    assert not err.value.permanent
    assert err.value.retry_after == 7


def test_429_with_http_date_retry_after(mocked):
    rsps, c = mocked
    later = format_datetime(T0 + timedelta(seconds=30), usegmt=True)
    rsps.add(responses.PUT, f"{BASE}/Users/r-1", status=429, headers={"Retry-After": later})
    with pytest.raises(DeliveryError) as err:
        c.push_user(state(), "r-1")
    assert not err.value.permanent
    assert err.value.retry_after == 30


def test_400_is_permanent(mocked):
    rsps, c = mocked
    rsps.add(
        responses.PUT,
        f"{BASE}/Users/r-1",
        status=400,
        json={"status": "400", "detail": "bad userName"},
    )
    with pytest.raises(DeliveryError) as err:
        c.push_user(state(), "r-1")
    assert err.value.permanent
    assert "bad userName" in str(err.value)


def test_404_on_delete_is_success(mocked):
    rsps, c = mocked
    rsps.add(responses.DELETE, f"{BASE}/Users/r-1", status=404)
    c.delete_user("u-1", "r-1")
    assert len([c for c in rsps.calls if "/Users" in c.request.url]) == 1


def test_500_on_delete_is_temporary(mocked):
    rsps, c = mocked
    rsps.add(responses.DELETE, f"{BASE}/Users/r-1", status=502)
    with pytest.raises(DeliveryError) as err:
        c.delete_user("u-1", "r-1")
    assert not err.value.permanent


def test_requests_carry_token_and_scim_body(mocked):
    rsps, c = mocked
    rsps.add(
        responses.GET,
        f"{BASE}/Users",
        match=[
            responses.matchers.query_param_matcher({"filter": 'externalId eq "u-1"', "count": "2"})
        ],
        json={"totalResults": 0, "Resources": []},
    )
    rsps.add(responses.POST, f"{BASE}/Users", status=201, json={"id": "r-9"})
    assert c.push_user(state(role=None), None) == "r-9"
    post = [c.request for c in rsps.calls if c.request.method == "POST"][0]
    assert post.headers["Authorization"] == "Bearer t"
    assert post.headers["Content-Type"] == "application/scim+json"
    import json

    body = json.loads(post.body)
    assert body["externalId"] == "u-1"
    assert body["roles"] == []
    assert body[SEAT_EXT] == {"appStatus": "Active"}


def test_list_users_reads_last_login(mocked):
    rsps, c = mocked
    rsps.add(
        responses.GET,
        f"{BASE}/Users",
        json={
            "totalResults": 2,
            "startIndex": 1,
            "Resources": [
                {
                    "id": "r-1",
                    "userName": "a",
                    "externalId": "u-1",
                    "active": "False",
                    SEAT_EXT: {"appStatus": "Locked", "lastLogin": "2026-10-01T10:00:00Z"},
                    "roles": [{"value": "x"}, {"value": "y", "primary": True}],
                },
                {"id": "r-2", "userName": "b"},
            ],
        },
    )
    a, b = list(c.list_users())
    assert a.last_login == datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
    assert a.active is False and a.app_status == "Locked" and a.role == "y"
    assert b.external_id is None and b.last_login is None and b.active is True
    assert len([c for c in rsps.calls if "/Users" in c.request.url]) == 1


def test_retry_after_parsing():
    assert retry_after_seconds(None, T0) is None
    assert retry_after_seconds("120", T0) == 120
    assert retry_after_seconds("not a date", T0) is None
    past = format_datetime(T0 - timedelta(minutes=5), usegmt=True)
    assert retry_after_seconds(past, T0) == 0


# -- effective user --------------------------------------------------------------------------


def record(license_state: str, active: bool = True, **seat) -> UserRecord:
    resource = {
        "userName": "ada@example.com",
        "active": active,
        "name": {"formatted": "Ada Lovelace"},
        "roles": [{"value": "Viewer"}, {"value": "Editor", "primary": True}],
        "emails": [{"value": "ada@example.com", "type": "work", "display": "x"}],
    }
    return UserRecord("u-1", resource, T0, T0, 1, SeatState(license_state=license_state, **seat))


@pytest.mark.parametrize(
    ("license_state", "active", "expected"),
    [
        ("licensed", True, True),
        ("free", True, True),
        ("free", False, False),
        ("queued", True, False),
        ("inactive", False, False),
    ],
)
def test_effective_active_follows_the_seat(license_state, active, expected):
    assert effective_user(record(license_state, active), None).active is expected


def test_effective_role_and_profile():
    user = effective_user(record("licensed", app_status="Room"), "Guest")
    assert user.role == "Editor"  # the primary role
    assert user.app_status == "Room"
    assert user.display_name == "Ada Lovelace"
    assert user.emails == [{"value": "ada@example.com", "type": "work"}]
    on_fallback = effective_user(record("free", on_fallback=True), "Guest")
    assert on_fallback.role == "Guest" and on_fallback.active is True


def test_unknown_downstream_type_is_refused_by_the_config_with_a_clear_message():
    from agent.config import ConfigError, settings_from_mapping

    with pytest.raises((ConfigError, ValueError)) as err:
        settings_from_mapping({"downstream": {"type": "graphql", "url": "https://x.example/"}})
    assert "downstream type 'graphql' is not supported" in str(err.value)
    assert "use 'none', 'scim', 'webhook' or 'kintone'" in str(err.value)
