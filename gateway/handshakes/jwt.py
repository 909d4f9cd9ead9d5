"""The JWT handshake (Mintlify style)."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from gateway.handshakes.base import Handshake


class JwtHandshake(Handshake):
    """Visitors log in on the customer's site, which sends back a signed JWT."""

    method = "jwt"

    async def login(self, request: web.Request, return_to: str) -> web.StreamResponse:
        """Send the browser to the customer's login URL with the return path."""
        url = self.config.handshake.jwt.login_urls[0].url
        joiner = "&" if "?" in url else "?"
        return web.Response(status=302, headers={
            "Location": f"{url}{joiner}{urlencode({'redirect': return_to})}",
            "Cache-Control": "no-store"})
