"""The command line: ``seat-agent serve``, ``db upgrade``, and the operator's seat commands.

The seat commands work on the database named by the configuration, through the same services
as the admin API, so they give the same answers and the same refusals.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from agent.config import Settings

from agent.cli_support import (  # noqa: E402
    CONFIG_OPTION,
    JSON_OPTION,
    SeatAgentGroup,
    _agent,
    _emit,
    _settings,
    _table,
    limit_argument,
    open_database,
    since_argument,
    usage_error,
)


@click.group(cls=SeatAgentGroup)
def main() -> None:
    """seat-agent: SCIM 2.0 provisioning with license seat enforcement."""


@main.command()
@CONFIG_OPTION
@click.option("--host", default=None, help="Bind address (overrides [server] host).")
@click.option("--port", default=None, type=int, help="Port (overrides [server] port).")
@click.option("--workers", default=None, type=int, help="gunicorn workers.")
def serve(config_path: str | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve SCIM, the admin API and health endpoints with gunicorn.

    SIGHUP (``systemctl reload``) reads the configuration file again and replaces the workers
    without refusing a connection; the embedded scheduler is restarted if it dies.
    """
    from agent.bootstrap import ensure_tokens
    from agent.cli_downstream import mapping_problem_at_start
    from agent.web.server import run_gunicorn

    settings = _settings(config_path, creates_database=True)
    problem = mapping_problem_at_start(settings)
    if problem is not None:
        click.echo(f"seat-agent: {problem}", err=True)
        sys.exit(2)
    store = open_database(settings, creates_database=True)
    generated = ensure_tokens(settings, store)
    store.dispose()
    if generated:
        from agent.web.observability import logging_config

        # The same log format gunicorn is given, so the line about the tokens file is JSON too.
        logging.config.dictConfig(logging_config(settings.server.json_logs))
        announce_generated_tokens(settings, generated, sys.stderr)
    run_gunicorn(
        settings,
        host,
        port,
        workers,
        scheduler_args=(["--config", config_path] if config_path else [])
        if settings.scheduler.embedded
        else None,
        config_path=config_path,
    )


@main.command()
@CONFIG_OPTION
@click.option("--pid", "master_pid", required=True, type=int, help="The gunicorn master.")
def reload(config_path: str | None, master_pid: int) -> None:
    """Reload a running `seat-agent serve` (the unit's ExecReload=).

    systemd runs this with the EnvironmentFile read afresh; the secrets the configuration names
    (``*_env``) are handed to the master in a 0600 file of $RUNTIME_DIRECTORY, then SIGHUP makes
    it re-read the configuration and replace its workers. Without $RUNTIME_DIRECTORY only the
    configuration file is re-read.
    """
    import signal

    from agent.web.server import handoff_path, write_handoff

    # A broken file is reported here, before any signal.
    settings = _settings(config_path, creates_database=True)
    path = handoff_path()
    if path is not None:
        write_handoff(settings, dict(os.environ), path)
    os.kill(master_pid, signal.SIGHUP)
    click.echo(f"reload requested of {master_pid}", err=True)


GENERATED_TOKENS_FILE = "seat-agent-generated-tokens.env"


def generated_tokens_path(settings: Settings) -> Path:
    """Beside the SQLite database, else in the working directory (the unit's state
    directory): a place only the service user can write."""
    from agent.storage.engine import sqlite_file

    database = sqlite_file(settings.database.url)
    if database is not None:
        return Path(database).resolve().parent / GENERATED_TOKENS_FILE
    return Path.cwd() / GENERATED_TOKENS_FILE


def announce_generated_tokens(settings: Settings, generated: dict[str, str], stream: Any) -> None:
    """Hand the tokens generated at first start to the operator, once, never into a log.

    On a terminal they are printed. Otherwise stderr is a log (the journal under systemd, JSON
    lines with ``json_logs``): they go to a file readable only by the service user, in
    EnvironmentFile syntax, and only that file's path is logged.
    """
    names = {kind: getattr(settings.auth, f"{kind}_token_env") for kind in generated}
    if stream.isatty():
        for kind, token in generated.items():
            click.echo(
                f"Generated {kind} bearer token (shown once; set {names[kind]} to choose your"
                f" own): {token}",
                file=stream,
            )
        return
    path = generated_tokens_path(settings)
    lines = ["# seat-agent: bearer tokens generated at first start. Store them, then delete me."]
    lines += [f"{names[kind]}={token}" for kind, token in generated.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        out.write("\n".join(lines) + "\n")
    logging.getLogger("agent.cli").warning(
        "generated %s bearer token(s); written to %s (mode 0600), not logged",
        " and ".join(generated),
        path,
    )


@main.command()
@CONFIG_OPTION
def scheduler(config_path: str | None) -> None:
    """Run the scheduler (reconcile, queue, outbox, workflows, digests) in the foreground.

    Any number may run: a database lease lets exactly one act at a time.
    """
    import logging
    import logging.config
    import signal

    from agent.jobs.scheduler import build_scheduler
    from agent.web.observability import logging_config

    logging.config.dictConfig(logging_config(_settings(config_path).server.json_logs))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise

    with _agent(config_path) as agent:
        sched, lease = build_scheduler(agent, blocking=True)

        def stop(_signum: int, _frame: Any) -> None:
            sched.shutdown(wait=False)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # A log record, not a bare line: with json_logs every line on stderr is JSON.
        logging.getLogger("seat_agent.scheduler").info("scheduler %s started", lease.holder)
        try:
            sched.start()
        finally:
            lease.release()


@main.command()
@CONFIG_OPTION
@JSON_OPTION
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
def reconcile(config_path: str | None, as_json: bool, dry_run: bool) -> None:
    """Recount seats, repair drift, and report what was found and done."""
    from agent.jobs.tasks import Jobs
    from agent.services.reconcile import NO_DOWNSTREAM

    with _agent(config_path) as agent:
        with agent.store.read() as tx:
            total = tx.users.count()
        # One bar for the seat pass, one for the comparison with the downstream (when set).
        bars: list[Any] = []

        def bar_for(label: str) -> Any:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
            bars.append(bar)
            return bar

        # Bars only on a terminal: elsewhere click prints their labels, which a script
        # reading ``2>&1`` would find in the middle of its --json.
        seats_bar = bar_for("seats     ") if _stderr_is_terminal() else None
        downstream_bar: list[Any] = []

        def downstream_progress(n: int) -> None:
            if not downstream_bar:
                seats_bar.render_finish()  # type: ignore[union-attr]
                downstream_bar.append(bar_for("downstream"))
            downstream_bar[0].update(n)

        try:
            report = Jobs(agent).reconcile(
                dry_run=dry_run,
                progress=seats_bar.update if seats_bar is not None else None,
                downstream_progress=downstream_progress if seats_bar is not None else None,
            )
        finally:
            for bar in bars:
                bar.__exit__(None, None, None)
    data = report.as_dict()
    lines = [
        f"users: {report.users}",
        f"seats: {report.seats}",
        f"consumed counter: {report.counter_before} -> {report.counter_after}"
        + (" (repaired)" if report.counter_before != report.counter_after and not dry_run else ""),
        f"seat states re-decided: {len(report.resettled)}"
        + (f" ({', '.join(report.resettled[:20])})" if report.resettled else ""),
        f"wanting a seat with none free: {len(report.unresolved)}",
    ]
    if report.downstream_error is not None:
        lines.append(f"downstream unreachable: {report.downstream_error} (comparison skipped)")
    elif report.downstream_note == NO_DOWNSTREAM:
        pass  # said below: nothing was compared
    else:
        lines.append(f"downstream drift: {len(report.drift)}")
        for d in report.drift[:50]:
            who = d.user_name or d.user_id or d.remote_id or "application"
            lines.append(f"  {who}: {d.problem} (expected {d.expected}, found {d.found})")
    if report.downstream_note is not None:
        lines.append(f"downstream: {report.downstream_note}")
    if dry_run:
        lines.append("dry run: nothing was changed")
    _emit(data, as_json, "\n".join(lines))
    if report.downstream_error is not None:
        # The seats were recounted, but the application could not be compared: a script or
        # timer running this must notice (exit 1, as a plan that cannot be carried out).
        sys.exit(1)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@main.command()
@CONFIG_OPTION
@JSON_OPTION
def status(config_path: str | None, as_json: bool) -> None:
    """Scheduler, last reconcile, outbox delivery and seats at a glance."""
    from agent.jobs.lease import SCHEDULER_LEASE
    from agent.jobs.scheduler import job_runs, job_table
    from agent.storage import outbox

    with _agent(config_path) as agent:
        report = agent.admin.report()
        names = [name for name, _fn, _s in job_table(agent)]
        with agent.store.read() as tx:
            holder = outbox.lease_holder(tx, SCHEDULER_LEASE, agent.clock())
            last = tx.state.get("last_reconcile")
            depth = outbox.depth(tx)
            failing = outbox.failing(tx, agent.settings.downstream.alert_after_attempts)
            jobs = {name: job_runs(tx, name) for name in names}
    last_data = json.loads(last) if last else None
    data: dict[str, Any] = {
        "scheduler": holder,
        "last_reconcile": last_data.get("at") if last_data else None,
        "downstream_error": last_data.get("downstream_error") if last_data else None,
        "jobs": {n: {k: j.get(k) for k in ("runs", "last", "holder")} for n, j in jobs.items()},
        "outbox": depth,
        "failing": [
            {
                "seq": m.seq,
                "kind": m.kind,
                "key": m.key,
                "attempts": m.attempts,
                "error": m.last_error,
            }
            for m in failing
        ],
        "seats": {k: report[k] for k in ("licensed", "consumed", "available", "queued")},
    }
    rows: list[list[Any]] = [
        ["scheduler", holder or "none running"],
        ["last reconcile", data["last_reconcile"] or "never"],
        *(
            [["downstream", f"unreachable at last reconcile: {data['downstream_error']}"]]
            if data["downstream_error"]
            else []
        ),
        *[
            [f"job {n}", f"{j['runs']} runs, last {j['last'] or 'never'}"]
            for n, j in data["jobs"].items()
        ],
        ["outbox pending", sum(depth.values())],
        ["deliveries failing", len(failing)],
        *[[f"seats {k}", v] for k, v in data["seats"].items()],
    ]
    human = _table(rows, ["", "value"])
    for f in data["failing"][:20]:
        human += (
            f"\nFAILING {f['kind']} {f['key']}: {f['attempts']} attempts, last error: {f['error']}"
        )
    _emit(data, as_json, human)


@main.command("hash-token")
@click.argument("token", required=False)
def hash_token(token: str | None) -> None:
    """Print the 'sha256:<hex>' digest of a token for [auth] *_token_hashes (reads stdin
    when no argument is given, so the token stays out of shell history)."""
    from agent.web.auth import digest

    value = token if token is not None else sys.stdin.readline().strip()
    if not value:
        raise click.BadParameter("empty token")
    click.echo(f"sha256:{digest(value)}")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@CONFIG_OPTION
def db_upgrade(config_path: str | None) -> None:
    """Apply migrations up to the newest."""
    from agent.storage import migrate

    store = open_database(_settings(config_path, creates_database=True), creates_database=True)
    click.echo(f"database at revision {migrate.current_revision(store.engine)}")
    store.dispose()


@main.command()
@CONFIG_OPTION
@JSON_OPTION
def seats(config_path: str | None, as_json: bool) -> None:
    """Seats held, consumed, available and queued."""
    with _agent(config_path) as agent:
        report = agent.admin.report()
    rows = [[k, report[k]] for k in ("licensed", "consumed", "available", "queued")]
    rows.append(["refused (24 h)", report["refused"]["last_24h"]])
    human = _table(rows, ["seats", "count"])
    if report["by_status"]:
        human += "\n\n" + _table(
            [[s, v["users"], v["consuming"]] for s, v in sorted(report["by_status"].items())],
            ["status", "users", "consuming"],
        )
    _emit(report, as_json, human)


@main.command()
@CONFIG_OPTION
@JSON_OPTION
def queue(config_path: str | None, as_json: bool) -> None:
    """Users waiting for a seat, first come first served."""
    from agent.web.admin import user_summary

    with _agent(config_path) as agent:
        users = [user_summary(u) for u in agent.admin.queue()]
    human = (
        _table(
            [[u["queuePosition"], u["userName"], u["queuedAt"], u["id"]] for u in users],
            ["#", "userName", "queued at", "id"],
        )
        if users
        else "queue is empty"
    )
    _emit({"queued": users}, as_json, human)


@main.command()
@CONFIG_OPTION
@JSON_OPTION
@click.argument("user_key", metavar="USER")
def user(config_path: str | None, as_json: bool, user_key: str) -> None:
    """One user's seat state (what GET /admin/users/USER gives); USER is its id, userName or
    externalId."""
    from agent.web.admin import user_seat

    with _agent(config_path) as agent:
        record = agent.admin.find_user(user_key)
        data = user_seat(record, agent.settings.license.fallback_role) if record else None
    if data is None:
        message = f"no user with id, userName or externalId '{user_key}' (see `seat-agent users`)"
        if as_json:
            click.echo(json.dumps({"error": message}))
            sys.exit(1)
        raise click.ClickException(message)
    _emit(data, as_json, _table([[k, v] for k, v in data.items()], ["", "value"]))


@main.group()
def licenses() -> None:
    """License count."""


# A negative COUNT is a bad count, not an unknown option: "-5" reaches the check below.
@licenses.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("count")
@CONFIG_OPTION
@JSON_OPTION
def licenses_set(count: str, config_path: str | None, as_json: bool) -> None:
    """Set the number of licenses held (0..1000000, never below consuming users).

    With [license] decrease = "manual" a lower COUNT records a change made at the vendor;
    the output says so and lists the vendor-side steps.
    """
    from agent.domain.license import DecreaseRefused, InvalidLicenseCount, check_license_count

    value: object = count
    try:
        value = int(count)
    except ValueError:
        pass  # check_license_count names the problem
    try:
        seats = check_license_count(value)
    except InvalidLicenseCount as err:
        usage_error(as_json, str(err).removeprefix("'seats' "), "COUNT")
        return
    try:
        with _agent(config_path) as agent:
            change = agent.admin.change_licenses(seats)
            report = agent.admin.report()
    except DecreaseRefused as err:
        allowed = err.allowed_from.isoformat() if err.allowed_from else None
        if as_json:
            click.echo(json.dumps({"error": err.reason, "allowed_from": allowed}))
            sys.exit(1)
        raise click.ClickException(
            err.reason + (f" (allowed from {allowed})" if allowed else "")
        ) from None
    from agent.web.admin import license_change

    data = license_change(change, report["consumed"], report["available"])
    data["promoted"] = [u.user_name for u in change.promoted]
    lines = [f"licenses: {change.seats}", change.message, *change.vendor_steps]
    if change.promoted:
        lines.append(f"promoted from queue: {', '.join(data['promoted'])}")
    _emit(data, as_json, "\n".join(lines))


@main.command()
@CONFIG_OPTION
@JSON_OPTION
@click.option("--since", default=None, help="ISO 8601 date or time.")
@click.option(
    "--limit",
    default="100",
    help="How many entries (1..10000): the newest, or the first from --since on.",
)
def ledger(config_path: str | None, as_json: bool, since: str | None, limit: str) -> None:
    """Seat ledger: every seat change with its cause, in time order (the newest LIMIT
    entries, or the first LIMIT from --since on)."""
    from agent.web.admin import MAX_LEDGER_PAGE, ledger_entry

    count = limit_argument(as_json, limit, MAX_LEDGER_PAGE)
    since_dt = since_argument(as_json, since)
    with _agent(config_path) as agent:
        entries = [ledger_entry(e) for e in agent.admin.ledger(since_dt, count)]
    human = _table(
        [
            [
                e["at"],
                e["kind"],
                e["cause"],
                e["userName"],
                e["seatsAfter"],
                e["consumedAfter"],
                e["cost"],
            ]
            for e in entries
        ],
        ["at", "kind", "cause", "user", "seats", "consumed", "cost"],
    )
    _emit({"entries": entries}, as_json, human)


@main.command()
@CONFIG_OPTION
@JSON_OPTION
def billing(config_path: str | None, as_json: bool) -> None:
    """Billing preview for the current period."""
    with _agent(config_path) as agent:
        data = agent.admin.billing_report()
    human = _table([[k, v] for k, v in data.items() if v is not None], ["billing", "value"])
    _emit(data, as_json, human)


from agent.cli_directory import register as _register_directory  # noqa: E402
from agent.cli_downstream import register as _register_downstream  # noqa: E402
from agent.cli_reductions import register as _register_reductions  # noqa: E402

_register_reductions(main)
_register_directory(main)
_register_downstream(main)

if __name__ == "__main__":  # pragma: no cover
    main()
