"""What the store raises for the services to map (a SCIM 409, a 400 for unknown members)."""

from __future__ import annotations

from collections.abc import Sequence


class Conflict(Exception):
    """A uniqueness constraint would be violated (SCIM 409 uniqueness)."""


def user_name_in_use(user_name: str) -> Conflict:
    """The refusal of a userName another user holds (in any case)."""
    return Conflict(f"userName '{user_name}' is already in use")


class UnknownMembers(Exception):
    """Group members that name no existing user."""

    def __init__(self, ids: Sequence[str]):
        super().__init__(", ".join(ids))
        self.ids = list(ids)
