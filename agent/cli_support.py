"""Shared pieces of the command line: options, the agent for a config, table output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from agent.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from agent.bootstrap import Agent

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="SEAT_AGENT_CONFIG",
    help="TOML configuration file (default: embedded SQLite default).",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def _settings(config_path: str | None) -> Settings:
    try:
        return load_settings(config_path)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


@contextmanager
def _agent(config_path: str | None) -> Iterator[Agent]:
    from agent.bootstrap import build_agent

    agent = build_agent(_settings(config_path))
    try:
        yield agent
    finally:
        agent.store.dispose()


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _emit(data: Any, as_json: bool, human: str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(human)
