"""The operator's command line through a real process in a temporary folder (issue 14): it never
invents a database, config errors are one line naming the key, users are found by name."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config

REPO = Path(__file__).resolve().parent.parent


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SEAT_AGENT_")}
    environ["PYTHONPATH"] = str(REPO)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.skipif(Path("/etc/seat-agent/config.toml").exists(), reason="a system config")
def test_without_a_configuration_the_cli_creates_no_database(tmp_path):
    for args in (["seats"], ["licenses", "set", "20"], ["users"], ["refusals"]):
        r = run(tmp_path, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        line = one_line(r.stderr)
        assert "--config" in line and "SEAT_AGENT_CONFIG" in line
        assert "/etc/seat-agent/config.toml" in line and str(tmp_path) in line
        assert r.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no ./seat-agent.db was invented


def test_a_configured_database_that_does_not_exist_is_not_created(tmp_path):
    config = tmp_path / "agent.toml"
    database = tmp_path / "data.db"
    write_config(config, f"sqlite:///{database}", 8080, seats=10)
    r = run(tmp_path, "seats", "--config", str(config))
    assert r.returncode == 2
    assert "[database] url" in one_line(r.stderr) and "db upgrade" in r.stderr
    assert not database.exists()
    # SEAT_AGENT_CONFIG is the second place looked at; db upgrade creates the database
    r = run(tmp_path, "db", "upgrade", env={"SEAT_AGENT_CONFIG": str(config)})
    assert r.returncode == 0, r.stderr
    r = run(tmp_path, "seats", "--json", env={"SEAT_AGENT_CONFIG": str(config)})
    assert r.returncode == 0 and json.loads(r.stdout)["licensed"] == 10


def test_an_existing_working_folder_database_is_used(tmp_path):
    assert run(tmp_path, "db", "upgrade").returncode == 0  # the embedded default
    assert (tmp_path / "seat-agent.db").exists()
    r = run(tmp_path, "seats", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["licensed"] == 10


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sqlite:////nonexistent-seat-agent-dir/seat-agent.db", "does not exist"),
        ("not a url", "is not a database URL"),
        ("postgresql://seat:secret@127.0.0.1:1/none", "cannot open it"),
    ],
)
def test_every_database_config_error_is_one_line_naming_the_key(tmp_path, url, words):
    config = tmp_path / "agent.toml"
    write_config(config, url, 8080)
    for args in (["serve"], ["db", "upgrade"], ["seats"]):
        r = run(tmp_path, *args, "--config", str(config))
        assert r.returncode == 2, (args, r.stderr)
        line = one_line(r.stderr)
        assert "[database] url" in line and words in line
        assert "secret" not in line and "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_database_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    config = tmp_path / "agent.toml"
    write_config(config, f"sqlite:///{folder}/x.db", 8080)
    r = run(tmp_path, "db", "upgrade", "--config", str(config))
    assert r.returncode == 2 and "not writable" in one_line(r.stderr)


def test_the_example_config_fails_in_one_line_not_a_traceback(tmp_path):
    if Path("/var/lib/seat-agent").is_dir():
        pytest.skip("the example's data folder exists on this machine")
    r = run(tmp_path, "serve", "--config", str(REPO / "config.example.toml"))
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "/var/lib/seat-agent" in line and "[database] url" in line


def test_init_writes_a_config_and_data_folder_and_prints_the_tokens_once(tmp_path):
    r = run(tmp_path, "init", "--dir", "deploy")
    assert r.returncode == 0, r.stderr
    config = tmp_path / "deploy" / "config.toml"
    data = tmp_path / "deploy" / "data"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    tokens = [line.rsplit(": ", 1)[1] for line in r.stdout.splitlines() if "token (" in line]
    assert len(tokens) == 2
    text = config.read_text()
    assert all(t not in text for t in tokens)  # only digests are kept
    env = {"SEAT_AGENT_CONFIG": str(config)}
    assert run(tmp_path, "db", "upgrade", env=env).returncode == 0
    assert list(data.iterdir()) != []
    # the SCIM token it printed is accepted
    from agent.app import create_app
    from agent.config import load_settings

    app = create_app(load_settings(config))
    try:
        client = app.test_client()
        ok = client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {tokens[0]}"})
        assert ok.status_code == 200
        admin = client.get("/admin/seats", headers={"Authorization": f"Bearer {tokens[1]}"})
        assert admin.status_code == 200
    finally:
        app.extensions["seat_agent"].store.dispose()
    again = run(tmp_path, "init", "--dir", "deploy")
    assert again.returncode == 2 and "already exists" in one_line(again.stderr)


@pytest.fixture
def populated(tmp_path) -> tuple[Path, dict[str, str]]:
    config = tmp_path / "agent.toml"
    write_config(config, f"sqlite:///{tmp_path}/s.db", 8080, seats=1, on_full="refuse")
    env = {"SEAT_AGENT_CONFIG": str(config)}
    assert run(tmp_path, "db", "upgrade", env=env).returncode == 0
    from agent.bootstrap import build_agent
    from agent.config import load_settings
    from agent.services.provisioning import SeatRefusedError

    agent = build_agent(load_settings(config))
    try:
        agent.provisioning.create_user(
            {"userName": "alice@example.com", "externalId": "00u-a", "active": True}
        )
        agent.provisioning.create_user({"userName": "bob@example.com", "active": False})
        with pytest.raises(SeatRefusedError):
            agent.provisioning.create_user({"userName": "carol@example.com", "active": True})
    finally:
        agent.store.dispose()
    return tmp_path, env


def test_users_finds_by_state_and_search_and_exports_csv(populated):
    cwd, env = populated
    r = run(cwd, "users", "--json", env=env)
    assert [u["userName"] for u in json.loads(r.stdout)["users"]] == [
        "alice@example.com",
        "bob@example.com",
    ]
    r = run(cwd, "users", "--state", "inactive", env=env)
    assert "bob@example.com" in r.stdout and "alice" not in r.stdout
    r = run(cwd, "users", "--search", "00U-A", "--json", env=env)
    assert [u["userName"] for u in json.loads(r.stdout)["users"]] == ["alice@example.com"]
    r = run(cwd, "users", "--csv", env=env)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["userName"] for row in rows] == ["alice@example.com"]  # the billable users
    assert rows[0]["seatSince"] and rows[0]["lastActivity"]
    r = run(cwd, "users", "--state", "billed", "--json", env=env)
    assert r.returncode == 2 and "--state" in json.loads(r.stdout)["error"]


def test_user_accepts_a_user_name_or_external_id(populated):
    cwd, env = populated
    for key in ("alice@example.com", "ALICE@example.com", "00u-a"):
        r = run(cwd, "user", key, "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["userName"] == "alice@example.com"
    r = run(cwd, "user", "nobody", env=env)
    assert r.returncode == 1 and "nobody" in r.stderr


def test_refusals_lists_refused_demand(populated):
    cwd, env = populated
    r = run(cwd, "refusals", "--json", env=env)
    [row] = json.loads(r.stdout)["refusals"]
    assert (row["userName"], row["outcome"], row["consumed"], row["licensed"]) == (
        "carol@example.com",
        "refused",
        1,
        1,
    )
    human = run(cwd, "refusals", env=env).stdout
    assert "carol@example.com" in human and "refused: 1 in all" in human


def test_an_unsupported_database_or_a_binary_config_is_one_line_exit_2(tmp_path):
    mysql = tmp_path / "mysql.toml"
    mysql.write_text('[database]\nurl = "mysql://u:secret@db/x"\n')
    r = run(tmp_path, "seats", "--config", str(mysql))
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "database.url" in line and "SQLite" in line and "secret" not in line

    binary = tmp_path / "seat-agent.db"
    binary.write_bytes(b"SQLite format 3\x00\xfb\xff" * 8)
    r = run(tmp_path, "seats", "--config", str(binary))
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "not a text (TOML) file" in line


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["seats", "--bogus"], "No such option '--bogus'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["licenses", "set", "abc"], "COUNT"),
        (["ledger", "--limit", "0"], "--limit"),
        (["reduce"], "--to"),
        (["users", "--state", "sleeping"], "--state"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(tmp_path, args, said):
    """Whatever click itself refuses (an unknown option or command, a missing or bad
    argument) reads like the commands' own refusals: one line naming the command and its
    --help, exit 2, nothing on stdout; with --json, {"error": ...} on stdout instead."""
    config = tmp_path / "agent.toml"
    write_config(config, f"sqlite:///{tmp_path}/data.db", 8080, seats=10)
    assert run(tmp_path, "db", "upgrade", "--config", str(config)).returncode == 0
    r = run(tmp_path, *args, "--config", str(config))
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = one_line(r.stderr)
    assert said in line and "--help" in line and "Usage:" not in line
    assert r.stdout == ""
    if args[0] != "nosuch":
        as_json = run(tmp_path, *args, "--json", "--config", str(config))
        assert as_json.returncode == 2
        assert said in json.loads(as_json.stdout)["error"]
        assert as_json.stderr == ""
    helped = run(tmp_path, *([] if args[0] == "nosuch" else [args[0]]), "--help")
    assert helped.returncode == 0 and "Usage:" in helped.stdout


def test_a_refusal_is_one_line_too(tmp_path):
    """A command's own refusal (exit 1) reads like the rest: "seat-agent: ...", one line."""
    config = tmp_path / "agent.toml"
    write_config(config, f"sqlite:///{tmp_path}/data.db", 8080, seats=10)
    assert run(tmp_path, "db", "upgrade", "--config", str(config)).returncode == 0
    r = run(tmp_path, "user", "nobody", "--config", str(config))
    assert r.returncode == 1
    assert one_line(r.stderr).startswith("seat-agent: no user with id, userName or externalId")
