"""Reconciliation: counters recounted and repaired, seat states re-decided, dry run changes
nothing, the queue drained."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from test_seat_engine import SEAT, create, seat_of, seats

from agent.jobs.tasks import Jobs
from agent.services.reconcile import drain_queue, iter_seat_rows
from agent.storage.tables import seat_pool, users


def test_counter_drift_is_recounted_and_repaired(make_api):
    api = make_api(seats=10)
    for n in ("a", "b", "c"):
        create(api, n)
    with api.agent.store.write() as tx:
        tx.conn.execute(update(seat_pool).values(consumed=7))
    report = Jobs(api.agent).reconcile(dry_run=True)
    assert (report.counter_before, report.counter_after) == (7, 3)
    assert seats(api)["consumed"] == 7  # dry run changed nothing
    report = Jobs(api.agent).reconcile()
    assert report.repaired
    assert seats(api)["consumed"] == 3
    entries = api.admin("GET", "/ledger").get_json()["entries"]
    assert entries[-1]["kind"] == "reconcile"
    with api.agent.store.read() as tx:
        assert tx.state.get("last_reconcile") is not None


def test_policy_change_is_applied_to_existing_users(make_api, db_url, clock):
    api = make_api(seats=10)
    helper = create(api, "helper", roles=[{"value": "Assistant"}])
    assert seat_of(api, helper["id"])["licenseState"] == "licensed"
    api2 = make_api(seats=10, free_roles=["Assistant"])  # operator edits the config, restarts
    report = Jobs(api2.agent).reconcile(dry_run=True)
    assert report.resettled == ["helper"]
    assert seat_of(api2, helper["id"])["licenseState"] == "licensed"
    report = Jobs(api2.agent).reconcile()
    assert report.resettled == ["helper"]
    assert seat_of(api2, helper["id"])["licenseState"] == "free"
    assert seats(api2)["consumed"] == 0


def test_drain_queue_promotes_when_seats_were_freed_outside_a_request(make_api):
    api = make_api(seats=1, on_full="queue")
    a = create(api, "a")
    q = create(api, "q")
    assert q[SEAT]["licenseState"] == "queued"
    with api.agent.store.write() as tx:  # e.g. a seat freed by a manual database repair
        tx.conn.execute(
            update(users)
            .where(users.c.user_name == "a")
            .values(holds_seat=False, license_state="free")
        )
        tx.conn.execute(update(seat_pool).values(consumed=0))
    assert drain_queue(api.agent.store, api.agent.seats) == ["q"]
    assert seat_of(api, q["id"])["licenseState"] == "licensed"
    # reconcile re-decides a, who wants a seat: none is free, so (on_full = queue) it queues
    report = Jobs(api.agent).reconcile()
    assert report.resettled == ["a"]
    assert seat_of(api, a["id"])["licenseState"] == "queued"


def test_seat_rows_carry_each_users_roles_and_groups_across_batches(make_api):
    api = make_api(seats=10, group_roles={"Helpers": "Assistant"})
    plain = create(api, "plain")
    roled = create(api, "roled", roles=[{"value": "Assistant"}, {"value": "Viewer"}])
    grouped = create(api, "grouped", emails=[{"value": "g@example.com", "type": "work"}])
    group = api.scim(
        "POST", "/Groups", {"displayName": "Helpers", "members": [{"value": grouped["id"]}]}
    ).get_json()
    assert group["displayName"] == "Helpers"
    rows = [r for batch in iter_seat_rows(api.agent.store, batch=2) for r in batch]
    by_name = {r.user_name: r.state for r in rows}
    assert list(by_name) == ["plain", "roled", "grouped"]  # every user once, in seq order
    assert by_name["plain"].roles == frozenset() and by_name["plain"].groups == frozenset()
    assert by_name["roled"].roles == {"assistant", "viewer"}
    assert by_name["roled"].groups == frozenset()
    assert by_name["grouped"].roles == frozenset()  # its email row is not a role
    assert by_name["grouped"].groups == {"Helpers"}
    assert {r.id for r in rows} == {plain["id"], roled["id"], grouped["id"]}


def test_policy_change_re_decides_many_users_with_one_ledger_entry_each(make_api):
    api = make_api(seats=10)
    names = [f"helper{i}" for i in range(4)]
    for n in names:
        create(api, n, roles=[{"value": "Assistant"}])
    create(api, "member", roles=[{"value": "Member"}])
    assert seats(api)["consumed"] == 5
    api2 = make_api(seats=10, free_roles=["Assistant"])
    report = Jobs(api2.agent).reconcile()
    assert sorted(report.resettled) == names
    assert not report.unresolved
    assert seats(api2)["consumed"] == 1
    entries = api2.admin("GET", "/ledger").get_json()["entries"]
    releases = [e for e in entries if e["kind"] == "release"]
    assert sorted(e["userName"] for e in releases) == names
    # each release carries the count after it, as if written one at a time
    assert [e["consumedAfter"] for e in releases] == [4, 3, 2, 1]
    with api2.agent.store.read() as tx:
        stored = {u.user_name: u.seat for u in tx.users.get_many(_ids(tx))}
    assert all(stored[n].license_state == "free" and not stored[n].holds_seat for n in names)
    assert stored["member"].holds_seat
    # a second run finds nothing left to repair
    again = Jobs(api2.agent).reconcile()
    assert again.resettled == [] and not again.repaired


def test_deferred_seat_writes_need_the_pool_lock(make_api):
    api = make_api(seats=3)
    with api.agent.store.read() as tx, pytest.raises(RuntimeError, match="seat-pool lock"):
        with tx.pool.deferred_writes():
            pass


def test_deferred_seat_writes_are_invisible_until_the_block_ends(make_api, clock):
    api = make_api(seats=3)
    with api.agent.store.write() as tx:
        with tx.pool.deferred_writes():
            tx.pool.update(5, 2, clock())
            assert tx.pool.current().seats == 5  # this transaction sees its own change
            assert tx.conn.execute(select(seat_pool.c.seats)).scalar_one() == 3
        assert tx.conn.execute(select(seat_pool.c.seats)).scalar_one() == 5
    assert (seats(api)["licensed"], seats(api)["consumed"]) == (5, 2)


def _ids(tx) -> list[str]:
    return [r[0] for r in tx.conn.execute(select(users.c.id))]
