"""The shipped systemd units: systemd accepts them, and they keep their hardening.

`systemd-analyze` comes from Debian's `systemd` package. Without it the checks skip with the
reason, except under CI (CI=true), where a skip would hide a broken unit: they fail instead.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, SCIM_TOKEN, LiveServer, free_port

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNITS = ["seat-agent.service", "seat-agent-scheduler.service"]
INSTALLED_BINARY = "/usr/local/bin/seat-agent"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# systemd-analyze security: 0 is fully locked down, 10 is unprotected; "OK" ends at 4.9.
MAX_EXPOSURE = 2.0

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "StateDirectory": "seat-agent",
    "EnvironmentFile": "-/etc/seat-agent/seat-agent.env",
    "User": "seat-agent",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
    "KillMode": "mixed",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
}


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        reason = "systemd-analyze not found (apt-get install systemd)"
        if IN_CI:
            pytest.fail(f"{reason}; CI must not skip the unit checks")
        pytest.skip(reason)
    return path


def service_section(unit: str) -> dict[str, list[str]]:
    """The [Service] keys of a unit, every value of a repeated key kept in order."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in (SYSTEMD / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.fixture
def runnable_units(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart names the seat-agent installed here.

    `systemd-analyze verify` refuses a unit whose ExecStart binary does not exist, and the units
    name /usr/local/bin/seat-agent, the path docs/deployment.md installs to; a test must not
    create files there, so it checks copies that point at this environment's entry point.
    """
    beside_python = Path(sys.executable).parent / "seat-agent"
    binary = str(beside_python) if beside_python.exists() else shutil.which("seat-agent")
    assert binary, "the seat-agent entry point is not installed (pip install -e .)"
    out = []
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text()
        assert f"ExecStart={INSTALLED_BINARY} " in text
        copy = tmp_path / unit
        copy.write_text(text.replace(INSTALLED_BINARY, binary))
        out.append(copy)
    return out


def test_systemd_analyze_verify_accepts_the_units(runnable_units: list[Path]) -> None:
    tool = systemd_analyze()
    result = subprocess.run(
        [tool, "verify", "--man=no", *map(str, runnable_units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown or misspelt keys and only warns ("Unknown key ..., ignoring"),
    # so any output at all is a failure.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_units_exposure_stays_low(unit: str, runnable_units: list[Path]) -> None:
    tool = systemd_analyze()
    copy = next(p for p in runnable_units if p.name == unit)
    result = subprocess.run(
        [
            tool,
            "security",
            "--offline=yes",
            "--no-pager",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            str(copy),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_units_keep_their_hardening(unit: str) -> None:
    service = service_section(unit)
    for key, expected in HARDENING.items():
        assert expected in service.get(key, []), f"{unit}: {key}={expected} missing"
    # Writable paths come only from State/RuntimeDirectory= and PrivateTmp=; nothing broader.
    assert "ReadWritePaths" not in service
    assert "@system-service" in service["SystemCallFilter"]
    command = service["ExecStart"][0].split()
    assert command[0] == INSTALLED_BINARY
    assert command[-2:] == ["--config", "/etc/seat-agent/config.toml"]
    assert command[1] == ("serve" if unit == "seat-agent.service" else "scheduler")


def test_web_unit_waits_for_gunicorn_readiness() -> None:
    # gunicorn's master (the seat-agent process itself) sends READY=1 once it listens.
    assert service_section("seat-agent.service")["Type"] == ["notify"]


def test_environment_file_example_names_every_secret() -> None:
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("[env]\n" + (SYSTEMD / "seat-agent.env").read_text())
    names = set(parser["env"])
    assert {"SEAT_AGENT_SCIM_TOKEN", "SEAT_AGENT_ADMIN_TOKEN", "SEAT_AGENT_SMTP_PASSWORD"} <= names
    from agent.config import AlertSettings, AuthSettings

    auth = AuthSettings()
    assert auth.scim_token_env in names and auth.admin_token_env in names
    assert AlertSettings().password_env in names


def test_web_unit_reloads_through_seat_agent_reload() -> None:
    service = service_section("seat-agent.service")
    assert service["ExecReload"] == [
        f"{INSTALLED_BINARY} reload --config /etc/seat-agent/config.toml --pid $MAINPID"
    ]
    assert service["RuntimeDirectory"] == ["seat-agent"]
    assert service["RuntimeDirectoryMode"] == ["0700"]


# -- `seat-agent serve` as systemd runs it: reload and scheduler supervision -----------------


def _serve_config(path: Path, port: int, db: Path, auth: list[str], scheduler: list[str]) -> None:
    path.write_text(
        "\n".join(
            [
                "[server]",
                'host = "127.0.0.1"',
                f"port = {port}",
                "workers = 2",
                "[database]",
                f'url = "sqlite:///{db}"',
                "[auth]",
                f'scim_token = "{SCIM_TOKEN}"',
                f'admin_token = "{ADMIN_TOKEN}"',
                *auth,
                "[scheduler]",
                *scheduler,
            ]
        )
        + "\n"
    )


def _scim_status(url: str, token: str) -> int:
    import requests

    return requests.get(
        url + "/scim/v2/Users", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).status_code


@pytest.mark.slow
def test_sighup_reloads_the_tokens_without_refusing_a_connection(tmp_path: Path) -> None:
    """What `systemctl reload seat-agent` does: a token added to config.toml works after
    SIGHUP, while a client connecting all along is never refused."""
    import signal
    import threading
    import time

    import requests

    port = free_port()
    config = tmp_path / "server.toml"
    db = tmp_path / "seat-agent.db"
    _serve_config(config, port, db, [], ["embedded = false"])
    server = LiveServer(config, port, tmp_path / "server.log")
    failures: list[str] = []
    answered = [0]
    done = threading.Event()

    def knock() -> None:  # a new connection every time: refusals would show here
        while not done.is_set():
            try:
                r = requests.get(
                    server.url + "/healthz", headers={"Connection": "close"}, timeout=10
                )
                if r.status_code != 200:
                    failures.append(f"HTTP {r.status_code}")
                answered[0] += 1
            except requests.RequestException as err:
                failures.append(repr(err))

    knocker = threading.Thread(target=knock)
    knocker.start()
    try:
        assert _scim_status(server.url, "rotated-token") == 401
        _serve_config(config, port, db, ['scim_tokens = ["rotated-token"]'], ["embedded = false"])
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while _scim_status(server.url, "rotated-token") != 200:
            assert time.monotonic() < deadline, "the new token never started working"
            time.sleep(0.2)
        assert _scim_status(server.url, SCIM_TOKEN) == 200  # the old one still works

        # A broken file is refused on reload: the running configuration stays.
        config.write_text("[server\n")
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reload refused" not in (tmp_path / "server.log").read_text():
            assert time.monotonic() < deadline, "the bad configuration was not reported"
            time.sleep(0.2)
        assert server.proc.poll() is None
        assert _scim_status(server.url, "rotated-token") == 200
    finally:
        done.set()
        knocker.join(timeout=30)
        server.stop()
    assert failures == []
    assert answered[0] > 0
    assert "configuration reloaded" in (tmp_path / "server.log").read_text()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def lease_holder(db_url: str) -> str | None:
    from datetime import UTC, datetime

    from agent.jobs.lease import SCHEDULER_LEASE
    from agent.storage import outbox
    from agent.storage.store import Store

    store = Store.from_url(db_url)
    try:
        with store.read() as tx:
            return outbox.lease_holder(tx, SCHEDULER_LEASE, datetime.now(UTC))
    finally:
        store.dispose()


def holder_pid(holder: str) -> int:
    return int(holder.rsplit(":", 2)[1])  # hostname:pid:random (agent.jobs.lease)


def wait_for_holder(db_url: str, accept, timeout: float = 60) -> str:
    import time

    deadline = time.monotonic() + timeout
    while True:
        holder = lease_holder(db_url)
        if holder is not None and accept(holder):
            return holder
        assert time.monotonic() < deadline, f"no scheduler took the lease (holder {holder})"
        time.sleep(0.3)


@pytest.mark.slow
def test_a_killed_embedded_scheduler_is_restarted_and_takes_the_lease(tmp_path: Path) -> None:
    import signal

    port = free_port()
    config = tmp_path / "server.toml"
    db = tmp_path / "seat-agent.db"
    _serve_config(config, port, db, [], ["embedded = true", "lease_seconds = 5"])
    server = LiveServer(config, port, tmp_path / "server.log")
    url = f"sqlite:///{db}"
    try:
        first = wait_for_holder(url, lambda h: True)
        pid = holder_pid(first)
        assert pid in _children(server.proc.pid)  # beside the master, not in a worker
        os.kill(pid, signal.SIGKILL)
        second = wait_for_holder(url, lambda h: h != first)
        assert holder_pid(second) != pid
        assert holder_pid(second) in _children(server.proc.pid)
        assert server.proc.poll() is None
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert f"embedded scheduler (pid {pid}) exited" in log


class _FakeProc:
    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self.terminated = False

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.terminated = True


def test_scheduler_supervisor_restarts_with_backoff_and_resets_once_stable() -> None:
    from agent.web.server import SchedulerSupervisor

    now = [100.0]
    spawned: list[_FakeProc] = []

    def spawn(_command: list[str]) -> _FakeProc:
        spawned.append(_FakeProc(len(spawned) + 1))
        return spawned[-1]

    sup = SchedulerSupervisor(["seat-agent", "scheduler"], clock=lambda: now[0], spawn=spawn)  # type: ignore[arg-type]
    sup.start()
    delays = []
    for _ in range(8):  # dies at once, every time
        spawned[-1].returncode = -9
        sup.check()
        assert sup.restart_at is not None
        delays.append(sup.restart_at - now[0])
        sup.check()
        assert len(spawned) == len(delays)  # not before the delay
        now[0] = sup.restart_at
        sup.check()
        assert len(spawned) == len(delays) + 1
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    now[0] += SchedulerSupervisor.STABLE_SECONDS  # this one ran long enough
    spawned[-1].returncode = 1
    sup.check()
    assert sup.restart_at == now[0] + 1

    # A reload replaces a running scheduler at once once it has exited; stop ends supervision.
    now[0] = sup.restart_at
    sup.check()
    running = spawned[-1]
    sup.replace()
    assert running.terminated
    running.returncode = 0
    sup.check()
    assert spawned[-1] is not running and sup.restart_at is None
    sup.stopping = True
    spawned[-1].returncode = 0
    sup.check()
    assert spawned[-1].pid == len(spawned)
    count = len(spawned)
    sup.check()
    assert len(spawned) == count


@pytest.mark.slow
def test_reload_takes_over_tokens_changed_in_the_environment_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As systemd does it: the service started with the EnvironmentFile's token; the file is
    edited and ExecReload (`seat-agent reload`, run with the new environment) hands the new
    token to the running master. The old token stops working, the new one works, and neither
    is ever logged."""
    import time

    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run))
    monkeypatch.setenv("SEAT_AGENT_SCIM_TOKEN", "from-env-file-v1")
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text(
        "\n".join(
            [
                "[server]",
                f"port = {port}",
                "workers = 2",
                "[database]",
                f'url = "sqlite:///{tmp_path}/seat-agent.db"',
                "[auth]",
                f'admin_token = "{ADMIN_TOKEN}"',
                "[scheduler]",
                "embedded = false",
            ]
        )
        + "\n"
    )
    server = LiveServer(config, port, tmp_path / "server.log")
    try:
        assert _scim_status(server.url, "from-env-file-v1") == 200
        assert _scim_status(server.url, "from-env-file-v2") == 401
        env = {**os.environ, "SEAT_AGENT_SCIM_TOKEN": "from-env-file-v2"}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "reload",
                "--config",
                str(config),
                "--pid",
                str(server.proc.pid),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 30
        while (
            _scim_status(server.url, "from-env-file-v2") != 200
            or _scim_status(server.url, "from-env-file-v1") != 401
        ):
            assert time.monotonic() < deadline, "the new environment was not taken over"
            time.sleep(0.2)
        assert list(run.iterdir()) == []  # the handoff file is gone
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "SEAT_AGENT_SCIM_TOKEN" in log  # named as taken over ...
    assert "from-env-file-v1" not in log and "from-env-file-v2" not in log  # ... never shown


def test_reload_command_refuses_a_broken_configuration(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agent.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    target = subprocess.Popen(["sleep", "60"])  # would die of a SIGHUP
    try:
        result = CliRunner().invoke(
            main, ["reload", "--config", str(bad), "--pid", str(target.pid)]
        )
        assert result.exit_code != 0
        assert "not valid TOML" in result.output
        assert target.poll() is None  # no signal was sent
    finally:
        target.kill()
        target.wait()
