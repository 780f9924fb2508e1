"""Operator commands for finding users and refused demand, and for a first installation:
``seat-agent users``, ``seat-agent refusals`` and ``seat-agent init``.

``users`` and ``refusals`` give what ``GET /admin/users`` and ``GET /admin/refusals`` give (the
same services, the same rows); ``register(main)`` adds the commands to the ``seat-agent`` group.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import click

from agent.cli_support import (
    CONFIG_OPTION,
    JSON_OPTION,
    ConfigProblem,
    _agent,
    _emit,
    _table,
    limit_argument,
    since_argument,
    usage_error,
)

STATES = ("licensed", "queued", "free", "inactive")


def register(main: click.Group) -> None:
    @main.command()
    @CONFIG_OPTION
    @JSON_OPTION
    @click.option(
        "--state", default=None, help="licensed, queued, free or inactive (default: every user)."
    )
    @click.option("--search", default=None, help="Part of a userName, name, email or externalId.")
    @click.option(
        "--csv",
        "as_csv",
        is_flag=True,
        help="CSV of every matching user (no paging); with neither --state nor --search, the"
        " billable users: who holds a seat, since when, last activity.",
    )
    @click.option("--limit", default="100", help="At most this many users (1..1000).")
    @click.option("--cursor", default=None, help="Continue after a previous page (nextCursor).")
    def users(
        config_path: str | None,
        as_json: bool,
        state: str | None,
        search: str | None,
        as_csv: bool,
        limit: str,
        cursor: str | None,
    ) -> None:
        """Find users: by license state and by part of their userName, name, email or
        externalId (what GET /admin/users gives)."""
        from agent.web.admin import MAX_PAGE, billable_csv, directory_user

        if state is not None and state not in STATES:
            usage_error(as_json, f"must be one of: {', '.join(STATES)}", "--state")
            return
        count = limit_argument(as_json, limit, MAX_PAGE)
        if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
            usage_error(as_json, "must be the nextCursor of a previous page", "--cursor")
            return
        with _agent(config_path) as agent:
            if as_csv:
                for chunk in billable_csv(_every_user(agent, state, search)):
                    click.echo(chunk, nl=False)
                return
            found, last = agent.admin.users(
                state=state, text=search, after=int(cursor or 0), limit=count
            )
        rows = [directory_user(e) for e in found]
        data = {"users": rows, "nextCursor": str(last) if last is not None else None}
        human = (
            _table(
                [
                    [
                        u["userName"],
                        u["displayName"],
                        u["email"],
                        u["licenseState"],
                        (u["seatSince"] or "")[:19],
                        (u["lastActivity"] or "")[:19],
                    ]
                    for u in rows
                ],
                ["userName", "name", "email", "license", "seat since", "last activity"],
            )
            if rows
            else "no user matches"
        )
        if last is not None:
            human += f"\n\nmore: --cursor {last}"
        _emit(data, as_json, human)

    @main.command()
    @CONFIG_OPTION
    @JSON_OPTION
    @click.option("--since", default=None, help="ISO 8601 date or time.")
    @click.option("--limit", default="100", help="At most this many (1..1000).")
    def refusals(config_path: str | None, as_json: bool, since: str | None, limit: str) -> None:
        """Refused demand: every activation the full pool refused, queued or put on the
        fallback role, with the path it came in on and the seats at that moment."""
        from agent.services.refusals import refusal_json
        from agent.web.admin import MAX_PAGE

        count = limit_argument(as_json, limit, MAX_PAGE)
        since_dt = since_argument(as_json, since)
        with _agent(config_path) as agent:
            found, last = agent.admin.refusals(since_dt, None, count)
            counts = agent.admin.report()["refused"]
        rows = [refusal_json(r) for r in found]
        data = {"refusals": rows, "nextCursor": str(last) if last is not None else None}
        human = (
            _table(
                [
                    [
                        r["at"][:19],
                        r["outcome"],
                        r["userName"],
                        r["path"],
                        f"{r['consumed']}/{r['licensed']}",
                        r["queued"],
                    ]
                    for r in rows
                ],
                ["at", "outcome", "user", "path", "in use", "queued"],
            )
            if rows
            else "nothing was refused, queued or put on the fallback role"
        )
        human += f"\n\nrefused: {counts['total']} in all, {counts['last_24h']} in the last 24 hours"
        _emit(data, as_json, human)

    @main.command()
    @click.option(
        "--dir",
        "directory",
        default=".",
        type=click.Path(file_okay=False),
        help="Where to write config.toml and make the data folder (default: here).",
    )
    def init(directory: str) -> None:
        """Write a commented config.toml, make its data folder (mode 0700) and print new
        bearer tokens once (only their SHA-256 digests are kept in the file)."""
        from agent.web.auth import digest

        base = Path(directory).resolve()
        config = base / "config.toml"
        if config.exists():
            raise ConfigProblem(f"{config} already exists; not overwritten")
        data = base / "data"
        try:
            base.mkdir(parents=True, exist_ok=True)
            data.mkdir(mode=0o700, exist_ok=True)
            os.chmod(data, 0o700)
        except OSError as err:
            raise ConfigProblem(f"cannot make the data folder {data}: {err.strerror}") from None
        tokens = {"scim": secrets.token_urlsafe(32), "admin": secrets.token_urlsafe(32)}
        text = CONFIG_TEMPLATE.format(
            database=data / "seat-agent.db",
            scim_hash=f"sha256:{digest(tokens['scim'])}",
            admin_hash=f"sha256:{digest(tokens['admin'])}",
            session_secret=secrets.token_urlsafe(32),
        )
        try:
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as err:
            raise ConfigProblem(f"cannot write {config}: {err.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        click.echo(f"wrote {config} (mode 0600) and made {data} (mode 0700)")
        click.echo("Bearer tokens (shown once; only their digests are in the file):")
        click.echo(f"  SCIM token (give it to Okta or Entra): {tokens['scim']}")
        click.echo(f"  admin token (admin API, /metrics, status page): {tokens['admin']}")
        click.echo("Next:")
        click.echo(f"  export SEAT_AGENT_CONFIG={config}")
        click.echo("  seat-agent db upgrade   # creates the database")
        click.echo("  seat-agent serve")


def _every_user(agent: Any, state: str | None, search: str | None) -> Any:
    """Every matching user in pages (memory stays flat); with no filter at all, the billable
    users (seat holders)."""
    if state is None and search is None:
        yield from agent.admin.billable_users()
        return
    after = 0
    while True:
        found, last = agent.admin.users(state=state, text=search, after=after, limit=1000)
        yield from found
        if last is None:
            return
        after = last


CONFIG_TEMPLATE = """\
# seat-agent configuration, written by `seat-agent init`. Every key is described in
# agent/config.py and in config.example.toml; only the ones set here differ from the defaults.

[database]
# SQLite in the data folder `seat-agent init` made (mode 0700). For several hosts use
# PostgreSQL instead: url = "postgresql://seat_agent@db.example.internal/seat_agent"
url = "sqlite:///{database}"

[auth]
# SHA-256 digests of the tokens `seat-agent init` printed (the tokens themselves are not
# stored). Add your own with `seat-agent hash-token`, or set the environment variables
# SEAT_AGENT_SCIM_TOKEN / SEAT_AGENT_ADMIN_TOKEN.
scim_token_hashes = ["{scim_hash}"]
admin_token_hashes = ["{admin_hash}"]
# Signs the status page's login session (admin tokens are only digests here).
session_secret = "{session_secret}"

[license]
seats = 10                 # licenses held at first start; later: `seat-agent licenses set N`
on_full = "refuse"         # refuse | queue | fallback | expand: what a full pool does
"""
