"""The services one app is built from, held in one place for the handlers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config.model import Config
from gateway.handshakes.base import Handshake
from gateway.html.page import Pages
from gateway.identity import AssertionSigner, IdentityHeaders
from gateway.metrics import Metrics
from gateway.paths import relative_to_base
from gateway.policy import Policy
from gateway.proxy.origin import Origin
from gateway.sessions.base import Session, SessionStore
from gateway.shared import Keyspace
from gateway.user import User


@dataclass
class Gateway:
    """Everything ``build_app`` wires together; read-only on the request path."""

    config: Config
    store: SessionStore
    handshake: Handshake
    policy: Policy
    pages: Pages
    identity: IdentityHeaders
    signer: AssertionSigner
    #: Where docs requests go: the upstream (``upstream.url``) or the built folder
    #: (``upstream.root``). Both answer ``ping`` and ``close``; the pipeline serves each
    #: its way, and learns pages from each its way (``pipeline.page_learner``).
    origin: Origin
    http: aiohttp.ClientSession
    metrics: Metrics
    is_gateway_cookie: Callable[[str], bool]
    #: Used login tokens and OAuth states, Info API answers, refresh locks.
    keyspace: Keyspace

    def relative_path(self, path: str) -> str | None:
        """The decoded path below the public base path, or None when outside it."""
        return relative_to_base(path, self.config.server.base_path)

    def identity_headers(self, user: User | None, session: Session | None) -> list[tuple[str, str]]:
        """The assertion and plain headers for a logged-in visitor; [] for anonymous.

        Without a gateway session (shared_session) the assertion has no ``sid``: nothing
        would name one session rather than every session of the reader.
        """
        if user is None:
            return []
        sid = session.id if session is not None else None
        return self.identity.upstream_headers(user, sid, self.handshake.method)

    def audit(self, event: str, **fields: Any) -> None:
        """One audit line per login, logout or denial; never tokens."""
        _audit.info(event, extra={"event": event, **fields})

    def observe_upstream(self, seconds: float) -> None:
        """Record the upstream's time to headers."""
        self.metrics.observe_upstream(seconds)


GATEWAY = web.AppKey("gateway", Gateway)


_audit = logging.getLogger("gateway.audit")
