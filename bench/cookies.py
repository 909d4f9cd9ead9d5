"""Logged-in readers for the benchmark: sessions saved straight into the gateway's store.

The harness loads the very config file the gateway runs with and calls the store's
``save``, so the cookie store seals with the same secrets and the Redis store writes
into the same Redis the gateway reads.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from gateway.config.load import load_config
from gateway.sessions import create_store
from gateway.sessions.base import CookieJar, Session
from gateway.user import User

# Sessions last longer than any run, so none expires mid-measurement.
SESSION_SECONDS = 6 * 3600.0


def reader(index: int, now: float) -> User:
    """A typical reader: a subject, two groups, a little content."""
    return User(sub=f"reader-{index}", expires_at=now + SESSION_SECONDS,
                groups=("readers", "beta"),
                content={"firstName": "Ada", "plan": "team", "id": index})


async def make_cookie_headers(config_file: Path, count: int) -> list[str]:
    """``count`` distinct sessions, each as a ready ``Cookie`` header value."""
    config = load_config(config_file)
    store = create_store(config)
    headers: list[str] = []
    try:
        now = time.time()
        for index in range(count):
            session = Session(id=secrets.token_urlsafe(24), user=reader(index, now),
                              method="jwt", created_at=now, refreshed_at=now)
            jar = CookieJar()
            await store.save(session, {}, jar)
            headers.append("; ".join(f"{name}={value}"
                                     for name, (value, _age) in sorted(jar.sets.items())))
    finally:
        await store.close()
    return headers


def cookie_headers(config_file: Path, count: int) -> list[str]:
    """Blocking wrapper around ``make_cookie_headers``."""
    return asyncio.run(make_cookie_headers(config_file, count))


def write_cookie_file(path: Path, headers: list[str]) -> Path:
    """One Cookie header value per line, for the load generator's script to rotate through."""
    path.write_text("".join(f"{header}\n" for header in headers))
    path.chmod(0o600)
    return path
