"""``seat-agent downstream check``: what the agent learned about the application, the mapping
it will use, and a dry run of one user's push, so an admin can see before go-live whether the
application will accept what seat-agent sends. Nothing is written to the application."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from agent.cli_support import CONFIG_OPTION, JSON_OPTION, _settings, terminal_safe
from agent.connectors import EffectiveUser, build_connector

SAMPLE = EffectiveUser(
    user_id="seat-agent-downstream-check",
    user_name="seat-agent-check@example.invalid",
    active=True,
    app_status="Active",
    role=None,
    display_name="seat-agent check",
    emails=[{"value": "seat-agent-check@example.invalid", "type": "work", "primary": True}],
)


def _sample(role: str | None, status: str | None, active: bool = True) -> EffectiveUser:
    return EffectiveUser(
        user_id=SAMPLE.user_id,
        user_name=SAMPLE.user_name,
        active=active,
        app_status=status or SAMPLE.app_status,
        role=role,
        display_name=SAMPLE.display_name,
        emails=SAMPLE.emails,
    )


def _shown(value: Any) -> str:
    """A value as an admin reads it: yes/no, comma-separated lists."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    if value is None:
        return "none"
    return str(value)


def _human(facts: dict[str, Any], dry: dict[str, Any] | None) -> str:
    lines = [f"application: {facts.get('type')} at {facts.get('url')}"]
    lines.append(f"reachable:   {'yes' if facts.get('reachable') else 'no'}")
    if facts.get("error"):
        lines.append(f"problem:     {facts['error']}")
    app = facts.get("app") or {}
    if app:
        lines.append(
            f"declares:    patch {'yes' if app.get('patch') else 'no'},"
            f" filter {'yes' if app.get('filter') else 'no'},"
            f" page size at most {app.get('maxResults') or 'not stated'},"
            f" groups {app.get('groupsEndpoint') or 'no'}"
        )
        lines.append(f"User:        {', '.join(app.get('userAttributes') or [])}")
        for urn, attrs in (app.get("extensions") or {}).items():
            lines.append(f"extension:   {urn}: {', '.join(attrs)}")
        if not app.get("schemasPublished"):
            lines.append("note:        no /Schemas published: RFC 7643's User is assumed")
    for key in ("update", "lookup"):
        if key in facts:
            lines.append(f"{key + ':':<13}{facts[key]}")
    mapping = facts.get("mapping") or {}
    if mapping:
        lines.append(f"role goes to:   {mapping.get('role') or 'not sent'}")
        lines.append(f"status goes to: {mapping.get('status') or 'not sent'}")
    other = {
        k: v
        for k, v in facts.items()
        if k not in ("type", "url", "reachable", "error", "app", "update", "lookup", "mapping")
    }
    for key, value in other.items():
        lines.append(f"{key}: {_shown(value)}")
    if dry is not None:
        lines.append("dry run (nothing sent):")
        for request in dry.get("requests") or []:
            lines.append(f"  {request['method']} {request['url']}")
            body = json.dumps(request.get("body"), indent=2, ensure_ascii=False)
            lines.extend("    " + line for line in body.splitlines())
        for problem in dry.get("problems") or []:
            lines.append(f"  REFUSED: {problem}")
        if not dry.get("problems"):
            lines.append(
                "  the application declares everything this push sends"
                if facts.get("type") == "scim"
                else "  no problem found"
            )
    return "\n".join(lines)


def register(main: click.Group) -> None:
    @main.group()
    def downstream() -> None:
        """The application seat-agent delivers changes to."""

    @downstream.command("check")
    @CONFIG_OPTION
    @JSON_OPTION
    @click.option("--role", default=None, help="Role of the sample user in the dry run.")
    @click.option("--status", default=None, help="App status of the sample user (Active).")
    @click.option(
        "--inactive", is_flag=True, help="Dry-run the push of a deactivated user (active false)."
    )
    def check(
        config_path: str | None,
        as_json: bool,
        role: str | None,
        status: str | None,
        inactive: bool,
    ) -> None:
        """Read the application's self-description and dry-run one user's push.

        Exit 0 when the application answers and would accept the push, 1 when it cannot be
        read or would refuse something (each problem named), 2 on a bad configuration."""
        settings = _settings(config_path)
        connector = build_connector(settings.downstream)
        if connector is None:
            message = (
                "no downstream application is configured: set [downstream] type and url"
                " in the configuration file"
            )
            if as_json:
                click.echo(json.dumps({"error": message}))
            click.echo(f"seat-agent: {message}", err=True)
            sys.exit(2)
        try:
            facts = connector.describe()
            sample = _sample(role, status, active=not inactive)
            dry = connector.dry_run(sample) if facts.get("reachable") else None
        finally:
            close = getattr(connector, "close", None)
            if close is not None:
                close()
        ds = settings.downstream
        if ds.type in ("scim", "kintone") and ds.resolved_token() is None:
            facts["token"] = (
                f"not set: [downstream] token is empty and so is the environment variable"
                f" {ds.token_env}"
            )
        ok = bool(facts.get("reachable")) and not facts.get("error")
        ok = ok and dry is not None and not dry.get("problems")
        if as_json:
            click.echo(json.dumps({"ok": ok, "application": facts, "dryRun": dry}, indent=2))
        else:
            click.echo(terminal_safe(_human(facts, dry)))
        sys.exit(0 if ok else 1)


def mapping_problem_at_start(settings: Any) -> str | None:
    """At ``serve``: read the application once. A mapping onto an attribute the application
    does not declare is returned (the caller exits 2); an application that cannot be read is
    only reported: delivery waits and retries, reconcile reads it again."""
    from agent.connectors.base import DeliveryError
    from agent.connectors.scim_app import MappingError

    connector = build_connector(settings.downstream)
    refresh = getattr(connector, "refresh", None)
    if refresh is None:
        return None
    ds = settings.downstream
    if ds.resolved_token() is None:
        click.echo(
            f"seat-agent: [downstream] token is empty and so is the environment variable"
            f" {ds.token_env}: requests to the application carry no token",
            err=True,
        )
    try:
        refresh()
    except MappingError as err:
        return str(err)
    except DeliveryError as err:
        click.echo(
            f"seat-agent: the application could not be read yet ({err}); changes wait in the"
            " outbox and are retried",
            err=True,
        )
    finally:
        close = getattr(connector, "close", None)
        if close is not None:
            close()
    return None
