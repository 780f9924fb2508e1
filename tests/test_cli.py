"""The command line: operator commands mirror the admin API; serve runs the embedded default."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner
from conftest import ADMIN_TOKEN, SCIM_TOKEN, free_port, write_config

from agent.cli import main


class Cli:
    def __init__(self, config):
        self.config = config
        # Only `serve` and `db upgrade` create a database: the seat commands need one.
        created = CliRunner().invoke(main, ["db", "upgrade", "--config", str(config)])
        assert created.exit_code == 0, created.output

    def __call__(self, *args: str):
        return CliRunner().invoke(main, [*args, "--config", str(self.config)])

    def create_users(self, names):
        from agent.bootstrap import build_agent
        from agent.config import load_settings

        agent = build_agent(load_settings(self.config))
        for n in names:
            agent.provisioning.create_user({"userName": n, "active": True})
        agent.store.dispose()


@pytest.fixture
def cli(db_url, tmp_path) -> Cli:
    config = tmp_path / "agent.toml"
    write_config(config, db_url, 8080, seats=2, on_full="queue")
    return Cli(config)


def test_seats_queue_licenses_ledger_billing(cli):
    assert cli("db", "upgrade").exit_code == 0
    cli.create_users(["a", "b", "c"])
    r = cli("seats")
    assert r.exit_code == 0, r.output
    assert "licensed" in r.output and "queued" in r.output
    data = json.loads(cli("seats", "--json").output)
    assert (data["licensed"], data["consumed"], data["queued"]) == (2, 2, 1)

    r = cli("queue")
    assert "c" in r.output.split() and "userName" in r.output
    assert json.loads(cli("queue", "--json").output)["queued"][0]["userName"] == "c"

    r = cli("licenses", "set", "1")
    assert r.exit_code == 1
    assert "consume" in r.output
    r = cli("licenses", "set", "3")
    assert r.exit_code == 0, r.output
    assert "promoted from queue: c" in r.output
    assert json.loads(cli("seats", "--json").output)["queued"] == 0

    entries = json.loads(cli("ledger", "--json").output)["entries"]
    assert [e["kind"] for e in entries].count("promote") == 1
    assert "kind" in cli("ledger").output
    billing = json.loads(cli("billing", "--json").output)
    assert billing["seats_held"] == 3


def test_user_shows_one_users_seat_state(cli):
    assert cli("db", "upgrade").exit_code == 0
    cli.create_users(["a", "b", "c"])  # 2 seats, on_full = queue: c waits
    queued = json.loads(cli("queue", "--json").output)["queued"][0]
    data = json.loads(cli("user", queued["id"], "--json").output)
    assert (data["userName"], data["licenseState"], data["queuePosition"]) == ("c", "queued", 1)
    assert data["holdsSeat"] is False and data["active"] is True
    r = cli("user", queued["id"])
    assert r.exit_code == 0 and "licenseState" in r.output and "queued" in r.output
    r = cli("user", "no-such-user")
    assert r.exit_code == 1 and "no user with id, userName or externalId 'no-such-user'" in r.output
    r = cli("user", "no-such-user", "--json")
    assert r.exit_code == 1 and "no-such-user" in json.loads(r.output)["error"]


def test_cli_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[license]\non_full = 'panic'\n")
    r = CliRunner().invoke(main, ["seats", "--config", str(bad)])
    assert r.exit_code != 0
    assert "license.on_full" in r.output


@pytest.mark.slow
def test_serve_embedded_default_generates_tokens_once(tmp_path):
    """No --config: SQLite in the working directory, tokens generated once."""
    port = free_port()

    def start():
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )

    def wait_ready(proc):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        proc.kill()
        raise AssertionError(proc.stdout.read().decode())

    proc = start()
    wait_ready(proc)
    proc.terminate()
    out = proc.communicate(timeout=20)[0].decode()
    assert (tmp_path / "seat-agent.db").exists()
    # stdout is a pipe, not a terminal: the tokens are in a 0600 file, only its path is logged.
    tokens_file = tmp_path / "seat-agent-generated-tokens.env"
    assert str(tokens_file) in out and tokens_file.stat().st_mode & 0o777 == 0o600
    token = next(
        line.split("=", 1)[1]
        for line in tokens_file.read_text().splitlines()
        if line.startswith("SEAT_AGENT_SCIM_TOKEN=")
    )
    assert token not in out
    assert SCIM_TOKEN not in out and ADMIN_TOKEN not in out

    proc = start()
    wait_ready(proc)
    r = requests.get(
        f"http://127.0.0.1:{port}/scim/v2/Users", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200
    assert r.json()["totalResults"] == 0
    proc.terminate()
    out = proc.communicate(timeout=20)[0].decode()
    assert "Generated" not in out
    assert token not in out  # never logged


def test_reconcile_and_status_commands(cli):
    from sqlalchemy import update

    from agent.bootstrap import build_agent
    from agent.config import load_settings
    from agent.storage.tables import seat_pool

    cli.create_users(["a", "b"])
    agent = build_agent(load_settings(cli.config))
    with agent.store.write() as tx:
        tx.conn.execute(update(seat_pool).values(consumed=5))
    agent.store.dispose()

    r = cli("reconcile", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "consumed counter: 5 -> 2" in r.output
    assert "dry run: nothing was changed" in r.output
    assert json.loads(cli("seats", "--json").output)["consumed"] == 5

    assert "no application is set up to compare with" in r.output
    assert "downstream drift" not in r.output  # nothing was compared: no count to show

    data = json.loads(_json_tail(cli("reconcile", "--json").output))
    assert data["counter_before"] == 5 and data["counter_after"] == 2
    assert data["downstream_note"].startswith("no application is set up")
    assert json.loads(cli("seats", "--json").output)["consumed"] == 2

    status = json.loads(cli("status", "--json").output)
    assert status["last_reconcile"] is not None
    assert status["seats"]["consumed"] == 2
    assert status["scheduler"] is None  # none running
    assert "none running" in cli("status").output


def _json_tail(output: str) -> str:
    """The JSON document printed after the progress bar (which goes to stderr)."""
    return output[output.index("{") :]


def _no_traceback(r) -> None:
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("count", ["10000000000000000000000", "1000001", "abc", "1.5", "-5"])
def test_licenses_set_bad_count_is_a_clear_error(cli, count):
    assert cli("db", "upgrade").exit_code == 0
    r = cli("licenses", "set", count, "--json")
    _no_traceback(r)
    assert r.exit_code == 2
    assert "COUNT" in json.loads(r.output)["error"]
    r = cli("licenses", "set", count)
    _no_traceback(r)
    assert r.exit_code == 2 and "COUNT" in r.output
    assert json.loads(cli("seats", "--json").output)["licensed"] == 2  # nothing changed


def test_licenses_set_refusal_keeps_allowed_from_in_json(db_url, tmp_path):
    config = tmp_path / "agent.toml"
    write_config(config, db_url, 8080, seats=5, decrease="renewal", renewal_date="2099-01-01")
    cli = Cli(config)
    r = cli("licenses", "set", "3", "--json")
    assert r.exit_code == 1
    body = json.loads(r.output)
    assert body["allowed_from"] == "2098-12-02"
    assert "renewal" in body["error"]
    assert "2098-12-02" in cli("licenses", "set", "3").output
    assert json.loads(cli("seats", "--json").output)["licensed"] == 5


def test_licenses_set_manual_decrease_is_recorded_with_vendor_steps(db_url, tmp_path):
    config = tmp_path / "agent.toml"
    write_config(config, db_url, 8080, seats=5, decrease="manual")
    cli = Cli(config)
    r = cli("licenses", "set", "3")
    assert r.exit_code == 0, r.output
    assert "Recorded a decrease from 5 to 3 licenses made at the vendor" in r.output
    assert "At the vendor" in r.output
    data = json.loads(cli("licenses", "set", "2", "--json").output)
    assert (data["change"], data["previous"], data["seats"]) == ("recorded", 3, 2)
    assert data["vendor_steps"] and "vendor" in data["vendor_steps"][0]
    assert json.loads(cli("seats", "--json").output)["licensed"] == 2


def test_ledger_bad_limit_is_a_clear_error(cli):
    assert cli("db", "upgrade").exit_code == 0
    for limit in ["0", "100000000000000000000", "x"]:
        r = cli("ledger", "--limit", limit, "--json")
        _no_traceback(r)
        assert r.exit_code == 2 and "--limit" in json.loads(r.output)["error"]
    r = cli("ledger", "--since", "yesterday", "--json")
    assert r.exit_code == 2 and "--since" in json.loads(r.output)["error"]


def test_ledger_without_since_shows_the_newest_entries_in_time_order(cli):
    cli.create_users(["a", "b", "c"])  # initial licenses, 2 grants, 1 queue
    entries = json.loads(cli("ledger", "--limit", "2", "--json").output)["entries"]
    assert [(e["kind"], e["userName"]) for e in entries] == [("grant", "b"), ("queue", "c")]


def test_directory_text_cannot_drive_the_operators_terminal(cli):
    """A userName from the directory with an escape sequence, a carriage return, a newline or
    a bidirectional override is shown escaped in the CLI's tables and text, so it cannot
    recolour the screen, overwrite a line or break a row; --json keeps the text as stored."""
    hostile = "eve\x1b[31m\r\n\u202eevil@example.com"
    cli.create_users(["alice@example.com", "bob@example.com", hostile])  # 2 seats: eve queued
    for args in (["users"], ["queue"], ["user", hostile], ["ledger"]):
        r = cli(*args)
        assert r.exit_code == 0, (args, r.output)
        for raw in ("\x1b", "\r", "\u202e"):
            assert raw not in r.output, args
        if args[0] != "ledger":  # the ledger entry of a queued user names no seat change
            assert "eve\\x1b[31m\\r\\n\\u202eevil@example.com" in r.output, args
    rows = cli("users").output.strip().splitlines()
    assert len(rows) == 2 + 3  # header, rule, one line per user
    stored = json.loads(cli("users", "--json").output)["users"]
    assert hostile in [u["userName"] for u in stored]
