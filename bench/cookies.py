"""Logged-in readers for the benchmark: sessions saved straight into the gateway's store.

The harness loads the very config file the gateway runs with and calls the store's
``save``, so the cookie store seals with the same secrets and the Redis store writes
into the same Redis the gateway reads.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from gateway.config.load import load_config
from gateway.sessions import create_store
from gateway.sessions.base import CookieJar, Session
from gateway.user import User

# Sessions last longer than any run, so none expires mid-measurement.
SESSION_SECONDS = 6 * 3600.0


READER_GROUPS = ("readers", "beta")
# The first name every reader has (the Material page's field shows it).
FIRST_NAME = "Ada"


def reader(index: int, now: float, groups: tuple[str, ...] = READER_GROUPS) -> User:
    """A typical reader: a subject, two groups, a little content."""
    return User(sub=f"reader-{index}", expires_at=now + SESSION_SECONDS, groups=groups,
                content={"firstName": FIRST_NAME, "plan": "team", "id": index})


def group_sets(count: int) -> Callable[[int], tuple[str, ...]]:
    """Reader ``i`` in one of ``count`` distinct group sets (``i % count``)."""
    return lambda index: ("readers", f"team-{index % count}")


def fresh_groups(index: int) -> tuple[str, ...]:
    """A group set of its own for every reader: an audience not seen before."""
    return ("readers", f"team-{secrets.token_hex(6)}", f"n{index}")


async def make_cookie_headers(config_file: Path, count: int,
                              groups: Callable[[int], tuple[str, ...]] | None = None
                              ) -> list[str]:
    """``count`` distinct sessions, each as a ready ``Cookie`` header value; ``groups``
    gives reader ``i``'s groups (default: the same two for everyone)."""
    config = load_config(config_file)
    store = create_store(config)
    headers: list[str] = []
    try:
        now = time.time()
        for index in range(count):
            user = reader(index, now, groups(index) if groups else READER_GROUPS)
            session = Session(id=secrets.token_urlsafe(24), user=user,
                              method="jwt", created_at=now, refreshed_at=now)
            jar = CookieJar()
            await store.save(session, {}, jar)
            headers.append("; ".join(f"{name}={value}"
                                     for name, (value, _age) in sorted(jar.sets.items())))
    finally:
        await store.close()
    return headers


def cookie_headers(config_file: Path, count: int,
                   groups: Callable[[int], tuple[str, ...]] | None = None) -> list[str]:
    """Blocking wrapper around ``make_cookie_headers``."""
    return asyncio.run(make_cookie_headers(config_file, count, groups))


def write_cookie_file(path: Path, headers: list[str]) -> Path:
    """One Cookie header value per line, for the load generator's script to rotate through."""
    path.write_text("".join(f"{header}\n" for header in headers))
    path.chmod(0o600)
    return path
