"""Build the domain's LicensePolicy and BillingTerms from the typed settings."""

from __future__ import annotations

from agent.config import LicenseSettings
from agent.domain.billing import BillingTerms
from agent.domain.license import (
    AccountStatus,
    LicensePolicy,
    StatusRule,
    merge_statuses,
)


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
