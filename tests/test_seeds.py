"""One scenario per seed document (../shared/seeds), from its own examples, over real SCIM."""

from __future__ import annotations

from decimal import Decimal

from test_seat_engine import SEAT, create, deactivate, patch, seat_of, seats, user


def test_seed_000_reduce_users_then_licenses(make_api):
    """Kintone: 50 users on 50 licenses; reducing to 40 is refused until 10 are Inactive."""
    api = make_api(seats=50)
    ids = [create(api, f"user{i:02d}@example.com")["id"] for i in range(50)]
    assert seats(api)["consumed"] == 50

    r = api.admin("PUT", "/licenses", {"seats": 40})
    assert r.status_code == 409
    assert "50" in r.get_json()["error"]
    for uid in ids[:9]:
        deactivate(api, uid)
    assert api.admin("PUT", "/licenses", {"seats": 40}).status_code == 409  # 41 still consume
    # Method 2: deleting a user also frees its license
    assert api.scim("DELETE", f"/Users/{ids[9]}").status_code == 204
    r = api.admin("PUT", "/licenses", {"seats": 40})
    assert r.status_code == 200
    report = seats(api)
    assert (report["licensed"], report["consumed"], report["available"]) == (40, 40, 0)
    # Inactive users are "not counted as application users or licensed users"
    assert report["by_status"]["Inactive"] == {"users": 9, "consuming": 0}


def test_seed_001_free_roles_and_members_under_invitation(make_api):
    """Owner/Administrator/Member consume; Administrator Assistant/Assistant do not:
    4 members + 2 assistants need 4 licenses. Members under invitation count too."""
    api = make_api(
        seats=4,
        free_roles=["Administrator Assistant", "Assistant"],
        statuses=[{"name": "Invited", "consumes": True, "pending": True}],
        rules=[{"status": "Invited", "user_types": ["Invitee"]}],
    )
    for name, role in [
        ("owner", "Owner"),
        ("admin", "Administrator"),
        ("m1", "Member"),
        ("aa", "Administrator Assistant"),
        ("asst", "Assistant"),
    ]:
        create(api, name, roles=[{"value": role}])
    invited = create(api, "invited", userType="Invitee", roles=[{"value": "Member"}])
    assert invited[SEAT]["appStatus"] == "Invited"
    assert invited[SEAT]["licenseState"] == "licensed"
    assert seats(api)["consumed"] == 4
    r = api.scim("POST", "/Users", user("m2", roles=[{"value": "Member"}]))
    assert r.status_code == 403  # a fifth license-consuming member needs a fifth license
    r = api.scim("POST", "/Users", user("asst2", roles=[{"value": "Assistant"}]))
    assert r.status_code == 201  # assistants never need one


def test_seed_001_pending_not_counted_when_configured(make_api):
    api = make_api(
        seats=1,
        count_pending=False,
        statuses=[{"name": "Invited", "consumes": True, "pending": True}],
        rules=[{"status": "Invited", "user_types": ["Invitee"]}],
    )
    create(api, "member")
    invited = create(api, "invited", userType="Invitee")
    assert invited[SEAT] == {"licenseState": "free", "appStatus": "Invited"}
    assert seats(api)["consumed"] == 1


def test_seed_002_per_active_user_and_prorated_addon(make_api, clock):
    """Kimai: each active user consumes one license, deactivated ones don't; reactivation and
    new accounts only with a free license; an add-on on an annual plan 6 months old costs about
    half."""
    api = make_api(
        seats=2,
        price_per_seat="100.00",
        billing_period="annual",
        renewal_date="2027-05-02",
    )
    a = create(api, "a")
    create(api, "b")
    deactivate(api, a["id"])
    c = create(api, "c")  # the freed license is reassigned
    assert c[SEAT]["licenseState"] == "licensed"
    r = api.scim("PATCH", f"/Users/{a['id']}", patch({"op": "replace", "value": {"active": True}}))
    assert r.status_code == 403  # reactivation only if a license is available
    assert seat_of(api, a["id"])["licenseState"] == "inactive"

    r = api.admin("PUT", "/licenses", {"seats": 3})
    assert r.status_code == 200
    billing = api.admin("GET", "/billing").get_json()
    # 2026-11-02 is 184 days into the 365-day period: 181 days remain
    assert Decimal(billing["addon_cost"]) == Decimal("49.59")
    # the 2 licenses held when the agent first started are the contract: the whole period
    assert Decimal(billing["base_cost"]) == Decimal("200.00")
    assert Decimal(billing["total"]) == Decimal("249.59")
    assert billing["period_start"] == "2026-05-02" and billing["period_end"] == "2027-05-02"
    r = api.scim("PATCH", f"/Users/{a['id']}", patch({"op": "replace", "value": {"active": True}}))
    assert r.status_code == 200


def test_seed_002_ten_seats_plus_addon_six_months_in(make_api, clock):
    """10 licenses at 100/year held from before the agent started, one more bought 6 months
    into the annual period: 1000.00 for the contract plus about half a year for the add-on."""
    api = make_api(
        seats=10, price_per_seat="100.00", billing_period="annual", renewal_date="2027-05-02"
    )
    before = api.admin("GET", "/billing").get_json()
    assert (Decimal(before["base_cost"]), Decimal(before["addon_cost"])) == (
        Decimal("1000.00"),
        Decimal("0.00"),
    )
    assert Decimal(before["total"]) == Decimal("1000.00")
    assert api.admin("PUT", "/licenses", {"seats": 11}).status_code == 200
    billing = api.admin("GET", "/billing").get_json()
    assert billing["seats_held"] == 11
    assert Decimal(billing["base_cost"]) == Decimal("1000.00")
    assert Decimal(billing["addon_cost"]) == Decimal("49.59")  # 181 of 365 days remain
    assert Decimal(billing["total"]) == Decimal("1049.59")


def test_seed_002_metered_bills_recently_active_deactivated_users(make_api, clock):
    api = make_api(seats=10, metered=True, price_per_seat="5.00")
    a = create(api, "a")
    b = create(api, "b")
    create(api, "c")
    deactivate(api, a["id"])
    clock.advance(days=40)
    deactivate(api, b["id"])  # active within the last month
    billing = api.admin("GET", "/billing").get_json()
    assert billing["metered_users"] == 2  # c (active) + b (deactivated, active 0 days ago)
    assert Decimal(billing["total"]) == Decimal("10.00")


def test_seed_002_metered_bills_registered_and_deleted_users_of_the_last_month(make_api, clock):
    """Billed: active users, plus users active within the last month though now deactivated,
    including those who registered within the month (created inactive, or created then
    deactivated) and those deleted within the month who had been active."""
    api = make_api(seats=10, metered=True, price_per_seat="5.00")
    create(api, "old-inactive", active=False)  # registered 40 days ago: not billed
    gone = create(api, "old-deleted")
    assert api.scim("DELETE", f"/Users/{gone['id']}").status_code == 204
    clock.advance(days=40)
    create(api, "new-inactive", active=False)  # registered this month, never active
    deactivate(api, create(api, "created-then-deactivated")["id"])
    deleted = create(api, "deleted")
    assert api.scim("DELETE", f"/Users/{deleted['id']}").status_code == 204
    both = create(api, "deactivated-then-deleted")
    deactivate(api, both["id"])
    assert api.scim("DELETE", f"/Users/{both['id']}").status_code == 204
    create(api, "active")
    billing = api.admin("GET", "/billing").get_json()
    assert billing["seats_consumed"] == 1
    assert billing["metered_users"] == 1 + 4
    assert Decimal(billing["metered_cost"]) == Decimal("25.00")
    clock.advance(days=31)  # a month later only the active user is still billed
    assert api.admin("GET", "/billing").get_json()["metered_users"] == 1


def test_seed_003_maximum_number_system(make_api):
    """Suspended accounts are accounts in use; only deletion frees one; adding beyond the
    contract raises the contracted number, which never decreases."""
    api = make_api(seats=2, inactive_consumes=True, on_full="expand", max_seats=5, decrease="never")
    a = create(api, "a")
    create(api, "b")
    suspended = deactivate(api, a["id"])
    assert suspended[SEAT] == {"licenseState": "licensed", "appStatus": "Suspended"}
    assert seats(api)["consumed"] == 2  # suspend does not free
    create(api, "c")  # exceeds the contract: it rises to 3
    assert seats(api)["licensed"] == 3
    assert api.scim("DELETE", f"/Users/{a['id']}").status_code == 204  # delete frees
    report = seats(api)
    assert (report["licensed"], report["consumed"], report["available"]) == (3, 2, 1)
    r = api.admin("PUT", "/licenses", {"seats": 2})
    assert r.status_code == 409  # "Accounts under contract" cannot be decreased


def seed_004(make_api, seats: int):
    """OpenCRM as config.example.toml writes it: Locked is a consuming status for active users
    holding the Locked role (or in the "CRM Locked" group); Room and the other non-login
    statuses are free userTypes; only the account manager lowers the allowance."""
    return make_api(
        seats=seats,
        free_user_types=["Room", "Resource", "Asset", "Queue"],
        statuses=[
            {"name": "Locked", "consumes": True},
            {"name": "Room", "consumes": False},
        ],
        rules=[
            {"status": "Room", "user_types": ["Room"]},
            {"status": "Locked", "active": True, "roles_any": ["Locked"]},
        ],
        group_roles={"CRM Locked": "Locked"},
        decrease="manual",
    )


def test_seed_004_status_based_licences(make_api):
    """OpenCRM: Active and Locked consume; Room/Resource/Asset/Queue do not; "Any users with a
    'Status' other than 'Active' or 'Locked' do not use a licence": making an Active or Locked
    user Inactive frees it, and so does deleting one."""
    api = seed_004(make_api, seats=2)
    active = create(api, "active")
    locked = create(api, "locked", roles=[{"value": "Locked"}])
    assert locked[SEAT] == {"licenseState": "licensed", "appStatus": "Locked"}
    room = create(api, "boardroom", userType="Room")
    assert room[SEAT] == {"licenseState": "free", "appStatus": "Room"}
    for kind in ("Resource", "Asset", "Queue"):
        assert create(api, kind.lower(), userType=kind)[SEAT]["licenseState"] == "free"
    assert seats(api)["consumed"] == 2
    assert api.scim("POST", "/Users", user("third")).status_code == 403
    deactivate(api, active["id"])  # making an Active user Inactive frees a licence
    assert seat_of(api, active["id"]) == {"licenseState": "inactive", "appStatus": "Inactive"}
    assert seats(api)["consumed"] == 1
    third = create(api, "third")
    assert third[SEAT]["licenseState"] == "licensed"

    inactive_locked = deactivate(api, locked["id"])  # a Locked user made Inactive frees it too
    assert inactive_locked[SEAT] == {"licenseState": "inactive", "appStatus": "Inactive"}
    assert seats(api)["consumed"] == 1
    fourth = create(api, "fourth", roles=[{"value": "Locked"}])
    assert fourth[SEAT] == {"licenseState": "licensed", "appStatus": "Locked"}
    assert seats(api)["consumed"] == 2
    assert api.scim("DELETE", f"/Users/{fourth['id']}").status_code == 204  # deletion frees
    assert seats(api)["consumed"] == 1
    group = api.scim(
        "POST",
        "/Groups",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "CRM Locked",
            "members": [{"value": create(api, "via-group")["id"]}],
        },
    )
    assert group.status_code == 201
    report = seats(api)
    assert report["consumed"] == 2
    assert report["by_status"]["Locked"] == {"users": 1, "consuming": 1}


def test_seed_004_allowance_is_lowered_only_at_the_vendor(make_api):
    """ "You cannot reduce your number of licences here, if you wish to do this please contact
    your Account Manager": with decrease = manual the agent never lowers the count itself;
    PUT /admin/licenses records the account manager's change, still never below the users
    holding a licence, and says what to do at the vendor."""
    api = seed_004(make_api, seats=4)
    a = create(api, "a")
    create(api, "b", roles=[{"value": "Locked"}])
    create(api, "c")
    r = api.admin("PUT", "/licenses", {"seats": 2})
    assert r.status_code == 409  # 3 users hold a licence
    assert seats(api)["licensed"] == 4
    deactivate(api, a["id"])
    r = api.admin("PUT", "/licenses", {"seats": 2})
    assert r.status_code == 200
    body = r.get_json()
    assert body["change"] == "recorded"
    assert "made at the vendor" in body["message"]
    assert any("account manager" in step for step in body["vendor_steps"])
    report = seats(api)
    assert (report["licensed"], report["consumed"], report["available"]) == (2, 2, 0)
    assert api.scim("POST", "/Users", user("d")).status_code == 403
