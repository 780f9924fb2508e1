"""Email alerts to administrators over SMTP."""

from agent.notify.mail import Mail, Section, SmtpMailer, render_html, render_table, render_text

__all__ = ["Mail", "Section", "SmtpMailer", "render_html", "render_table", "render_text"]
