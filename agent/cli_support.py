"""Shared pieces of the command line: options, finding the configuration and the database,
the agent for a config, table output.

The CLI never invents a database: the seat commands answer from the database the
configuration names, found from ``--config``, then ``$SEAT_AGENT_CONFIG``, then
``/etc/seat-agent/config.toml``, then the working folder's ``seat-agent.db`` only if it
already exists. Only ``serve`` and ``db upgrade`` create a database.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from agent.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from agent.bootstrap import Agent
    from agent.storage.store import Store

SYSTEM_CONFIG = Path("/etc/seat-agent/config.toml")
# The embedded default's database ([database] url = "sqlite:///seat-agent.db").
WORKING_DATABASE = "seat-agent.db"


class ConfigProblem(click.ClickException):
    """A configuration or database that cannot be used: one line on stderr, exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"seat-agent: {self.format_message()}", err=True)


# click 8.2 and later: a group named without a command raises this to show its help.
class _NeverRaised(Exception):
    pass


_NO_ARGS_IS_HELP: type[Exception] = getattr(click.exceptions, "NoArgsIsHelpError", _NeverRaised)


class SeatAgentGroup(click.Group):
    """The ``seat-agent`` group: a usage error (an unknown command or option, a missing or bad
    argument) is one line on stderr naming the command and its ``--help``, exit 2, instead of
    click's usage block; with ``--json`` on the command line it is ``{"error": ...}`` on
    stdout instead, as the commands' own checks give it (``usage_error``)."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(argv, prog_name, complete_var, False, **extra)
        except click.UsageError as err:
            if isinstance(err, _NO_ARGS_IS_HELP):  # a group named alone: its help, as click
                err.show()
                sys.exit(err.exit_code)
            where = err.ctx.command_path if err.ctx is not None else "seat-agent"
            message = err.format_message()
            if "--json" in argv:
                click.echo(json.dumps({"error": message}))
            else:
                click.echo(f"{where}: {message} (see '{where} --help')", err=True)
            sys.exit(2)
        except click.ClickException as err:
            # A refusal (exit 1, or a configuration problem, exit 2): one line, the way the
            # configuration problems always read, not click's "Error: ...".
            click.echo(f"seat-agent: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="SEAT_AGENT_CONFIG",
    help="TOML configuration file (default: $SEAT_AGENT_CONFIG, then"
    " /etc/seat-agent/config.toml, then ./seat-agent.db if it exists).",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def _settings(config_path: str | None, creates_database: bool = False) -> Settings:
    """The settings the command works with (see the module docstring for the search order).

    ``creates_database`` (serve, db upgrade): with no configuration anywhere, the embedded
    default, whose database is created in the working folder.
    """
    path: str | Path | None = config_path
    if path is None and SYSTEM_CONFIG.is_file():
        path = SYSTEM_CONFIG
    if path is None and not creates_database and not Path(WORKING_DATABASE).exists():
        raise ConfigProblem(
            "no configuration found: none given with --config or $SEAT_AGENT_CONFIG, and "
            f"neither {SYSTEM_CONFIG} nor {Path.cwd() / WORKING_DATABASE} exists; "
            "pass --config FILE or create one with `seat-agent init`"
        )
    try:
        return load_settings(path)
    except ConfigError as err:
        raise ConfigProblem(str(err)) from None
    except OSError as err:  # e.g. /etc/seat-agent/config.toml readable only by its group
        raise ConfigProblem(f"cannot read the configuration {path}: {err.strerror}") from None
    except UnicodeDecodeError:  # e.g. --config pointing at the database file
        raise ConfigProblem(
            f"the configuration {path} is not a text (TOML) file; --config names the"
            " configuration file, not the database"
        ) from None


def _database_problem(settings: Settings, creates_database: bool) -> str | None:
    """Why the configured database cannot be used by this command, as one line naming the
    key and its value; None when it can."""
    from sqlalchemy.exc import ArgumentError

    from agent.storage.engine import sqlite_file

    url = settings.database.url
    try:
        file = sqlite_file(url)
    except ArgumentError:
        return (
            f"[database] url = {url!r} is not a database URL (sqlite:///path or postgresql://...)"
        )
    if file is None:
        return None
    where = Path(file)
    if not creates_database and not where.exists():
        return (
            f"[database] url = {url!r}: the database {where.resolve()} does not exist; "
            "create it with `seat-agent db upgrade` (or `seat-agent serve`)"
        )
    folder = where.resolve().parent
    if not folder.is_dir():
        return f"[database] url = {url!r}: the folder {folder} does not exist; create it first"
    if not os.access(folder, os.W_OK | os.X_OK) or (
        where.exists() and not os.access(where, os.R_OK | os.W_OK)
    ):
        return f"[database] url = {url!r}: {where.resolve()} is not writable by this user"
    return None


def open_database(settings: Settings, creates_database: bool = False) -> Store:
    """Open (and migrate) the configured database, or exit 2 with one line saying why not."""
    from sqlalchemy.exc import SQLAlchemyError

    from agent.bootstrap import open_store
    from agent.storage import migrate
    from agent.storage.store import Store

    problem = _database_problem(settings, creates_database)
    if problem is not None:
        raise ConfigProblem(problem)
    url = settings.database.url
    try:
        if not creates_database:
            probe = Store.from_url(url)
            try:
                revision = migrate.current_revision(probe.engine)
            finally:
                probe.dispose()
            if revision is None:
                raise ConfigProblem(
                    f"[database] url = {_shown(url)}: no seat-agent database there yet; "
                    "create it with `seat-agent db upgrade` (or `seat-agent serve`)"
                )
        return open_store(settings)
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise ConfigProblem(f"[database] url = {_shown(url)}: cannot open it: {reason}") from None


def _shown(url: str) -> str:
    from agent.storage.engine import shown_url

    return repr(shown_url(url))


@contextmanager
def _agent(config_path: str | None) -> Iterator[Agent]:
    from agent.bootstrap import build_agent

    settings = _settings(config_path)
    agent = build_agent(settings, open_database(settings))
    try:
        yield agent
    finally:
        agent.store.dispose()


def _escaped(code: int) -> str:
    return chr(code).encode("unicode_escape").decode("ascii")


# What the directory may send and a terminal would act on rather than show: C0 and C1
# control characters (an escape sequence recolours the screen or moves the cursor, a carriage
# return overwrites the line), DEL, the Unicode line and paragraph separators and the
# bidirectional overrides (which reorder what is shown). Shown escaped instead (\x1b, \u202e).
_UNSHOWN = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_UNSHOWN += [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_IN_TEXT = {code: _escaped(code) for code in _UNSHOWN if chr(code) not in "\n\t"}
_IN_CELL = {code: _escaped(code) for code in _UNSHOWN}  # a newline would break the row


def terminal_safe(text: str) -> str:
    """Human output with what came from the directory made harmless to the operator's
    terminal; the output's own newlines and tabs kept."""
    return text if text.isprintable() else text.translate(_IN_TEXT)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if text.isprintable() else text.translate(_IN_CELL)


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _emit(data: Any, as_json: bool, human: str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(terminal_safe(human))


def usage_error(as_json: bool, message: str, param_hint: str) -> NoReturn:
    """A bad argument: exit 2, like click's own usage errors; with --json the error is JSON on
    stdout too (scripts read stdout, README)."""
    if as_json:
        click.echo(json.dumps({"error": f"{param_hint}: {message}"}))
        sys.exit(2)
    raise click.BadParameter(message, param_hint=param_hint)


def limit_argument(as_json: bool, value: str, maximum: int) -> int:
    """``--limit``: an integer from 1 to ``maximum`` (at most 9 digits are read)."""
    if not (value.isascii() and value.isdigit() and len(value) <= 9) or not (
        1 <= int(value) <= maximum
    ):
        usage_error(as_json, f"must be an integer from 1 to {maximum}", "--limit")
    return int(value)


def since_argument(as_json: bool, value: str | None) -> datetime | None:
    """``--since``: an ISO 8601 date or time, UTC when it names no zone."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        usage_error(as_json, "not an ISO 8601 date or time", "--since")
    return when if when.tzinfo else when.replace(tzinfo=UTC)
