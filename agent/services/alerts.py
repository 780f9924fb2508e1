"""Admin alerts: seat changes and other services' findings become email, written to the outbox.

An alert is written in the transaction of the change it reports (``outbox.enqueue``), so it is
never sent for a change that rolled back and never lost for one that committed; the outbox
worker sends it later through ``EmailHandler``. A SCIM request therefore never waits for, nor
fails because of, the mail server: a server that is down delays mail, it does not lose it.

Each alert has a key (what it is about) and a state; ``outbox.alert_changed`` keeps the last
state per key so each change of state mails once, however often the IdP retries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from agent.config import AlertSettings
from agent.notify.mail import Mail, Section, render_html, render_text
from agent.services.events import SeatEvent
from agent.services.outbox_notifier import EMAIL
from agent.storage import outbox
from agent.storage.outbox import OutboxMessage
from agent.storage.store import Store, StoreTx

Table = tuple[Sequence[str], Sequence[Sequence[object]]]  # (headers, rows)

SEATS_KEY = "seats"
LICENSES_KEY = "licenses"
DIGEST_KEY = "digest"
OK = "ok"
KEY_LENGTH = 255  # alert_state.key and outbox.key
SEAT_HEADERS = ("User", "Status", "Seats", "Consumed", "Available")
DIGEST_ROWS = 50


def _key(key: str) -> str:
    return key[:KEY_LENGTH]


# What happens to an activation when no seat is free, in the admin's words ([license] on_full).
_WHEN_FULL = {
    "refuse": "it is refused until a seat is free",
    "queue": "it waits in the queue, first come first served",
    "fallback": "it gets the free fallback role until a seat is free",
    "expand": "a license is added automatically, up to the ceiling",
}


def _who(event: SeatEvent) -> str:
    return event.user_name or event.user_id or "-"


class Alerts:
    """Turns seat events and service findings into deduplicated alert mail in the outbox.

    ``low_threshold`` is ``[license] low_seats_threshold``; ``currency`` and ``on_full`` only
    make the mails more telling. With ``settings.enabled`` false every method does nothing.
    """

    def __init__(
        self,
        settings: AlertSettings,
        low_threshold: int,
        clock: Callable[[], datetime],
        *,
        currency: str = "",
        on_full: str | None = None,
    ):
        self.settings = settings
        self.low_threshold = low_threshold
        self.clock = clock
        self.currency = currency
        self.on_full = on_full

    # -- the general entry point -------------------------------------------------------------

    def raise_alert(
        self,
        tx: StoreTx,
        key: str,
        state: str,
        subject: str,
        lines: list[str],
        table: Table | None = None,
    ) -> bool:
        """Mail ``subject`` when ``key`` enters ``state``; True when a mail was queued.

        For other services: drift found, delivery failing, a reduction proposed, awaiting
        approval, awaiting a manual license change, done. Calling again with the same state
        sends nothing, so a job may call it on every run. Use ``clear`` when the condition ends.
        """
        return self.raise_report(tx, key, state, subject, [Section(None, lines, table)])

    def raise_report(
        self,
        tx: StoreTx,
        key: str,
        state: str,
        subject: str,
        sections: Sequence[Section],
        outbox_key: str | None = None,
    ) -> bool:
        """``raise_alert`` with a body of several sections (the digest)."""
        if not self.settings.enabled:
            return False
        now = self.clock()
        if not outbox.alert_changed(tx, _key(key), state, now):
            return False
        self._enqueue(tx, outbox_key or key, subject, sections, now)
        return True

    def clear(self, tx: StoreTx, key: str, state: str = OK) -> bool:
        """Record silently that ``key`` is back to normal, so its next problem alerts again.

        Writes nothing for a key that never alerted (a granted user leaves no row behind).
        """
        if not self.settings.enabled:
            return False
        current = outbox.alert_state_of(tx, _key(key))
        if current is None or current == state:
            return False
        return outbox.alert_changed(tx, _key(key), state, self.clock())

    def _enqueue(
        self, tx: StoreTx, key: str, subject: str, sections: Sequence[Section], now: datetime
    ) -> None:
        full = f"{self.settings.subject_prefix} {subject}".strip()
        payload = {
            "subject": full,
            "text": render_text(subject, sections),
            "html": render_html(subject, sections) if self.settings.html else None,
        }
        outbox.enqueue(tx, EMAIL, _key(key), payload, now)

    # -- seat events (called by OutboxNotifier in the transaction of the change) -------------

    def on_seat_event(self, tx: StoreTx, event: SeatEvent) -> None:
        if not self.settings.enabled:
            return
        kind = event.kind
        if kind == "refused":
            self._refused(tx, event)
        elif kind == "queued":
            self._queued(tx, event)
        elif kind == "promoted":
            self._promoted(tx, event)
        elif kind == "expanded":
            self._expanded(tx, event)
        elif kind == "licenses":
            self._licenses(tx, event)
        if kind in ("granted", "promoted") and (event.user_name or event.user_id):
            self.clear(tx, self.refused_key(event))
        if kind != "expanded":
            # An expansion is followed, in the same transaction, by the grant it was for; that
            # event carries the final arithmetic (judging 11 - 10 here would mail "low").
            self._seat_level(tx, event)

    @staticmethod
    def refused_key(event: SeatEvent) -> str:
        # userName, not id: a retried POST mints a new id each time, the userName stays
        # (unique, case-insensitive).
        name = event.user_name.lower() if event.user_name else event.user_id
        return f"refused:{name}"

    @staticmethod
    def queued_key(event: SeatEvent) -> str:
        return f"queued:{event.user_id or event.user_name}"

    def _row(self, event: SeatEvent, status: str) -> tuple[object, ...]:
        return (_who(event), status, event.seats, event.consumed, event.seats - event.consumed)

    def _arith(self, event: SeatEvent) -> str:
        return f"{event.consumed} of {event.seats} in use"

    def _cost(self, event: SeatEvent) -> str | None:
        if event.cost is None:
            return None
        return f"{event.cost} {self.currency}".strip()

    def _seat_level(self, tx: StoreTx, event: SeatEvent) -> None:
        """low when available <= low_threshold, exhausted at 0; rising above the threshold
        clears silently. exhausted -> low (one seat freed) stays exhausted: churn at the limit
        does not mail "limit reached" again and again."""
        available = event.seats - event.consumed
        queued = 0
        if available > 0:
            # Seats free while users wait are handed to them before this transaction commits.
            queued = tx.users.queued_count()
            available = max(available - queued, 0)
        if available <= 0:
            level = "exhausted"
        elif available <= self.low_threshold:
            level = "low"
        else:
            level = OK
        current = outbox.alert_state_of(tx, SEATS_KEY)
        if level == current or (level == "low" and current == "exhausted"):
            return
        if level == OK:
            self.clear(tx, SEATS_KEY)
            return
        table = (SEAT_HEADERS, [self._row(event, event.kind)])
        policy = f": {_WHEN_FULL[self.on_full]}" if self.on_full in _WHEN_FULL else ""
        if level == "exhausted":
            subject = f"Seat limit reached: {self._arith(event)}"
            lines = [
                f"Every licensed seat is in use ({self._arith(event)}); the next activation "
                f"gets no seat{policy}.",
                "Free a seat (deactivate a user) or add licenses (`seat-agent licenses set N`"
                " or PUT /admin/licenses).",
            ]
        else:
            subject = f"Seats running low: {available} of {event.seats} left"
            lines = [
                f"{event.consumed} of {event.seats} seats are in use; {available} left "
                f"(alert threshold {self.low_threshold}){policy}.",
            ]
        if queued:
            lines.append(f"{queued} queued user(s) take the free seats.")
        lines.append(f"Last change: {event.kind} {_who(event)}.")
        self.raise_alert(tx, SEATS_KEY, level, subject, lines, table)

    def _refused(self, tx: StoreTx, event: SeatEvent) -> None:
        who = _who(event)
        self.raise_alert(
            tx,
            self.refused_key(event),
            "refused",
            f"Activation refused for {who}: {self._arith(event)}",
            [
                f"The identity provider asked to give {who} a seat; none is free.",
                event.detail or f"{self._arith(event)}.",
                "The IdP was answered 403 with this reason and shows it in its provisioning log.",
                f"Further refusals of {who} are not mailed until it gets a seat.",
            ],
            (SEAT_HEADERS, [self._row(event, "refused")]),
        )

    def _queued(self, tx: StoreTx, event: SeatEvent) -> None:
        who = _who(event)
        # The engine announces before it writes the user's queued state: it is the next one.
        position = tx.users.queued_count() + 1
        lines = [
            f"{who} was activated but no seat is free ({self._arith(event)}).",
            f"It waits in the queue at position {position} and gets the next free seat.",
        ]
        # Every queued event is a new entry into the queue (the engine does not announce a user
        # already waiting), so each one mails, even if an earlier wait ended without a seat.
        now = self.clock()
        outbox.alert_changed(tx, _key(self.queued_key(event)), "queued", now)
        self._enqueue(
            tx,
            self.queued_key(event),
            f"{who} queued for a seat: {self._arith(event)}",
            [Section(None, lines, (SEAT_HEADERS, [self._row(event, f"queued #{position}")]))],
            now,
        )

    def _promoted(self, tx: StoreTx, event: SeatEvent) -> None:
        who = _who(event)
        waiting = tx.users.queued_count()
        self.raise_alert(
            tx,
            self.queued_key(event),
            "promoted",
            f"{who} got a seat from the queue: {self._arith(event)}",
            [
                f"A seat became free and went to {who}, first in the queue.",
                f"{waiting} user(s) still waiting.",
            ],
            (SEAT_HEADERS, [self._row(event, "promoted")]),
        )

    def _expanded(self, tx: StoreTx, event: SeatEvent) -> None:
        who = _who(event)
        cost = self._cost(event)
        subject = f"Licenses increased automatically: {event.detail}"
        lines = [
            f"No seat was free for {who}, so a license was added automatically, as this"
            f" deployment is set to do up to its ceiling ({event.detail}).",
        ]
        if cost is not None:
            subject += f", cost {cost}"
            lines.append(f"Prorated cost for the rest of the billing period: {cost}.")
        self.raise_alert(
            tx,
            LICENSES_KEY,
            f"expanded:{event.seats}",
            subject,
            lines,
            (
                (*SEAT_HEADERS, "Cost"),
                [(*self._row(event, "expanded"), cost or "-")],
            ),
        )

    def _licenses(self, tx: StoreTx, event: SeatEvent) -> None:
        cost = self._cost(event)
        lines = [f"The license count changed: {event.detail}. {self._arith(event)}."]
        if cost is not None:
            lines.append(f"Prorated cost of the added licenses: {cost}.")
        self.raise_alert(
            tx,
            LICENSES_KEY,
            f"licenses:{event.seats}",
            f"License count changed: {event.detail}",
            lines,
            (
                ("Seats", "Consumed", "Available", "Cost"),
                [(event.seats, event.consumed, event.seats - event.consumed, cost or "-")],
            ),
        )


# -- delivery --------------------------------------------------------------------------------


class MailSender(Protocol):
    def send(self, mail: Mail) -> None: ...


class EmailHandler:
    """The outbox worker's handler for kind "email": send the mail or raise (to retry later)."""

    def __init__(self, mailer: MailSender):
        self.mailer = mailer

    def __call__(self, message: OutboxMessage) -> None:
        p = message.payload
        if not isinstance(p.get("subject"), str) or not isinstance(p.get("text"), str):
            raise ValueError(f"outbox email {message.seq}: payload needs subject and text")
        html = p.get("html")
        self.mailer.send(
            Mail(
                subject=p["subject"],
                text=p["text"],
                html=html if isinstance(html, str) else None,
                date=message.created,
                # Stable across retries: a resend after a lost acknowledgement is recognisable.
                message_id=(f"<outbox-{message.seq}-{message.created:%Y%m%dT%H%M%S%f}@seat-agent>"),
            )
        )


# -- digest ----------------------------------------------------------------------------------


def digest_stamp(now: datetime, period: timedelta) -> str:
    """The period ``now`` falls in: its date for daily (or longer) digests, else its start."""
    if period >= timedelta(days=1):
        return now.date().isoformat()
    step = max(int(period.total_seconds()), 60)
    start = datetime.fromtimestamp(int(now.timestamp()) // step * step, tz=UTC)
    return start.strftime("%Y-%m-%dT%H:%MZ")


def send_digest(
    store: Store, alerts: Alerts, now: datetime, period: timedelta = timedelta(days=1)
) -> bool:
    """Queue one digest mail (seats, the queue with positions, the ledger of the last
    ``period``) when ``[alerts] digest`` is on; True when queued. Deduplicated per period
    (outbox key ``digest:<date>``), so a restarted or second scheduler sends no second copy."""
    if not (alerts.settings.enabled and alerts.settings.digest):
        return False
    stamp = digest_stamp(now, period)
    since = now - period
    with store.write() as tx:
        pool = tx.pool.current()
        waiting = tx.users.queued_count()
        queue = tx.users.queued(limit=DIGEST_ROWS)
        entries = tx.ledger.entries(since=since, limit=1000)
        available = pool.seats - pool.consumed
        sections = [
            Section(
                "Seats",
                [],
                (
                    ("Seats", "Consumed", "Available", "Queued"),
                    [(pool.seats, pool.consumed, available, waiting)],
                ),
            )
        ]
        if queue:
            lines = [] if waiting <= len(queue) else [f"First {len(queue)} of {waiting} shown."]
            sections.append(
                Section(
                    "Queue",
                    lines,
                    (
                        ("Position", "User", "Queued since"),
                        [(u.queue_position, u.user_name, _at(u.seat.queued_at)) for u in queue],
                    ),
                )
            )
        else:
            sections.append(Section("Queue", ["Nobody is waiting for a seat."]))
        counts = Counter(e.kind for e in entries)
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none"
        shown = entries[-DIGEST_ROWS:]
        lines = [f"Seat changes: {summary}."]
        if len(shown) < len(entries):
            more = "+" if len(entries) >= 1000 else ""
            lines.append(f"Last {len(shown)} of {len(entries)}{more} shown.")
        sections.append(
            Section(
                f"Changes since {_at(since)}",
                lines,
                (
                    ("At", "Change", "User", "Seats", "Consumed", "Cost", "Detail"),
                    [
                        (
                            _at(e.at),
                            e.kind,
                            e.user_name or "-",
                            e.seats_after,
                            e.consumed_after,
                            e.cost if e.cost is not None else "-",
                            e.detail or "",
                        )
                        for e in shown
                    ],
                )
                if shown
                else None,
            )
        )
        subject = f"Digest {stamp}: {pool.consumed} of {pool.seats} seats in use, {waiting} queued"
        return alerts.raise_report(
            tx, DIGEST_KEY, stamp, subject, sections, outbox_key=f"digest:{stamp}"
        )


def _at(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt is not None else "-"
