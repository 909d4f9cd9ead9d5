"""Session stores, and the factory that picks the one ``session.store`` names."""

from __future__ import annotations

from gateway.config.model import Config
from gateway.sessions.base import SessionStore
from gateway.sessions.cookie import CookieStore
from gateway.sessions.redis import RedisStore
from gateway.shared import Keyspace


def create_store(config: Config, keyspace: Keyspace | None = None) -> SessionStore:
    """The store ``session.store`` names; a Redis store uses the app's ``keyspace``."""
    if config.session.store == "redis":
        return RedisStore(config, keyspace=keyspace)
    return CookieStore(config)
