"""The typed settings model: the example file, unknown keys, bad values, environment tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_settings, settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_matches_the_model():
    settings = load_settings(ROOT / "config.example.toml")
    assert settings.license.on_full == "queue"
    assert settings.license.group_roles == {
        "App Admins": "Administrator",
        "App Assistants": "Assistant",
    }
    assert [s.name for s in settings.license.statuses] == ["Locked", "Room", "Invited"]


def test_example_config_sets_every_section_of_the_model():
    import tomllib

    from agent.config import Settings

    data = tomllib.loads((ROOT / "config.example.toml").read_text())
    assert set(data) == set(Settings.model_fields)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"server": {"prot": 1}}, "server.prot: unknown key"),
        ({"servr": {}}, "servr: unknown key"),
        ({"server": {"port": "http"}}, "server.port"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"license": {"on_full": "panic"}}, "license.on_full"),
        ({"license": {"on_full": "expand"}}, "max_seats"),
        ({"license": {"seats": -1}}, "license.seats"),
        ({"license": {"on_full": "fallback", "fallback_role": "Member"}}, "free_roles"),
        ({"license": {"rules": [{"status": "Nope"}]}}, "unknown status"),
        ({"license": {"decrease": "sometimes"}}, "license.decrease"),
    ],
)
def test_bad_config_is_refused_naming_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(data)
    assert key in str(err.value)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_tokens_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MY_SCIM", "from-env")
    settings = settings_from_mapping({"auth": {"scim_token_env": "MY_SCIM"}})
    assert settings.auth.resolved_scim_token() == "from-env"
    settings = settings_from_mapping(
        {"auth": {"scim_token": "in-file", "scim_token_env": "MY_SCIM"}}
    )
    assert settings.auth.resolved_scim_token() == "in-file"
