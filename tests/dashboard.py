"""A demo customer dashboard: its own login form and session cookie, and the Info API.

The Info API (``GET /api/docs/user-info``) answers the Mintlify user object of the
reader whose ``session`` cookie it receives, or 401. For tests it can misbehave on
purpose (``mode``), count its calls, and hold its answers until released.
"""

from __future__ import annotations

import asyncio
import html
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

INFO_API_PATH = "/api/docs/user-info"
#: How the Info API can behave: answer properly, or fail in one of these ways.
MODES = ("ok", "forbidden", "down", "slow", "500", "redirect", "html", "garbage", "wrong_shape")


@dataclass
class Account:
    """A dashboard login and the user object its Info API answers for it."""

    password: str = field(repr=False)
    user: dict[str, Any]


def default_accounts() -> dict[str, Account]:
    """Two readers: ``ada`` (admin) and ``bob`` (beta), password ``<name>-password``."""
    return {
        "ada": Account("ada-password", {
            "sub": "ada", "groups": ["admin"],
            "content": {"firstName": "Ada", "email": "ada@example.com", "plan": "enterprise"},
            "apiPlaygroundInputs": {"header": {"Authorization": "Bearer demo-key-ada"}}}),
        "bob": Account("bob-password", {
            "sub": "bob", "groups": ["beta"],
            "content": {"firstName": "Bob", "email": "bob@example.com", "plan": "free"}}),
    }


_FORM = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Dashboard login</title>
</head><body><h1>Log in to the dashboard</h1>{error}
<form method="post" action="/login"><input type="hidden" name="redirect" value="{redirect}">
<label>User <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Log in</button></form></body></html>"""

_HOME = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Dashboard</title>
</head><body><h1>Dashboard</h1><p>{who}</p>
<form method="post" action="/logout"><button type="submit">Log out</button></form>
</body></html>"""


class Dashboard:
    """The dashboard app and the switches that make its Info API misbehave."""

    def __init__(self, accounts: Mapping[str, Account] | None = None, *,
                 cookie_name: str = "session", cookie_domain: str | None = None,
                 return_origins: tuple[str, ...] = (), redirect_to: str | None = None,
                 slow_seconds: float = 60.0) -> None:
        self.accounts = dict(accounts if accounts is not None else default_accounts())
        self.cookie_name = cookie_name
        self.cookie_domain = cookie_domain
        #: Origins (``http://docs.example.com``) a login may send the browser back to.
        self.return_origins = return_origins
        #: Where the ``redirect`` mode points the Info API's answer.
        self.redirect_to = redirect_to
        self.slow_seconds = slow_seconds
        self.mode = "ok"
        #: Where the dashboard is served (``http://host:port``), once it is.
        self.url = ""
        #: Info API calls received, and the cookies each carried.
        self.info_calls = 0
        self.info_cookies: list[dict[str, str]] = []
        #: When set to an unset Event, the Info API holds every answer until it is set.
        self.gate: asyncio.Event | None = None
        self.sessions: dict[str, str] = {}
        self._released = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/", self.home)
        self.app.router.add_get("/login", self.login_form)
        self.app.router.add_post("/login", self.login)
        self.app.router.add_post("/logout", self.logout)
        self.app.router.add_get(INFO_API_PATH, self.info_api)
        self.app.on_shutdown.append(self._shutdown)

    def __repr__(self) -> str:
        return f"Dashboard(mode={self.mode!r}, sessions={len(self.sessions)})"

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
        """Serve on ``host:port`` (0: any free port) and set ``url``; clean up the runner."""
        runner = web.AppRunner(self.app)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self.url = f"http://{host}:{runner.addresses[0][1]}"
        return runner

    def start_session(self, username: str) -> str:
        """Log a reader in without the form; the value of their session cookie."""
        if username not in self.accounts:
            raise KeyError(username)
        token = secrets.token_urlsafe(24)
        self.sessions[token] = username
        return token

    def end_sessions(self, username: str) -> None:
        """Log a reader out everywhere."""
        for token in [t for t, name in self.sessions.items() if name == username]:
            del self.sessions[token]

    def current(self, request: web.Request) -> str | None:
        """The logged-in username for a request's session cookie, if any."""
        token = request.cookies.get(self.cookie_name)
        return self.sessions.get(token) if token else None

    async def home(self, request: web.Request) -> web.Response:
        """Who is logged in, and a logout button."""
        who = self.current(request)
        text = f"Logged in as {html.escape(who)}." if who else "Not logged in."
        return web.Response(text=_HOME.format(who=text), content_type="text/html")

    async def login_form(self, request: web.Request) -> web.Response:
        """The login form; ``redirect`` is where the browser returns afterwards."""
        redirect = self._return_target(request.query.get("redirect"))
        return web.Response(text=_FORM.format(error="", redirect=html.escape(redirect)),
                            content_type="text/html")

    async def login(self, request: web.Request) -> web.Response:
        """Check the form, set the session cookie and send the browser back."""
        form = await request.post()
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        redirect = self._return_target(str(form.get("redirect", "")))
        account = self.accounts.get(username)
        if account is None or not secrets.compare_digest(account.password, password):
            page = _FORM.format(error="<p>Wrong user or password.</p>",
                                redirect=html.escape(redirect))
            return web.Response(status=401, text=page, content_type="text/html")
        response = web.Response(status=303, headers={"Location": redirect})
        response.set_cookie(self.cookie_name, self.start_session(username), path="/",
                            domain=self.cookie_domain, httponly=True, samesite="Lax")
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """End the session and clear its cookie."""
        token = request.cookies.get(self.cookie_name)
        if token:
            self.sessions.pop(token, None)
        response = web.Response(status=303, headers={"Location": "/login"})
        response.del_cookie(self.cookie_name, path="/", domain=self.cookie_domain)
        return response

    async def info_api(self, request: web.Request) -> web.StreamResponse:
        """The Mintlify user object for the session cookie, 401 without one, or a fault."""
        self.info_calls += 1
        self.info_cookies.append(dict(request.cookies))
        if self.gate is not None:
            await self.gate.wait()
        mode = self.mode
        if mode == "down":
            # The connection drops without an answer, as when the process dies mid-request.
            assert request.transport is not None
            request.transport.abort()
            raise web.HTTPServiceUnavailable()
        if mode == "slow":
            try:
                await asyncio.wait_for(self._released.wait(), self.slow_seconds)
            except TimeoutError:
                pass
        elif mode == "forbidden":
            return web.json_response({"error": "forbidden"}, status=403)
        elif mode == "500":
            return web.json_response({"error": "internal"}, status=500)
        elif mode == "redirect":
            raise web.HTTPFound(self.redirect_to or "/login")
        elif mode == "html":
            return web.Response(text=_FORM.format(error="", redirect="/"),
                                content_type="text/html")
        elif mode == "garbage":
            return web.Response(text='{"sub": "ada", "groups": [', content_type="application/json")
        elif mode == "wrong_shape":
            return web.json_response({"sub": "ada", "groups": "admin", "content": ["x"]})
        username = self.current(request)
        if username is None:
            return web.json_response({"error": "unauthenticated"}, status=401)
        return web.json_response(self.accounts[username].user,
                                 headers={"Cache-Control": "no-store"})

    def _return_target(self, value: str | None) -> str:
        if not value:
            return "/"
        if value.startswith("/") and not value.startswith("//"):
            return value
        parts = urlsplit(value)
        if f"{parts.scheme}://{parts.netloc}" in self.return_origins:
            return value
        return "/"

    async def _shutdown(self, app: web.Application) -> None:
        # Slow answers end with the server instead of holding its shutdown.
        self._released.set()
        if self.gate is not None:
            self.gate.set()


class Recorder:
    """A server that only records the requests it receives (for redirect targets)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.record)

    async def record(self, request: web.Request) -> web.Response:
        """Keep the request's headers; answer a user object so a follow would succeed."""
        self.requests.append(dict(request.headers))
        return web.json_response({"sub": "mallory", "groups": ["admin"]})
