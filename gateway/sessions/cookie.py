"""The cookie store: the whole session, encrypted, in one or a few numbered cookies."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from gateway.bounded import Bounded
from gateway.config.model import Config
from gateway.crypto import InvalidSealed, Sealer
from gateway.errors import HandshakeFailed
from gateway.sessions.base import (
    CookieJar,
    Loaded,
    Session,
    SessionStore,
    cookie_max_age,
    present_names,
)
from gateway.sessions.codec import InvalidSession, decode_session, encode_session

log = logging.getLogger(__name__)

#: Longest value per cookie: browsers keep about 4096 bytes of name, value and attributes.
CHUNK_SIZE = 3800
#: Most cookies one session may take; more would crowd out the docs site's own cookies.
MAX_CHUNKS = 5
#: Opened sessions remembered by their sealed token, so a returning reader's cookie is not
#: decrypted and parsed on every request. The token is authenticated, so the mapping is safe.
OPENED_CACHE = 2048


class CookieStore(SessionStore):
    """Keeps the session in the browser, sealed with ``session.secrets`` (AES-256-GCM)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._sealer = Sealer(config.session.secrets, "session",
                              max_token=CHUNK_SIZE * MAX_CHUNKS)
        # Binding the ciphertext to the cookie name stops one gateway cookie being
        # replayed as another (the login-state cookie uses the same secrets).
        self._aad = self.cookies.name.encode("utf-8")
        self._opened: Bounded[str, Session] = Bounded(OPENED_CACHE)

    def _chunk_name(self, index: int) -> str:
        return f"{self.cookies.name}.{index}"

    def _assemble(self, cookies: Mapping[str, str],
                  ours: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
        """The sealed token the cookies carry, and which of ``ours`` are not part of it."""
        base = self.cookies.name
        if base in cookies:
            return cookies[base], tuple(n for n in ours if n != base)
        parts: list[str] = []
        used: list[str] = []
        for index in range(MAX_CHUNKS):
            name = self._chunk_name(index)
            if name not in cookies:
                break
            parts.append(cookies[name])
            used.append(name)
        if not parts:
            return None, ours
        return "".join(parts), tuple(n for n in ours if n not in used)

    async def load(self, cookies: Mapping[str, str]) -> Loaded:
        """The session in the request's cookies; anonymous plus stale names when unusable."""
        base = self.cookies.name
        if len(cookies) == 1 and base in cookies:
            # The usual request: one whole cookie, most often one opened before.
            session = self._opened.get(cookies[base])
            if session is not None:
                return Loaded(None, stale=(base,)) if session.expired() else Loaded(session)
        ours = present_names(self, cookies)
        if not ours:
            return Loaded(None)
        if self.cookies.name in cookies and len(ours) > 1:
            # A single cookie beside chunks: one of them was planted (cookie tossing from a
            # sibling domain or path), and which is the reader's cannot be told.
            return Loaded(None, stale=ours)
        token, extra = self._assemble(cookies, ours)
        if token is None:
            return Loaded(None, stale=ours)
        session = self._opened.get(token)
        if session is None:
            try:
                session = decode_session(self._sealer.open(token, self._aad))
            except (InvalidSealed, InvalidSession) as exc:
                log.debug("session cookie rejected: %s", exc)
                return Loaded(None, stale=ours)
            self._opened.put(token, session)
        if session.expired():
            return Loaded(None, stale=ours)
        return Loaded(session, stale=extra)

    async def save(self, session: Session, cookies: Mapping[str, str], jar: CookieJar) -> None:
        """Seal the session into the jar, split in chunks when large; clear leftover chunks."""
        token = self._sealer.seal(encode_session(session), self._aad)
        chunks = [token[i:i + CHUNK_SIZE] for i in range(0, len(token), CHUNK_SIZE)]
        if len(chunks) > MAX_CHUNKS:
            raise HandshakeFailed(
                f"The session is too large for cookies ({len(token)} bytes after encryption, "
                f"at most {CHUNK_SIZE * MAX_CHUNKS}): the user object is too big. "
                "Set `session.store: redis` to keep sessions server-side.",
                code="session_too_large",
            )
        names = ([self.cookies.name] if len(chunks) == 1
                 else [self._chunk_name(i) for i in range(len(chunks))])
        max_age = cookie_max_age(session)
        for name in present_names(self, cookies):
            if name not in names:
                jar.delete(name)
        for name, chunk in zip(names, chunks, strict=True):
            jar.set(name, chunk, max_age)

    async def delete(self, cookies: Mapping[str, str], jar: CookieJar) -> None:
        """Clear every session cookie; a sealed cookie cannot be revoked, only forgotten."""
        for name in {self.cookies.name, *present_names(self, cookies)}:
            jar.delete(name)
