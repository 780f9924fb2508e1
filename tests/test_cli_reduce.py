"""``seat-agent reduce`` through a real process (issue 14): a target at or above the licenses is
refused, an impossible plan is one explanation and a non-zero exit, approve says when it runs,
``--watch`` follows a reduction to its end, and the license change names the reduction."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import write_config
from test_cli_operator import REPO, run
from test_reductions import build, populate

from agent.jobs.tasks import Jobs


@pytest.fixture
def deployment(make_api, clock, tmp_path):
    """12 licenses, 12 consuming users created long ago (the CLI runs on the real clock)."""
    clock.now = datetime.now(UTC) - timedelta(days=90)
    db_url = f"sqlite:///{tmp_path}/seat-agent.db"
    config = tmp_path / "agent.toml"
    write_config(config, db_url, 8080, seats=12)
    api = make_api(seats=12)
    populate(api, clock, regular=11)
    return api, {"SEAT_AGENT_CONFIG": str(config)}


@pytest.fixture
def make_api(tmp_path, clock):
    from conftest import make_settings

    from agent.app import create_app

    made = []

    def factory(**license):
        from conftest import Api

        app = create_app(
            make_settings(f"sqlite:///{tmp_path}/seat-agent.db", **license), clock=clock
        )
        made.append(app)
        return Api(app)

    yield factory
    for app in made:
        app.extensions["seat_agent"].store.dispose()


@pytest.mark.parametrize("target", ["12", "20"])
def test_a_target_at_or_above_the_licenses_is_refused(deployment, tmp_path, target):
    _api, env = deployment
    r = run(tmp_path, "reduce", "--to", target, "--dry-run", env=env)
    assert r.returncode == 2
    assert "nothing to reduce: 12 licenses are held" in r.stderr and "feasible" not in r.stdout
    r = run(tmp_path, "reduce", "--to", target, "--json", env=env)
    assert r.returncode == 2
    assert "nothing to reduce" in json.loads(r.stdout)["error"]


def test_reduce_without_to_is_a_json_error_on_stdout(deployment, tmp_path):
    _api, env = deployment
    r = run(tmp_path, "reduce", "--dry-run", "--json", env=env)
    assert r.returncode == 2
    assert "--to" in json.loads(r.stdout)["error"]


def test_an_impossible_plan_is_one_explanation_and_exits_non_zero(make_api, clock, tmp_path):
    clock.now = datetime.now(UTC) - timedelta(hours=1)  # every user within the grace period
    config = tmp_path / "agent.toml"
    write_config(config, f"sqlite:///{tmp_path}/seat-agent.db", 8080, seats=9)
    api = make_api(seats=9)
    populate(api, clock, regular=0, new=9, owner=False)
    env = {"SEAT_AGENT_CONFIG": str(config)}
    clock.now = datetime.now(UTC)
    r = run(tmp_path, "reduce", "--to", "6", "--dry-run", env=env)
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert "3 must stop consuming" in out
    assert "no user needs to stop consuming" not in out  # the contradiction of issue 14
    assert out.count("NOT POSSIBLE") == 1 and out.count("within grace period") == 1
    r = run(tmp_path, "reduce", "--to", "6", "--dry-run", "--json", env=env)
    assert r.returncode == 1
    body = json.loads(r.stdout)
    assert "Not enough users" in body["error"] and body["plan"]["feasible"] is False


def test_approve_says_when_it_runs_and_watch_follows_it_to_the_end(deployment, clock, tmp_path):
    api, env = deployment
    r = run(tmp_path, "reduce", "--to", "10", "--yes", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rid = json.loads(r.stdout)["id"]
    r = run(tmp_path, "reductions", "approve", rid, env=env)
    assert r.returncode == 0, r.stderr
    assert "no scheduler is running now" in r.stdout and "every 60 seconds" in r.stdout
    r = run(tmp_path, "reductions", "approve", rid, "--json", env=env)  # approved already
    assert r.returncode == 1
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "reduce",
            "--watch",
            rid,
            "--every",
            "0.2",
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        service = build(api, clock)
        api.agent.reductions = service
        clock.now = datetime.now(UTC)
        Jobs(api.agent).advance_workflows()
        out, err = watch.communicate(timeout=120)
    finally:
        watch.kill()
    assert watch.returncode == 0, err
    assert "approved" in out and "deactivating" in out
    assert out.rstrip().endswith(f"reduction {rid} ended: done")
    ledger = json.loads(run(tmp_path, "ledger", "--json", env=env).stdout)["entries"]
    [change] = [e for e in ledger if e["kind"] == "licenses" and e["seatsAfter"] == 10]
    assert f"reduction {rid}" in change["detail"] and change["cause"] == "reduction"


def test_help_uses_no_seed_numbers(tmp_path):
    for args in (["reduce", "--help"], ["reductions", "--help"], ["users", "--help"]):
        r = run(tmp_path, *args)
        assert r.returncode == 0 and "seed" not in r.stdout.lower()
