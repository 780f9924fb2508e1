"""What every HTTP connector shares: one request with requests' failures as DeliveryError, and
``Retry-After`` read as seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from agent.connectors.base import DeliveryError


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delay-seconds or an HTTP-date (RFC 7231 §7.1.3).
    None when absent or unreadable."""
    if header is None:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def send(
    session: requests.Session, method: str, url: str, where: str, **kwargs: Any
) -> requests.Response:
    """``session.request``; a timeout or a connection that fails is a temporary DeliveryError
    that says so (``where`` names the call: "POST /Users")."""
    try:
        return session.request(method, url, **kwargs)
    except requests.Timeout as err:
        raise DeliveryError(f"{where}: timed out ({err.__class__.__name__})") from err
    except requests.ConnectionError as err:
        raise DeliveryError(f"{where}: cannot connect: {err}") from err
    except requests.RequestException as err:
        raise DeliveryError(f"{where}: {err}") from err
