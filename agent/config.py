"""One typed settings model: the single source of truth for the TOML configuration file.

Every setting is documented once, here, by its ``Field(description=...)``; ``config.example.toml``
is checked against this model by a test. Unknown keys and bad values are refused at start with a
message that names the key.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.domain.billing import BillingTerms
from agent.domain.license import (
    AccountStatus,
    LicensePolicy,
    PolicyError,
    StatusRule,
    merge_statuses,
)


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the HTTP server.")
    workers: int = Field(2, ge=1, le=64, description="gunicorn worker processes.")
    threads: int = Field(
        4,
        ge=1,
        le=64,
        description="Request threads per worker. Threads of one worker share one GIL: for"
        " the lowest tail latency use more workers with fewer threads (docs/performance.md).",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted; larger -> 413."
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a client has to send a request's line and headers (from"
        " connecting, or from a kept-alive request's first byte); later -> 408 and the"
        " connection is closed. The request is read before a thread takes it, so a slow"
        " client holds no thread (docs/deployment.md).",
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Seconds a client has to send a request's body after its headers;"
        " later -> 408 and the connection is closed.",
    )
    json_logs: bool = Field(False, description="Log one JSON object per line.")
    rate_limit_per_minute: int = Field(
        0,
        ge=0,
        description="Requests per minute per bearer token and worker process; over it -> 429"
        " with Retry-After. 0 turns it off.",
    )
    auth_failures_per_minute: int = Field(
        30,
        ge=0,
        description="Failed authentications (401) per minute per client address and worker"
        " process; over it, every request from that address to /scim, /admin or /metrics gets"
        " 429 with Retry-After until the budget refills. 0 turns it off.",
    )


class DatabaseSettings(Section):
    url: str = Field(
        "sqlite:///seat-agent.db",
        description="SQLAlchemy URL: sqlite:///path.db (default) or postgresql://user@host/db.",
    )

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if "://" not in value:
            return value  # not a URL at all: the database check says so, naming the key
        scheme = value.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                "seat-agent runs on SQLite (sqlite:///path.db) or PostgreSQL"
                " (postgresql://user@host/db)"
            )
        return value


class AuthSettings(Section):
    scim_token: str | None = Field(None, description="Bearer token for /scim/v2.")
    scim_token_env: str = Field(
        "SEAT_AGENT_SCIM_TOKEN", description="Environment variable read when scim_token is unset."
    )
    admin_token: str | None = Field(None, description="Bearer token for /admin.")
    admin_token_env: str = Field(
        "SEAT_AGENT_ADMIN_TOKEN",
        description="Environment variable read when admin_token is unset.",
    )

    scim_tokens: list[str] = Field(
        default_factory=list,
        description="More accepted SCIM tokens (rotation without downtime: add the new one, "
        "switch the IdP, remove the old one).",
    )
    scim_token_hashes: list[str] = Field(
        default_factory=list,
        description="Accepted SCIM tokens given only as 'sha256:<hex>' digests (never stored"
        " in clear); `seat-agent hash-token` prints one.",
    )
    admin_token_hashes: list[str] = Field(
        default_factory=list, description="Accepted admin tokens as 'sha256:<hex>' digests."
    )
    session_secret: str | None = Field(
        None,
        description="Key for the /admin/ status page session cookies; the same on every host."
        " Unset: derived from the admin token digests (then anyone who can read a digest could"
        " sign a session, so set it when admin tokens are given only as hashes).",
    )
    session_secret_env: str = Field(
        "SEAT_AGENT_SESSION_SECRET",
        description="Environment variable read when session_secret is unset.",
    )

    @model_validator(mode="after")
    def _hash_format(self) -> AuthSettings:
        for h in [*self.scim_token_hashes, *self.admin_token_hashes]:
            hexpart = h.removeprefix("sha256:")
            if (
                not h.startswith("sha256:")
                or len(hexpart) != 64
                or not all(c in "0123456789abcdefABCDEF" for c in hexpart)
            ):
                raise ValueError("token hashes must look like 'sha256:<64 hex digits>'")
        return self

    def resolved_scim_token(self) -> str | None:
        return self.scim_token or os.environ.get(self.scim_token_env) or None

    def resolved_admin_token(self) -> str | None:
        return self.admin_token or os.environ.get(self.admin_token_env) or None

    def resolved_session_secret(self) -> str | None:
        return self.session_secret or os.environ.get(self.session_secret_env) or None


class StatusSettings(Section):
    name: str = Field(description="Application account status name, e.g. Active, Locked, Room.")
    consumes: bool = Field(description="Whether a user in this status consumes a license seat.")
    pending: bool = Field(
        False, description="An invitation-like status: consumes only when count_pending is true."
    )


class RuleSettings(Section):
    status: str = Field(description="Status given when this rule matches; first match wins.")
    active: bool | None = Field(None, description="Match only users with this SCIM active value.")
    user_types: list[str] | None = Field(None, description="Match users whose userType is listed.")
    roles_any: list[str] | None = Field(None, description="Match users holding any listed role.")


OnFull = Literal["refuse", "queue", "fallback", "expand"]


class LicenseSettings(Section):
    seats: int = Field(10, ge=0, description="Licenses held (seats).")
    on_full: OnFull = Field("refuse", description="What happens when no seat is free.")
    max_seats: int | None = Field(None, ge=0, description="Ceiling for on_full = expand.")
    fallback_role: str | None = Field(None, description="Free role given under on_full = fallback.")
    free_roles: list[str] = Field(
        default_factory=list, description="Roles that never consume a seat."
    )
    free_user_types: list[str] = Field(
        default_factory=list, description="userTypes that never consume a seat."
    )
    inactive_consumes: bool = Field(
        False, description="Maximum-number contracts: deactivated users keep a seat."
    )
    count_pending: bool = Field(True, description="Pending (invited) statuses consume.")
    decrease: Literal["anytime", "renewal", "manual", "never"] = Field(
        "anytime",
        description="When licenses may be lowered: anytime, renewal (window), manual (at the"
        " vendor, recorded by an admin), never (the contracted count only rises).",
    )
    renewal_date: date | None = Field(None, description="Next contract renewal date.")
    renewal_window_days: int = Field(
        30,
        ge=0,
        description="With decrease = renewal: days before renewal_date a decrease is allowed.",
    )
    price_per_seat: Decimal = Field(Decimal("0"), ge=0, description="Price of one seat per period.")
    billing_period: Literal["monthly", "annual"] = Field("monthly", description="Billing period.")
    currency: str = Field("USD", description="Currency for billing figures.")
    metered: bool = Field(
        False, description="Metered plan: users active within the last month are billed."
    )
    statuses: list[StatusSettings] = Field(
        default_factory=list,
        description="Extra or overriding account statuses (defaults: Active, Inactive, Queued,"
        " Suspended).",
    )
    rules: list[RuleSettings] = Field(
        default_factory=list, description="Ordered rules from directory state to status."
    )
    group_roles: dict[str, str] = Field(
        default_factory=dict, description="Directory group displayName -> role."
    )
    low_seats_threshold: int = Field(
        1, ge=0, description="Alert when available seats drop to this."
    )
    near_full_percent: int = Field(
        90,
        ge=1,
        le=100,
        description="The status page shows the pool as near full (amber) from this percentage"
        " of the licensed seats in use, or from low_seats_threshold seats left if that comes"
        " first.",
    )

    @model_validator(mode="after")
    def _coherent(self) -> LicenseSettings:
        if self.on_full == "expand" and self.max_seats is None:
            raise ValueError("on_full = 'expand' needs max_seats")
        if self.max_seats is not None and self.max_seats < self.seats:
            raise ValueError("max_seats must be at least seats")
        if self.on_full == "fallback" and not self.fallback_role:
            raise ValueError("on_full = 'fallback' needs fallback_role")
        return self


class ScimSettings(Section):
    max_page_size: int = Field(1000, ge=1, description="Largest count served in one list page.")
    default_page_size: int = Field(100, ge=1, description="count used when the client sends none.")
    seat_extension: bool = Field(
        False,
        description="Show each user's seat state to SCIM clients as the read-only extension "
        "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User (declared in /Schemas and "
        "/ResourceTypes, returned on every User, filterable). Off: seat state is read from "
        "/admin/users/<id>, /admin/queue, the CLI and the status page.",
    )


DOWNSTREAM_TYPES = ("none", "scim", "webhook", "kintone")
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = (24, 64)  # Standard Webhooks, "Signature scheme": 24 to 64 random bytes


def webhook_secret_problem(secret: str) -> str | None:
    """Why ``secret`` is not a Standard Webhooks symmetric secret (``whsec_`` and the base64 of
    24 to 64 random bytes; spec "Signature scheme"), or None when it is one."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return f"must start with {WEBHOOK_SECRET_PREFIX!r} (whsec_ and base64 of random bytes)"
    body = secret[len(WEBHOOK_SECRET_PREFIX) :]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "is not base64 after 'whsec_'"
    low, high = WEBHOOK_SECRET_BYTES
    if not low <= len(raw) <= high:
        return f"must decode to {low} to {high} bytes (it has {len(raw)}); generate a new one"
    return None


def _http_url(value: str | None, key: str) -> str | None:
    if value is None:
        return None
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{key} must be an http:// or https:// URL, got {value!r}")
    return value


class DownstreamSettings(Section):
    type: Literal["none", "scim", "webhook", "kintone"] = Field(
        "none",
        description="The downstream application: none, a SCIM 2.0 server (scim), signed"
        " webhooks to an application without SCIM (webhook, docs/webhooks.md), or Kintone"
        " through the cybozu.com User API (kintone; docs/agent.md says what it needs).",
    )
    url: str | None = Field(
        None,
        description="Base URL (SCIM: ending in /scim/v2; webhook: the endpoint that receives"
        " the POSTed events; kintone: the cybozu.com domain, e.g. https://example.cybozu.com).",
    )
    token: str | None = Field(
        None,
        description="Bearer token for the downstream application (webhook: optional, sent"
        " as Authorization on every request besides the signature; kintone: the password of"
        " login_name, or a cybozu.com API token when login_name is unset).",
    )
    token_env: str = Field(
        "SEAT_AGENT_DOWNSTREAM_TOKEN", description="Environment variable read when token is unset."
    )
    secret: str | None = Field(
        None,
        description="webhook: the Standard Webhooks signing secret, whsec_ and the base64 of"
        " 24 to 64 random bytes; shared with the receiver, which verifies each request.",
    )
    secret_env: str = Field(
        "SEAT_AGENT_WEBHOOK_SECRET", description="Environment variable read when secret is unset."
    )
    count_url: str | None = Field(
        None,
        description="webhook: optional URL answering GET with the application's active users"
        ' ({"active": N}); reconcile and reductions compare it with the agent\'s count.'
        " Unset: reconcile skips the comparison and says so.",
    )
    login_name: str | None = Field(
        None,
        description="kintone: login name of a cybozu.com administrator; its password (token /"
        " token_env) goes in X-Cybozu-Authorization. Unset: token is sent as a cybozu.com API"
        " token (Authorization: Bearer).",
    )
    role_groups: dict[str, str] = Field(
        default_factory=dict,
        description="kintone: SCIM role value -> Kintone group (role) code the user is put in;"
        " the user leaves the other groups listed here and keeps any group not listed. Empty:"
        " roles are not managed (and not compared by reconcile).",
    )
    on_delete: Literal["delete", "disable"] = Field(
        "delete",
        description="kintone: what a user deleted in the identity provider becomes: deleted in"
        " Kintone (with its data), or kept but inactive.",
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one downstream request.")
    role_attribute: str = Field(
        "auto",
        description="SCIM: the application's User attribute that receives the user's role: "
        "'auto' (roles, when the application declares it), a core attribute such as roles, "
        "entitlements or title, an extension attribute as '<schema URN>:<name>', or '' (not "
        "sent). Checked against the application's /Schemas at start.",
    )
    status_attribute: str = Field(
        "auto",
        description="SCIM: the application's User attribute that receives the application "
        "status (Active, Locked, ...): 'auto' (the seat-agent extension's appStatus, when the "
        "application declares that extension), an attribute as for role_attribute, or '' "
        "(not sent).",
    )
    push_groups: bool = Field(
        False,
        description="SCIM: also create, update and delete the groups (with their members) in "
        "the application; it must declare a Group resource type.",
    )
    backoff_base_seconds: float = Field(2.0, gt=0, description="First retry delay; doubles.")
    backoff_max_seconds: float = Field(600.0, gt=0, description="Longest retry delay.")
    alert_after_attempts: int = Field(
        5, ge=1, description="Failed attempts of one change before a delivery-failing alert."
    )

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: object) -> object:
        if value not in DOWNSTREAM_TYPES:
            raise ValueError(
                f"downstream type {value!r} is not supported: use 'none', 'scim', 'webhook'"
                " or 'kintone'"
            )
        return value

    @field_validator("count_url")
    @classmethod
    def _count_url(cls, value: str | None) -> str | None:
        return _http_url(value, "count_url")

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and (problem := webhook_secret_problem(value)) is not None:
            raise ValueError(f"secret {problem}")
        return value

    def resolved_token(self) -> str | None:
        return self.token or os.environ.get(self.token_env) or None

    def resolved_secret(self) -> str | None:
        return self.secret or os.environ.get(self.secret_env) or None

    @model_validator(mode="after")
    def _needs_url(self) -> DownstreamSettings:
        if self.type != "none" and not self.url:
            raise ValueError(f"downstream type '{self.type}' needs url")
        if self.type in ("scim", "kintone"):
            _http_url(self.url, "url")
        if self.type == "webhook":
            _http_url(self.url, "url")
            secret = self.resolved_secret()
            if secret is None:
                raise ValueError(
                    "downstream type 'webhook' needs secret (or the environment variable"
                    f" {self.secret_env}, named by secret_env): whsec_ and the base64 of"
                    " 24 to 64 random bytes, shared with the receiver"
                )
            problem = webhook_secret_problem(secret)
            if problem is not None:  # only an environment secret gets here unchecked
                raise ValueError(f"secret from the environment ({self.secret_env}) {problem}")
        elif self.count_url is not None:
            raise ValueError("count_url is only read for type = 'webhook'")
        if self.type != "scim":
            if self.push_groups:
                raise ValueError("push_groups is a setting of type 'scim' only")
            for key in ("role_attribute", "status_attribute"):
                if getattr(self, key) != "auto":
                    raise ValueError(f"{key} is a setting of type 'scim' only")
        if self.type != "kintone":
            for key in ("login_name", "role_groups"):
                if getattr(self, key):
                    raise ValueError(f"{key} is a setting of type 'kintone' only")
            if self.on_delete != "delete":
                raise ValueError("on_delete is a setting of type 'kintone' only")
        if self.type == "kintone" and not self.resolved_token():
            what = (
                f"the password of login_name {self.login_name!r}"
                if self.login_name
                else "a cybozu.com API token"
            )
            raise ValueError(
                f"type 'kintone' needs {what} in token or in the environment variable"
                f" {self.token_env}"
            )
        for role, group in self.role_groups.items():
            if not role.strip() or not group.strip():
                raise ValueError(
                    f"role_groups: {role!r} = {group!r}: give a role value and a Kintone group code"
                )
        return self


class SchedulerSettings(Section):
    embedded: bool = Field(
        True, description="Run the scheduler inside `seat-agent serve` (single-host default)."
    )
    reconcile_minutes: float = Field(15, gt=0, description="Reconcile interval.")
    queue_drain_seconds: float = Field(60, gt=0, description="Queue safety-net interval.")
    outbox_seconds: float = Field(5, gt=0, description="Outbox delivery interval.")
    workflow_seconds: float = Field(60, gt=0, description="Reduction workflow interval.")
    digest_hours: float = Field(24, gt=0, description="Alert digest interval.")
    renewal_check_hours: float = Field(12, gt=0, description="Renewal window check interval.")
    lease_seconds: float = Field(
        60, ge=5, description="Scheduler lease length; another host takes over after it lapses."
    )
    outbox_retention_days: float = Field(
        7, gt=0, description="Delivered outbox rows older than this are purged (daily job)."
    )


class AlertSettings(Section):
    enabled: bool = Field(False, description="Send admin alert emails.")
    smtp_host: str = Field("localhost", description="SMTP server.")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port.")
    sender: str = Field("seat-agent@localhost", description="From address.")
    recipients: list[str] = Field(default_factory=list, description="Admin addresses.")
    starttls: bool = Field(False, description="Upgrade the connection with STARTTLS.")
    ssl: bool = Field(False, description="Connect with implicit TLS (SMTPS).")
    username: str | None = Field(None, description="SMTP login user.")
    password_env: str = Field(
        "SEAT_AGENT_SMTP_PASSWORD", description="Environment variable holding the SMTP password."
    )
    subject_prefix: str = Field("[seat-agent]", description="Prefix of every subject.")
    digest: bool = Field(False, description="Also send a periodic digest of seats and queue.")
    html: bool = Field(False, description="Add an HTML part to each mail.")

    @model_validator(mode="after")
    def _needs_recipients(self) -> AlertSettings:
        if self.enabled and not self.recipients:
            raise ValueError("alerts enabled without recipients")
        return self


class ReductionSettings(Section):
    grace_days: int = Field(
        14, ge=0, description="Users created within this many days are never chosen."
    )
    protected_roles: list[str] = Field(
        default_factory=lambda: ["Owner"], description="Roles never chosen for deactivation."
    )
    break_glass: list[str] = Field(
        default_factory=list, description="userNames never chosen (break-glass accounts)."
    )
    auto_approve: bool = Field(False, description="Proposals start without approval.")
    cleanup: bool = Field(
        False,
        description="Delete deactivated users after cleanup_after_days (their data in the"
        " application goes with them).",
    )
    cleanup_after_days: int = Field(30, ge=0, description="Grace period before cleanup.")
    propose_unused_above: int | None = Field(
        None, ge=1, description="Propose a reduction when this many seats stay unused ..."
    )
    propose_after_days: float = Field(7, gt=0, description="... for this long.")
    propose_at_renewal: bool = Field(
        False, description="Propose matching licenses to consumption when the window opens."
    )
    verify_timeout_hours: float = Field(
        24,
        gt=0,
        description="How long verifying waits for the application to show the deactivations"
        " before the reduction fails.",
    )


class Settings(Section):
    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    auth: AuthSettings = Field(default_factory=AuthSettings)  # type: ignore[arg-type]
    license: LicenseSettings = Field(default_factory=LicenseSettings)  # type: ignore[arg-type]
    scim: ScimSettings = Field(default_factory=ScimSettings)  # type: ignore[arg-type]
    downstream: DownstreamSettings = Field(default_factory=DownstreamSettings)  # type: ignore[arg-type]
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)  # type: ignore[arg-type]
    alerts: AlertSettings = Field(default_factory=AlertSettings)  # type: ignore[arg-type]
    reductions: ReductionSettings = Field(default_factory=ReductionSettings)  # type: ignore[arg-type]


_SECRET_WORDS = ("token", "secret", "password")


def _without_password(value: str) -> str:
    """A URL with its password (``scheme://user:password@host``) shown as ``***``."""
    scheme, sep, rest = value.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return value
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _describe(err: ValidationError) -> str:
    """One line naming each bad key and, unless it is a secret, the value it was given."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        value = e.get("input")
        shown = (
            e["type"] != "extra_forbidden"
            and isinstance(value, str | int | float | bool)
            and not any(word in key.lower() for word in _SECRET_WORDS)
        )
        if shown and isinstance(value, str):
            value = _without_password(value)
        lines.append(f"{key} = {value!r}: {msg}" if shown else f"{key}: {msg}")
    return "invalid configuration: " + "; ".join(lines)


def license_policy(settings: LicenseSettings) -> LicensePolicy:
    """The policy for ``[license]``; the live license count lives in the seat pool, not here."""
    extra = [AccountStatus(s.name, s.consumes, s.pending) for s in settings.statuses]
    policy = LicensePolicy(
        seats=settings.seats,
        on_full=settings.on_full,
        max_seats=settings.max_seats,
        fallback_role=settings.fallback_role,
        free_roles=frozenset(settings.free_roles),
        free_user_types=frozenset(settings.free_user_types),
        inactive_consumes=settings.inactive_consumes,
        count_pending=settings.count_pending,
        statuses=merge_statuses(extra),
        rules=tuple(
            StatusRule(
                status=r.status,
                active=r.active,
                user_types=frozenset(r.user_types) if r.user_types is not None else None,
                roles_any=frozenset(r.roles_any) if r.roles_any is not None else None,
            )
            for r in settings.rules
        ),
        group_roles=dict(settings.group_roles),
    )
    policy.validate()
    return policy


def billing_terms(settings: LicenseSettings) -> BillingTerms:
    return BillingTerms(
        price_per_seat=settings.price_per_seat,
        period=settings.billing_period,
        renewal_date=settings.renewal_date,
        currency=settings.currency,
    )


def settings_from_mapping(data: dict) -> Settings:
    """Validate a parsed TOML document; raise ConfigError naming each bad key."""
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None
    try:
        license_policy(settings.license)
    except PolicyError as err:
        raise ConfigError(f"invalid configuration: license: {err}") from None
    return settings


def load_settings(path: str | os.PathLike[str] | None) -> Settings:
    """Read the TOML file at ``path``; ``None`` gives the embedded default."""
    if path is None:
        return Settings()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return settings_from_mapping(data)
