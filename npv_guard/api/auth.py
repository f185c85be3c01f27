"""Bearer tokens, one or more per professional; the config holds only their SHA-256 digests.

A token is 32 random bytes (256 bits), so a plain SHA-256 is enough: there is nothing to
brute-force that a slow password hash would protect. The presented token is hashed and its digest
looked up; the raw token is never compared, stored or logged.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping

TOKEN_PREFIX = "npvg_"  # lets secret scanners and humans recognise a leaked token


def mint_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenBook:
    """Which professional each token acts for."""

    def __init__(self, digests: Mapping[str, str]) -> None:
        self._owners = {digest.lower(): professional for digest, professional in digests.items()}

    def __len__(self) -> int:
        return len(self._owners)

    def professional_for(self, authorization: str | None) -> str | None:
        """The professional of an `Authorization: Bearer <token>` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 512:
            return None
        # A lookup by digest: timing reveals nothing usable, as the attacker cannot choose the
        # digest of what they send.
        return self._owners.get(token_digest(token))
