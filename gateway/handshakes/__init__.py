"""The login handshakes, and the factory that picks the one ``handshake.method`` names."""

from __future__ import annotations

from gateway.handshakes.base import Handshake, HandshakeDeps
from gateway.handshakes.jwt import JwtHandshake
from gateway.handshakes.oauth import OAuthHandshake
from gateway.handshakes.shared_session import SharedSessionHandshake


def create_handshake(deps: HandshakeDeps) -> Handshake:
    """The handshake ``handshake.method`` names."""
    method = deps.config.handshake.method
    if method == "jwt":
        return JwtHandshake(deps)
    if method == "shared_session":
        return SharedSessionHandshake(deps)
    return OAuthHandshake(deps)
