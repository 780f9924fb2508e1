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
    # Writable paths come only from StateDirectory= and PrivateTmp=; nothing broader.
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
