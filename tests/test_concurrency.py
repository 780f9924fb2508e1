"""The seat limit holds under concurrency: real HTTP, a multi-worker gunicorn, both databases."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import ADMIN_TOKEN, SCIM_TOKEN

pytestmark = pytest.mark.slow

SCIM_HEADERS = {"Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"}


def _create(url: str, name: str, active: bool) -> dict:
    r = requests.post(
        url + "/scim/v2/Users",
        json={"userName": name, "active": active},
        headers=SCIM_HEADERS,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()


def _activate_all(url: str, ids: list[str]) -> list[requests.Response]:
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": True}}],
    }

    def activate(uid: str) -> requests.Response:
        return requests.patch(
            f"{url}/scim/v2/Users/{uid}", json=body, headers=SCIM_HEADERS, timeout=60
        )

    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(activate, ids))


def _seats(url: str) -> dict:
    r = requests.get(
        url + "/admin/seats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    )
    return r.json()


def _seat_of(url: str, user_id: str) -> dict:
    r = requests.get(
        f"{url}/admin/users/{user_id}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("on_full", ["refuse", "queue"])
def test_50_concurrent_activations_with_10_free_seats_give_exactly_10(live_server, on_full):
    server = live_server(workers=4, seats=12, on_full=on_full)
    _create(server.url, "holder1", True)
    _create(server.url, "holder2", True)
    ids = [_create(server.url, f"u{i:02d}", False)["id"] for i in range(50)]

    responses = _activate_all(server.url, ids)

    codes = [r.status_code for r in responses]
    if on_full == "refuse":
        assert codes.count(200) == 10, codes
        assert codes.count(403) == 40, codes
    else:
        assert codes.count(200) == 50, codes
        states = [_seat_of(server.url, i)["licenseState"] for i in ids]
        assert states.count("licensed") == 10
        assert states.count("queued") == 40
    report = _seats(server.url)
    assert (report["licensed"], report["consumed"], report["available"]) == (12, 12, 0)
    assert report["by_license_state"]["licensed"] == 12
