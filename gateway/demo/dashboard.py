"""The demo dashboard: where readers log in for the ``jwt`` and ``shared_session`` methods.

``jwt``: a click signs the reader's user object (Ed25519, short-lived) and sends the browser
to the gateway's JWT callback with the token in the URL fragment. ``shared_session``: a
click starts a dashboard session under the dashboard's own cookie, which reaches the
gateway too (cookies are not port-specific) and which the gateway checks with the Info API.
"""

from __future__ import annotations

import html
import time
from urllib.parse import urlencode, urlsplit

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.crypto import random_token
from gateway.demo.accounts import Account, find_account, picker_page
from gateway.keys import kid_of
from gateway.redirects import is_same_origin, safe_return_path

COOKIE = "demo_dashboard_session"
INFO_API_PATH = "/api/docs/user-info"
#: Lifetime of a login token: it only has to survive one redirect.
TOKEN_TTL = 60


class Dashboard:
    """The dashboard app; ``method`` is ``jwt`` or ``shared_session``."""

    def __init__(self, method: str, gateway_url: str, route_base: str,
                 signing_key: Ed25519PrivateKey | None = None,
                 api_url: str | None = None) -> None:
        if method == "jwt" and signing_key is None:
            raise ValueError("the jwt method needs a signing key")
        self.method = method
        self.api_url = api_url
        self.gateway_url = gateway_url.rstrip("/")
        self.route_base = route_base
        self._key = signing_key
        self._sessions: dict[str, Account] = {}

    def __repr__(self) -> str:
        return f"Dashboard(method={self.method!r}, sessions={len(self._sessions)})"

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/", self.home)
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_get("/logout", self.logout)
        app.router.add_post("/logout", self.logout)
        app.router.add_get(INFO_API_PATH, self.info_api)
        return app

    def current(self, request: web.Request) -> Account | None:
        """The reader the dashboard cookie names, if any."""
        token = request.cookies.get(COOKIE)
        return self._sessions.get(token) if token else None

    async def home(self, request: web.Request) -> web.Response:
        """Who is logged in here, and the way back to the docs."""
        account = self.current(request)
        if self.method == "jwt":
            who = "Readers log in here; the dashboard signs a one-minute JWT for the docs."
        elif account is not None:
            who = f"Logged in as {html.escape(account.username)}."
        else:
            who = "Not logged in to the dashboard."
        docs = html.escape(self.gateway_url + "/", quote=True)
        page = (f"<!doctype html><title>Demo dashboard</title><h1>Demo dashboard</h1>"
                f'<p>{who}</p><p><a href="{docs}">Open the docs</a></p>')
        return web.Response(text=page, content_type="text/html")

    async def login_page(self, request: web.Request) -> web.Response:
        """The reader picker; ``redirect`` is where the docs want the reader back."""
        page = picker_page("Log in to Acme Cloud", "This is the demo dashboard. Pick a reader "
                           "and the docs receive their user object.", "/login",
                           {"redirect": request.query.get("redirect", "")})
        return web.Response(text=page, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def login(self, request: web.Request) -> web.Response:
        """Log the picked reader in and send the browser back to the docs."""
        form = await request.post()
        account = find_account(form.get("username"))
        if account is None:
            return web.Response(status=400, text="Pick one of the demo readers.")
        redirect = form.get("redirect")
        redirect = redirect if isinstance(redirect, str) else ""
        if self.method == "jwt":
            return _see_other(self.jwt_callback_url(account, redirect))
        token = random_token(24)
        self._sessions[token] = account
        response = _see_other(self.docs_url(redirect))
        response.set_cookie(COOKIE, token, path="/", httponly=True, samesite="Lax")
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """End the dashboard session, then back to the docs (``redirect``, checked).

        The gateway sends readers here on logout (``shared_session.logout_url``): with a
        shared session, the dashboard's session is the docs session.
        """
        token = request.cookies.get(COOKIE)
        if token:
            self._sessions.pop(token, None)
        response = _see_other(self.docs_url(request.query.get("redirect", "")))
        response.del_cookie(COOKIE, path="/")
        return response

    async def info_api(self, request: web.Request) -> web.Response:
        """The Info API: the user object of the session cookie's reader, or 401."""
        account = self.current(request)
        if account is None:
            return web.json_response({"error": "unauthenticated"}, status=401)
        return web.json_response(account.user_object(self.api_url),
                                 headers={"Cache-Control": "no-store"})

    def sign(self, account: Account, now: float | None = None) -> str:
        """A login token: the user object plus ``iat``, ``exp`` and the docs ``host``."""
        assert self._key is not None
        issued = int(time.time() if now is None else now)
        payload = {**account.user_object(self.api_url), "iat": issued, "exp": issued + TOKEN_TTL,
                   "host": urlsplit(self.gateway_url).netloc}
        return jwt.encode(payload, self._key, algorithm="EdDSA",
                          headers={"kid": kid_of(self._key)})

    def jwt_callback_url(self, account: Account, redirect: str) -> str:
        """The gateway's JWT callback, with the return path and the token in the fragment."""
        path = safe_return_path(redirect)
        return (f"{self.gateway_url}{self.route_base}/jwt-callback?"
                f"{urlencode({'redirect': path})}#{self.sign(account)}")

    def docs_url(self, redirect: str) -> str:
        """``redirect`` when it is a docs URL or path; the docs home otherwise."""
        if is_same_origin(redirect, self.gateway_url):
            parts = urlsplit(redirect)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            return self.gateway_url + safe_return_path(path)
        return self.gateway_url + safe_return_path(redirect)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})

