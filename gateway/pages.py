"""HTML pages from the docs: page metadata, the client script, server-side gating."""

from __future__ import annotations

from gateway.config import Config
from gateway.errors import Denied, NeedsLogin
from gateway.html import inject_script, read_page_meta, script_tag
from gateway.policy import Decision, Outcome, Policy
from gateway.proxy import Scope
from gateway.user import User


def return_path(scope: Scope) -> str:
    """Where to come back to after login: the path (and query) asked for."""
    return scope.path + (f"?{scope.query}" if scope.query else "")


def enforce(decision: Decision, scope: Scope) -> None:
    """Raise for a decision that blocks the request; nothing for ALLOW."""
    if decision.outcome is Outcome.NEEDS_LOGIN:
        raise NeedsLogin(return_to=return_path(scope))
    if decision.outcome is Outcome.DENIED:
        raise Denied()


class Pages:
    """Decides whether an HTML page needs reading, and rewrites it for one reader."""

    def __init__(self, config: Config, policy: Policy) -> None:
        self.policy = policy
        self.inject = config.identity.inject_script
        src = config.server.route_base + "/client.js"
        self.tag = script_tag(src, compat="mintlify" if "mintlify" in config.server.compat
                              else None)

    def wants(self, decision: Decision) -> bool:
        """Whether an HTML page on this decision must be read before it is sent."""
        return decision.meta_applies or self.inject

    def process(self, page: bytes, decision: Decision, user: User | None,
                scope: Scope) -> tuple[Decision, bytes]:
        """Apply the page's own metadata (raising if it blocks), then rewrite it."""
        if decision.meta_applies:
            decision = self.policy.decide_meta(decision, read_page_meta(page), user)
        enforce(decision, scope)
        if self.inject:
            page = inject_script(page, self.tag)
        return decision, page
