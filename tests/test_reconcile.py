"""Reconciliation: counters recounted and repaired, seat states re-decided, dry run changes
nothing, the queue drained."""

from __future__ import annotations

from sqlalchemy import update
from test_seat_engine import SEAT, create, seat_of, seats

from agent.jobs.tasks import Jobs
from agent.services.reconcile import drain_queue
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
        assert tx.get_state("last_reconcile") is not None


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
