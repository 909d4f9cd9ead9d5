"""Each login token is usable once: the tokens already seen, until they expire.

Kept in the app's keyspace (``gateway.shared``): this process's memory, or Redis with
``session.store: redis``, so a token used on one replica is refused on every other.
"""

from __future__ import annotations

import hashlib

from gateway.errors import Unavailable
from gateway.shared import Keyspace

KEY_PREFIX = "dg:jti:"


def token_digest(token: str | bytes) -> str:
    """SHA-256 hex of a token (the keyspace never holds the token itself)."""
    data = token.encode("utf-8") if isinstance(token, str) else token
    return hashlib.sha256(data).hexdigest()


class ReplayCache:
    """Remembers tokens until they expire, by digest."""

    def __init__(self, keyspace: Keyspace) -> None:
        self.keyspace = keyspace

    async def first_use(self, token: str | bytes, ttl: float) -> bool:
        """Record the token for ``ttl`` seconds; False when it was already recorded.

        Raises ``gateway.errors.Unavailable`` when the keyspace cannot be reached.
        """
        try:
            return await self.keyspace.first_use(KEY_PREFIX + token_digest(token), ttl)
        except Unavailable:
            raise Unavailable("The login cannot be checked right now (Redis is unreachable); "
                              "try again in a moment.") from None
