"""Session stores, and the factory that picks the one ``session.store`` names."""

from __future__ import annotations

from gateway.config.model import Config
from gateway.sessions.base import SessionStore
from gateway.sessions.cookie import CookieStore
from gateway.sessions.redis import RedisStore


def create_store(config: Config) -> SessionStore:
    """The store ``session.store`` names."""
    if config.session.store == "redis":
        return RedisStore(config)
    return CookieStore(config)
