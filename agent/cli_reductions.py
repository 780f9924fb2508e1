"""Reduction commands: ``seat-agent reduce --to N`` and ``seat-agent reductions ...``.

They work on the database named by the configuration, through the same service as
/admin/reductions, so they give the same plans and the same refusals. ``register(main)`` adds
them to the ``seat-agent`` group.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from agent.cli_support import (
    CONFIG_OPTION,
    JSON_OPTION,
    _agent,
    _emit,
    _table,
    terminal_safe,
    usage_error,
)


def _fail(message: str, as_json: bool, **extra: Any) -> None:
    if as_json:
        click.echo(json.dumps({"error": message, **extra}, indent=2, default=str))
        sys.exit(1)
    raise click.ClickException(message)


def plan_text(plan: dict[str, Any], with_problem: bool = True) -> str:
    """The plan as a table (userName, action, reason, last activity) with its arithmetic.

    An impossible plan gets one explanation (``problem``: how many must stop consuming, how
    many can, and why the others cannot), not a table that reads as if nothing were needed."""
    head = (
        f"licenses {plan['seats']} -> {plan['target']}; {plan['consumed']} consume, "
        f"{plan['needed']} must stop consuming\n"
        f"license change: {plan['window']['detail']}"
    )
    rows = [
        [c["user_name"], c["action"], c["reason"], (c["last_activity"] or "never")[:10]]
        + ([c["outcome"] or ""] if any(x.get("outcome") for x in plan["candidates"]) else [])
        for c in plan["candidates"]
    ]
    headers = ["userName", "action", "reason", "last activity"]
    if rows and len(rows[0]) == 5:
        headers.append("outcome")
    if rows:
        out = head + "\n\n" + _table(rows, headers)
    elif plan["needed"] == 0:
        out = head + "\n\nno user needs to stop consuming"
    else:
        out = head + "\n\nno user can be chosen to stop consuming"
    if plan.get("excluded_counts") and not plan.get("problem"):
        counts = ", ".join(f"{n} {why}" for why, n in sorted(plan["excluded_counts"].items()))
        out += f"\n\nnever chosen: {counts}"
    for note in plan.get("notes") or []:
        out += f"\n\nnote: {note}"
    if plan.get("problem") and with_problem:
        out += f"\n\nNOT POSSIBLE: {plan['problem']}"
    return out


def reduction_text(data: dict[str, Any]) -> str:
    lines = [
        f"reduction {data['id']}: {data['state']}"
        + (f" ({data['reason']})" if data.get("reason") else ""),
        f"proposed by {data['proposed_by']} at {data['created']}",
        "",
        plan_text(data["plan"]),
    ]
    if data["plan"].get("manual_steps"):
        lines += ["", *data["plan"]["manual_steps"]]
    lines += [
        "",
        _table(
            [[h["at"], h["state"], h["note"]] for h in data["history"]], ["at", "state", "note"]
        ),
    ]
    return "\n".join(lines)


def _resolve(ctx: click.Context, config_path: str | None) -> str | None:
    parent = ctx.find_object(dict) or {}
    return config_path if config_path is not None else parent.get("config_path")


def register(main: click.Group) -> None:
    """Add ``reduce`` and the ``reductions`` group to ``main``."""
    from agent.domain.reduction import FINAL_STATES
    from agent.jobs.scheduler import schedule_text, workflow_schedule
    from agent.services.reductions import (
        InvalidTransition,
        NothingToReduce,
        ReductionConflict,
        ReductionNotFound,
        reductions_for,
    )

    FINAL = {s.value for s in FINAL_STATES}

    @main.command()
    @click.option("--to", "target", default=None, help="License count to reach.")
    @click.option("--dry-run", is_flag=True, help="Show the plan; create nothing.")
    @click.option("--yes", is_flag=True, help="Create without asking for confirmation.")
    @click.option(
        "--watch",
        "watch_id",
        default=None,
        metavar="ID",
        help="Follow reduction ID to its end, printing each step (no --to).",
    )
    @click.option("--every", default=2.0, type=float, help="With --watch: seconds between looks.")
    @CONFIG_OPTION
    @JSON_OPTION
    def reduce(
        target: str | None,
        dry_run: bool,
        yes: bool,
        watch_id: str | None,
        every: float,
        config_path: str | None,
        as_json: bool,
    ) -> None:
        """Plan a reduction to N licenses: first the least active users stop consuming, then
        the license count is lowered. An impossible plan exits 1 with the reason; a target at
        or above the licenses held exits 2."""
        if watch_id is not None:
            if target is not None or dry_run:
                usage_error(as_json, "--watch follows an existing reduction; drop --to", "--watch")
            _watch(config_path, watch_id, as_json, every)
            return
        if target is None:
            usage_error(as_json, "required: the license count to reach", "--to")
            return
        if not (target.isascii() and target.isdigit() and len(target) <= 9):
            usage_error(as_json, "must be a non-negative integer", "--to")
            return
        count = int(target)
        with _agent(config_path) as agent:
            service = reductions_for(agent)
            try:
                plan = service.preview(count)
            except NothingToReduce as err:
                usage_error(as_json, err.message, "--to")
                return
            if dry_run:
                if not plan["feasible"]:
                    if not as_json:
                        click.echo(terminal_safe(plan_text(plan, with_problem=False)))
                    _fail("NOT POSSIBLE: " + plan["problem"], as_json, dry_run=True, plan=plan)
                _emit(
                    {"dry_run": True, "plan": plan},
                    as_json,
                    plan_text(plan) + "\n\ndry run: nothing was created",
                )
                return
            if not plan["feasible"]:
                if not as_json:
                    click.echo(plan_text(plan, with_problem=False), err=True)
                _fail(plan["problem"], as_json, plan=plan)
            if not as_json:
                click.echo(terminal_safe(plan_text(plan)))
            if not yes and not click.confirm(
                "\nCreate this reduction?", default=False, err=as_json
            ):
                raise click.ClickException("not created")
            try:
                created = service.create(count)
            except ReductionConflict as err:
                _fail(err.message, as_json, plan=err.plan)
                return
            schedule = workflow_schedule(agent) if created.state == "approved" else None
        data = created.as_dict()
        same = [c["user_id"] for c in data["plan"]["candidates"]] == [
            c["user_id"] for c in plan["candidates"]
        ]
        human = f"\ncreated reduction {created.id}: {created.state}"
        if not same:
            human += "\nthe directory changed meanwhile; the plan is now:\n\n"
            human += plan_text(data["plan"])
        if created.state == "planned":
            human += f"\napprove it with: seat-agent reductions approve {created.id}"
        if schedule is not None:
            data["runs"] = schedule
            human += "\n" + schedule_text(schedule, created.id)
        _emit(data, as_json, human)

    def _watch(config_path: str | None, reduction_id: str, as_json: bool, every: float) -> None:
        """Print each new history entry of the reduction until it ends (done: exit 0,
        cancelled or failed: exit 1)."""
        shown = 0
        while True:
            try:
                with _agent(config_path) as agent:
                    data = reductions_for(agent).get(reduction_id).as_dict()
            except ReductionNotFound as err:
                _fail(str(err), as_json)
                return
            for entry in data["history"][shown:]:
                if as_json:
                    click.echo(json.dumps({"id": reduction_id, **entry}))
                else:
                    click.echo(
                        terminal_safe(
                            f"{entry['at'][:19]}  {entry['state']:<32}{entry['note'] or ''}"
                        )
                    )
            shown = len(data["history"])
            if data["state"] in FINAL:
                if not as_json:
                    click.echo(f"reduction {reduction_id} ended: {data['state']}")
                sys.exit(0 if data["state"] == "done" else 1)
            time.sleep(every)

    @main.group(invoke_without_command=True)
    @CONFIG_OPTION
    @JSON_OPTION
    @click.pass_context
    def reductions(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
        """Reduction workflows: list them (default), show, approve, cancel."""
        ctx.obj = {"config_path": config_path, "as_json": as_json}
        if ctx.invoked_subcommand is None:
            _list(config_path, as_json)

    def _list(config_path: str | None, as_json: bool) -> None:
        with _agent(config_path) as agent:
            items = [r.summary() for r in reductions_for(agent).list_all()]
        human = (
            _table(
                [
                    [r["id"], r["state"], r["target"], r["users"], r["created"][:19], r["reason"]]
                    for r in items
                ],
                ["id", "state", "target", "users", "created", "reason"],
            )
            if items
            else "no reductions"
        )
        _emit({"reductions": items}, as_json, human)

    @reductions.command("list")
    @CONFIG_OPTION
    @JSON_OPTION
    @click.pass_context
    def list_cmd(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
        """List reductions, newest first."""
        _list(_resolve(ctx, config_path), as_json or ctx.obj.get("as_json", False))

    def _one(ctx: click.Context, config_path: str | None, as_json: bool, action: Any) -> None:
        as_json = as_json or ctx.obj.get("as_json", False)
        try:
            with _agent(_resolve(ctx, config_path)) as agent:
                data = action(reductions_for(agent)).as_dict()
        except ReductionNotFound as err:
            _fail(str(err), as_json)
            return
        except InvalidTransition as err:
            _fail(str(err), as_json)
            return
        _emit(data, as_json, reduction_text(data))

    @reductions.command("show")
    @click.argument("reduction_id")
    @CONFIG_OPTION
    @JSON_OPTION
    @click.pass_context
    def show(ctx: click.Context, reduction_id: str, config_path: str | None, as_json: bool) -> None:
        """A reduction: plan, per-user progress, history."""
        _one(ctx, config_path, as_json, lambda s: s.get(reduction_id))

    @reductions.command("approve")
    @click.argument("reduction_id")
    @CONFIG_OPTION
    @JSON_OPTION
    @click.pass_context
    def approve(
        ctx: click.Context, reduction_id: str, config_path: str | None, as_json: bool
    ) -> None:
        """Approve a planned reduction; says when the scheduler carries it out."""
        as_json = as_json or ctx.obj.get("as_json", False)
        try:
            with _agent(_resolve(ctx, config_path)) as agent:
                data = reductions_for(agent).approve(reduction_id, by="cli").as_dict()
                data["runs"] = workflow_schedule(agent)
        except (ReductionNotFound, InvalidTransition) as err:
            _fail(str(err), as_json)
            return
        _emit(
            data,
            as_json,
            reduction_text(data) + "\n\n" + schedule_text(data["runs"], reduction_id),
        )

    @reductions.command("cancel")
    @click.argument("reduction_id")
    @click.option("--reason", default=None, help="Why, for the history.")
    @CONFIG_OPTION
    @JSON_OPTION
    @click.pass_context
    def cancel(
        ctx: click.Context,
        reduction_id: str,
        reason: str | None,
        config_path: str | None,
        as_json: bool,
    ) -> None:
        """Cancel an open reduction (users already deactivated stay so)."""
        _one(ctx, config_path, as_json, lambda s: s.cancel(reduction_id, reason, by="cli"))
