"""Bearer-token checks, constant time, on token digests (tokens never reach logs)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_digest(authorization: str | None) -> str | None:
    """SHA-256 of the bearer token in an Authorization header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return digest(token.strip())


class TokenSet:
    """Accepted bearer tokens, kept only as SHA-256 digests.

    Every candidate is compared (no early exit) so timing does not reveal which one matched.
    """

    def __init__(self, digests: Iterable[str]):
        self._digests = [d.lower() for d in digests if d]

    @property
    def digests(self) -> tuple[str, ...]:
        """The accepted digests, sorted (what the admin session key is derived from)."""
        return tuple(sorted(set(self._digests)))

    @classmethod
    def of(cls, *tokens: str | None) -> TokenSet:
        return cls(digest(t) for t in tokens if t)

    def accepts(self, authorization: str | None) -> bool:
        presented = bearer_digest(authorization)
        if presented is None or not self._digests:
            return False
        ok = False
        for candidate in self._digests:
            ok |= hmac.compare_digest(presented, candidate)
        return ok
