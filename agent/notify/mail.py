"""Admin alert mail over SMTP (smtplib): the message, its plain-text and HTML tables, the sender.

Sending happens in the outbox worker, never in a SCIM request: ``SmtpMailer.send`` raises on
any failure so the worker keeps the message and retries it later.
"""

from __future__ import annotations

import html as html_escape
import logging
import os
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from agent.config import AlertSettings

log = logging.getLogger("seat_agent.mail")

SMTP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Mail:
    """One alert mail. ``date`` is when the alert happened (not when a retry finally sent it);
    a stable ``message_id`` lets a mail client collapse a resend after an unacknowledged send."""

    subject: str
    text: str
    html: str | None = None
    date: datetime | None = None
    message_id: str | None = None


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with columns padded to their widest cell, readable in any mail client
    that shows text in a monospaced font (and still unambiguous in one that does not)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    width = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in width)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


@dataclass(frozen=True)
class Section:
    """One part of a mail body: an optional heading, some lines, an optional table."""

    title: str | None
    lines: Sequence[str]
    table: tuple[Sequence[str], Sequence[Sequence[object]]] | None = None


FOOTER = "seat-agent: one mail per change of state; repeats are not mailed."


def render_text(subject: str, sections: Sequence[Section]) -> str:
    """The plain-text body: the subject as a heading, then each section's lines and table."""
    out = [subject, "=" * min(len(subject), 78)]
    for s in sections:
        out.append("")
        if s.title:
            out += [s.title, "-" * len(s.title)]
        out += list(s.lines)
        if s.table is not None:
            if s.lines:
                out.append("")
            out.append(render_table(*s.table))
    out += ["", "-- ", FOOTER]
    return "\n".join(out) + "\n"


def render_html(subject: str, sections: Sequence[Section]) -> str:
    """The HTML alternative: the same heading, lines and tables as ``render_text``, escaped."""
    esc = html_escape.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><body style="font-family: sans-serif">',
        f"<h2>{esc(subject)}</h2>",
    ]
    for s in sections:
        if s.title:
            parts.append(f"<h3>{esc(s.title)}</h3>")
        parts += [f"<p>{esc(line)}</p>" for line in s.lines if line]
        if s.table is not None:
            headers, rows = s.table
            parts.append('<table border="1" cellpadding="4" style="border-collapse: collapse">')
            parts.append("<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in headers) + "</tr>")
            for row in rows:
                cells = "".join(f"<td>{esc('' if c is None else str(c))}</td>" for c in row)
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</table>")
    parts += [f"<p><small>{esc(FOOTER)}</small></p>", "</body></html>"]
    return "\n".join(parts)


class SmtpMailer:
    """Sends alert mail to ``settings.recipients`` through ``settings.smtp_host``.

    Implicit TLS when ``ssl``, else plain SMTP upgraded with STARTTLS when ``starttls``; login when
    ``username`` is set. Every failure raises (smtplib.SMTPException or OSError): the caller, the
    outbox worker, keeps the message and retries.
    """

    def __init__(self, settings: AlertSettings, password: str | None = None):
        self.settings = settings
        self.password = password

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> SmtpMailer:
        """The mailer with its password read from ``settings.password_env`` (never the file)."""
        return cls(settings, os.environ.get(settings.password_env) or None)

    def message(self, mail: Mail) -> EmailMessage:
        s = self.settings
        msg = EmailMessage()
        msg["Subject"] = mail.subject
        msg["From"] = s.sender
        msg["To"] = ", ".join(s.recipients)
        if mail.date is not None:
            msg["Date"] = format_datetime(mail.date)
        msg["Message-ID"] = mail.message_id or make_msgid(domain="seat-agent")
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to alerts
        msg.set_content(mail.text)
        if mail.html is not None:
            msg.add_alternative(mail.html, subtype="html")  # multipart/alternative
        return msg

    def send(self, mail: Mail) -> None:
        s = self.settings
        if not s.recipients:
            raise ValueError("no alert recipients configured ([alerts] recipients)")
        msg = self.message(mail)
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.ssl:
            smtp = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=SMTP_TIMEOUT_SECONDS, context=context
            )
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=SMTP_TIMEOUT_SECONDS)
        with smtp:
            if s.starttls and not s.ssl:
                smtp.starttls(context=context)
            if s.username:
                smtp.login(s.username, self.password or "")
            refused = smtp.send_message(msg, from_addr=s.sender, to_addrs=list(s.recipients))
        if refused:
            # Some recipients took it: a retry would resend to them, so report and move on.
            log.warning("alert mail %r refused for %s", mail.subject, sorted(refused))
