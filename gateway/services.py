"""The services one app is built from, held in one place for the handlers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config.model import Audience, Config
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


@dataclass(init=False)
class Site:
    """One build of the docs (an entry of ``upstream.audiences``, or the only one): where
    its pages come from, and what is known of them (kept apart from other builds')."""

    name: str
    origin: Origin
    pages: Pages
    audience: Audience | None

    def __init__(self, name: str, origin: Origin, pages: Pages,
                 audience: Audience | None = None) -> None:
        self.name = name
        self.origin = origin
        self.pages = pages
        self.audience = audience

    def takes(self, user: User | None) -> bool:
        """Whether this build serves ``user`` (None: anonymous), the earlier ones not."""
        audience = self.audience
        if audience is None or audience.catch_all:
            return True
        if user is None:
            return False
        return audience.authenticated or any(group in user.groups for group in audience.groups)


@dataclass
class Gateway:
    """Everything ``build_app`` wires together; read-only on the request path."""

    config: Config
    store: SessionStore
    handshake: Handshake
    policy: Policy
    identity: IdentityHeaders
    signer: AssertionSigner
    #: Where docs requests go: one build (``upstream.url`` or ``upstream.root``), or one
    #: per audience (``upstream.audiences``, first match wins, the last takes everyone).
    sites: tuple[Site, ...]
    http: aiohttp.ClientSession
    metrics: Metrics
    is_gateway_cookie: Callable[[str], bool]
    #: Used login tokens and OAuth states, Info API answers, refresh locks.
    keyspace: Keyspace

    def site_for(self, user: User | None) -> Site:
        """The build that serves ``user``."""
        for site in self.sites:
            if site.takes(user):
                return site
        return self.sites[-1]

    @property
    def varies(self) -> bool:
        """Whether the build a reader gets depends on who they are."""
        return len(self.sites) > 1

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
