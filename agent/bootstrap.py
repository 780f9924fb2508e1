"""Wiring helpers shared by the app factory and the CLI: store, tokens, services."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.config import Settings, billing_terms, license_policy
from agent.connectors import build_connector
from agent.connectors.scim import ScimConnector
from agent.connectors.webhook import WebhookConnector
from agent.notify.mail import SmtpMailer
from agent.scim.cursor import CursorCodec
from agent.services.admin import SeatAdmin
from agent.services.alerts import Alerts, EmailHandler, send_digest
from agent.services.count_drift import CountDriftCheck
from agent.services.delivery import Handler, Outage, PushHandlers, deliver_due
from agent.services.drift import DriftCheck
from agent.services.group_delivery import GroupHandlers
from agent.services.outbox_notifier import EMAIL, OutboxNotifier
from agent.services.provisioning import Provisioning
from agent.services.reductions import Reductions
from agent.services.remote_links import LinkedConnector
from agent.services.seats import SeatEngine
from agent.services.webhook_events import WebhookEvents, WebhookHandlers
from agent.storage.store import Store, StoreTx
from agent.web.auth import TokenSet, digest
from agent.web.observability import current_request_id
from agent.web.ratelimit import RateLimiter

Clock = Callable[[], datetime]
DELIVERY_ALERT_KEY = "delivery"  # one "delivery failing" alert per downstream outage


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Agent:
    """Everything a request handler or job needs, built once per process."""

    settings: Settings
    store: Store
    clock: Clock
    seats: SeatEngine
    provisioning: Provisioning
    admin: SeatAdmin
    scim_tokens: TokenSet
    admin_tokens: TokenSet
    rate_limiter: RateLimiter
    cursors: CursorCodec  # RFC 9865 cursors of the SCIM lists and the admin's user list
    # Optional parts (issue 4): downstream delivery, drift check, reductions, digest.
    delivery: Callable[..., Any] | None = None
    drift_check: Any = None  # agent.services.drift.DriftCheck
    reductions: Any = None
    digest: Callable[[], Any] | None = None


def open_store(settings: Settings, clock: Clock = system_clock) -> Store:
    """Open the database and apply migrations (also done at every start)."""
    store = Store.from_url(settings.database.url)
    store.upgrade(settings.license.seats, clock())
    return store


def ensure_tokens(settings: Settings, store: Store) -> dict[str, str]:
    """Tokens for the embedded default: from config, the environment, or generated once.

    A generated token is returned (to be printed once) and only its SHA-256 digest is kept.
    """
    generated = {}
    for kind, configured in (
        ("scim", settings.auth.resolved_scim_token() or settings.auth.scim_token_hashes),
        ("admin", settings.auth.resolved_admin_token() or settings.auth.admin_token_hashes),
    ):
        if configured:
            continue
        key = f"{kind}_token_sha256"
        with store.write() as tx:
            if tx.state.get(key) is None:
                token = secrets.token_urlsafe(32)
                tx.state.put(key, digest(token))
                generated[kind] = token
    return generated


CURSOR_KEY = "cursor_hmac_key"


def cursor_key(store: Store) -> bytes:
    """The key that signs list cursors (agent.scim.cursor): generated once per database, so
    every worker and host accepts the cursors any of them gave."""
    with store.read() as tx:
        stored = tx.state.get(CURSOR_KEY)
    if stored is None:
        with store.write() as tx:  # the seat-pool lock: hosts starting together make one
            stored = tx.state.get(CURSOR_KEY)
            if stored is None:
                stored = secrets.token_hex(32)
                tx.state.put(CURSOR_KEY, stored)
    return bytes.fromhex(stored)


def token_sets(settings: Settings, store: Store) -> tuple[TokenSet, TokenSet]:
    """Accepted SCIM and admin tokens: configured (file or environment), extra rotation tokens,
    configured digests, or the digest generated for the embedded default."""
    auth = settings.auth
    out = []
    for kind, configured, extra, hashes in (
        ("scim", auth.resolved_scim_token(), auth.scim_tokens, auth.scim_token_hashes),
        ("admin", auth.resolved_admin_token(), [], auth.admin_token_hashes),
    ):
        digests = [digest(t) for t in [configured, *extra] if t]
        digests += [h.removeprefix("sha256:") for h in hashes]
        if not configured:
            with store.read() as tx:
                stored = tx.state.get(f"{kind}_token_sha256")
            if stored:
                digests.append(stored)
        out.append(TokenSet(digests))
    return out[0], out[1]


def build_agent(
    settings: Settings, store: Store | None = None, clock: Clock = system_clock
) -> Agent:
    """Wire the parts: seat engine with its outbox notifier, provisioning, admin, downstream
    delivery, alerts, drift check and reductions."""
    store = store or open_store(settings, clock)
    lic = settings.license
    terms = billing_terms(lic)
    built = build_connector(settings.downstream, clock)
    # Signed webhooks carry events, not users: nothing to list, so nothing to link (reconcile
    # compares counts, CountDriftCheck). Every connector that lists users is linked, so users
    # the application keeps without our externalId are still recognised (remote_links).
    webhook = built if isinstance(built, WebhookConnector) else None
    connector = LinkedConnector(built, store) if built is not None and webhook is None else None
    alerts = (
        Alerts(
            settings.alerts,
            lic.low_seats_threshold,
            clock,
            currency=lic.currency,
            on_full=lic.on_full,
        )
        if settings.alerts.enabled
        else None
    )
    events = WebhookEvents(lic.fallback_role, clock) if webhook is not None else None
    notifier = OutboxNotifier(
        push=built is not None,
        alerts=alerts,
        clock=clock,
        events=events,
        push_groups=settings.downstream.push_groups,
    )
    seats = SeatEngine(license_policy(lic), terms, clock, notifier, request_id=current_request_id)
    scim_tokens, admin_tokens = token_sets(settings, store)
    provisioning = Provisioning(store, seats, clock, seat_extension=settings.scim.seat_extension)
    admin = SeatAdmin(store, seats, lic, terms, clock)

    handlers: dict[str, Handler] = {}
    if webhook is not None:
        handlers.update(WebhookHandlers(webhook).handlers())
    elif connector is not None:
        handlers.update(PushHandlers(connector, store, lic.fallback_role).handlers())
        if settings.downstream.push_groups and isinstance(built, ScimConnector):
            handlers.update(GroupHandlers(built, store).handlers())
    if alerts is not None:
        handlers[EMAIL] = EmailHandler(SmtpMailer.from_settings(settings.alerts))
    ds = settings.downstream

    def on_failing(tx: StoreTx, outage: Outage) -> None:
        if alerts is not None:
            oldest = outage.oldest
            alerts.raise_alert(
                tx,
                DELIVERY_ALERT_KEY,
                "failing",
                f"Delivery to the application failing: {outage.pending} changes waiting",
                [
                    f"{outage.failing} changes have failed {ds.alert_after_attempts} times or"
                    f" more; {outage.pending} changes wait for the application in all.",
                    f"Oldest failing: {oldest.kind} {oldest.key}, queued"
                    f" {oldest.created:%Y-%m-%d %H:%M UTC}, {oldest.attempts} attempts.",
                    f"Last error: {oldest.last_error}",
                    "Everything is retried with backoff and never dropped; see `seat-agent"
                    " status`. This alert is sent once per outage: it is sent again only after"
                    " deliveries have succeeded in between.",
                ],
            )

    def on_recovered(tx: StoreTx) -> None:
        if alerts is not None:
            alerts.clear(tx, DELIVERY_ALERT_KEY)

    delivery = (
        functools.partial(
            deliver_due,
            store,
            handlers,
            clock,
            ds.backoff_base_seconds,
            ds.backoff_max_seconds,
            alert_after_attempts=ds.alert_after_attempts,
            on_failing=on_failing,
            on_recovered=on_recovered,
        )
        if handlers
        else None
    )
    app_count = webhook.active_count if webhook is not None and webhook.count_url else None
    drift: DriftCheck | None = None
    if webhook is not None:
        drift = CountDriftCheck(store, app_count, clock, alerts)
    elif connector is not None:
        drift = DriftCheck(store, connector, lic.fallback_role, clock, alerts)
    reductions = Reductions(
        store,
        provisioning,
        admin,
        settings.reductions,
        lic,
        clock,
        alerts=alerts,
        app_users=connector.list_users if connector is not None else None,
        app_count=app_count,
    )
    digest = (
        functools.partial(
            _digest, store, alerts, clock, timedelta(hours=settings.scheduler.digest_hours)
        )
        if alerts is not None and settings.alerts.digest
        else None
    )
    return Agent(
        settings=settings,
        store=store,
        clock=clock,
        seats=seats,
        provisioning=provisioning,
        admin=admin,
        scim_tokens=scim_tokens,
        admin_tokens=admin_tokens,
        rate_limiter=RateLimiter(settings.server.rate_limit_per_minute),
        cursors=CursorCodec(cursor_key(store), clock),
        delivery=delivery,
        drift_check=drift,
        reductions=reductions,
        digest=digest,
    )


def _digest(store: Store, alerts: Alerts, clock: Clock, period: timedelta) -> bool:
    return send_digest(store, alerts, clock(), period)
