"""A real SMTP server on loopback (aiosmtpd) that keeps every message it receives."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str | None:
        """The text/<subtype> body, or None when the message has no such part."""
        for p in self.message.walk():
            if p.get_content_type() == f"text/{subtype}":
                return str(p.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]
        return None

    @property
    def text(self) -> str:
        body = self.part("plain")
        assert body is not None, "no text/plain part"
        return body


@dataclass
class Inbox:
    """The aiosmtpd handler: accepts every message and stores it."""

    received: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd API)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), message)  # type: ignore[arg-type]
        )
        return "250 Message accepted for delivery"

    def subjects(self) -> list[str]:
        return [r.subject for r in self.received]


class SmtpServer:
    """Start, stop and restart (on the same port) a loopback SMTP server."""

    def __init__(self, port: int):
        self.host = "127.0.0.1"
        self.port = port
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def received(self) -> list[Received]:
        return self.inbox.received
