"""Downstream applications (requests). ``build_connector`` turns ``[downstream]`` into one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from agent.config import ConfigError, DownstreamSettings
from agent.connectors.base import Connector, DeliveryError, EffectiveUser, RemoteUser

__all__ = [
    "Connector",
    "DeliveryError",
    "EffectiveUser",
    "RemoteUser",
    "build_connector",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build_connector(
    settings: DownstreamSettings, clock: Callable[[], datetime] = _utcnow
) -> Connector | None:
    """The connector ``[downstream]`` describes; None for ``type = "none"``."""
    if settings.type == "none":
        return None
    if settings.type == "scim":
        from agent.connectors.scim import ScimConnector

        assert settings.url is not None  # DownstreamSettings refuses a scim type without url
        return ScimConnector(
            settings.url,
            settings.resolved_token(),
            settings.timeout_seconds,
            clock=clock,
            role_attribute=settings.role_attribute,
            status_attribute=settings.status_attribute,
            push_groups=settings.push_groups,
        )
    if settings.type == "webhook":
        from agent.connectors.webhook import WebhookConnector

        secret = settings.resolved_secret()
        assert settings.url is not None and secret is not None  # DownstreamSettings checks
        return WebhookConnector(
            settings.url,
            secret,
            settings.timeout_seconds,
            token=settings.resolved_token(),
            count_url=settings.count_url,
            clock=clock,
        )
    if settings.type == "kintone":
        from agent.connectors.kintone import KintoneConnector

        assert settings.url is not None  # DownstreamSettings refuses a kintone type without url
        secret = settings.resolved_token()
        if not secret:
            what = (
                f"the password of login_name {settings.login_name!r}"
                if settings.login_name
                else "a cybozu.com API token"
            )
            raise ConfigError(
                f"downstream: type 'kintone' needs {what} in token or in the environment"
                f" variable {settings.token_env}"
            )
        return KintoneConnector(
            settings.url,
            secret,
            settings.timeout_seconds,
            login_name=settings.login_name,
            role_groups=settings.role_groups,
            on_delete=settings.on_delete,
            clock=clock,
        )
    raise ConfigError(f"downstream: type {settings.type!r} is not supported yet")
