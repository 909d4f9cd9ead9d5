"""The JWT handshake (Mintlify style): the customer's login signs the user object as a JWT.

The browser arrives at ``jwt-callback?redirect=/path#<jwt>``; the callback page reads the
fragment (which never reaches a server log) and POSTs it back. The token is verified
(``jwt_verify``: algorithm, key, signature, claims), then its user object is read, then
the replay cache uses it up. Only then does a session start.
"""

from __future__ import annotations

import html
import json
import logging
import re
import secrets
import time
from collections.abc import Sequence
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from aiohttp import web
from mypy_extensions import mypyc_attr

from gateway.crypto import InvalidSealed, Sealer, constant_time_equal, random_token
from gateway.errors import HandshakeFailed, Unavailable
from gateway.handshakes.base import Handshake, HandshakeDeps, Route
from gateway.handshakes.jws import TokenError
from gateway.handshakes.jwt_verify import JwtVerifier
from gateway.handshakes.replay import ReplayCache
from gateway.redirects import post_from_this_site, safe_return_path
from gateway.responses import error_page, own_page
from gateway.scope import SCOPE, Scope
from gateway.sessions.base import CookieJar
from gateway.user import User, parse_user

log = logging.getLogger("gateway")
audit = logging.getLogger("gateway.audit")

#: Registered claims of the token itself; the rest of the payload is the user object.
JWT_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "host", "jti")
#: GitBook's and ReadMe's query parameters (``accept_query_token``).
QUERY_TOKENS = ("jwt_token", "auth_token")
CSRF_MAX_AGE = 600
#: Seconds a login bound to its browser (``bind_state``) may take, from /login to callback.
STATE_TTL = 600
#: Logins one browser may have under way at once (several tabs); the oldest gives way.
MAX_PENDING = 4
STATE_PURPOSE = "jwt-state"
_ANCHOR = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")


# A plain class when compiled: its class-level code and status override the base's.
@mypyc_attr(native_class=False)
class CrossSite(HandshakeFailed):
    """A login POST from another site (login CSRF)."""

    status = 403
    code = "cross_site"


def with_redirect(url: str, return_to: str, state: str | None = None) -> str:
    """``url`` with ``redirect=<return_to>`` (and ``state``, when given) set in its query;
    its other parameters are kept."""
    parts = urlsplit(url)
    ours = ("redirect", "state") if state is not None else ("redirect",)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    query.append(("redirect", return_to))
    if state is not None:
        query.append(("state", state))
    return urlunsplit(parts._replace(query=urlencode(query)))


def cookie_values(request: web.Request, name: str) -> list[str]:
    """Every value the request's Cookie headers give ``name`` (a planted copy shows as two)."""
    values: list[str] = []
    for header in request.headers.getall("Cookie", ()):
        if name not in header:
            continue
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                values.append(value)
    return values


def state_mismatch() -> TokenError:
    """The refusal of a token that does not carry a state this browser is waiting for."""
    return TokenError("This login token does not belong to a login started in this browser "
                      "(it carries no state, another one, or one already used). "
                      "Please log in again.", code="state_mismatch")


class LoginStates:
    """The logins one browser started under ``bind_state``, sealed into a cookie of its own.

    Each state goes to the login URL and must come back as the token's ``state`` claim.
    """

    def __init__(self, session_secrets: Sequence[str], cookie: str) -> None:
        self.cookie = cookie
        self.sealer = Sealer(session_secrets, STATE_PURPOSE)
        # Bound to the cookie's name, so no other gateway cookie can stand in for it.
        self.aad = cookie.encode("utf-8")

    def pending(self, request: web.Request, now: float) -> list[tuple[str, float]]:
        """The unexpired states the request's cookie holds, oldest first.

        Empty without the cookie, or when it is unreadable or given twice (one of the two was
        planted, and which is the reader's cannot be told).
        """
        values = cookie_values(request, self.cookie)
        if len(values) != 1:
            return []
        try:
            record = json.loads(self.sealer.open(values[0], self.aad))
        except (InvalidSealed, ValueError, RecursionError):
            return []
        out: list[tuple[str, float]] = []
        for item in record if isinstance(record, list) else []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) \
                    and isinstance(item[1], float | int) and 0 <= now - item[1] < STATE_TTL:
                out.append((item[0], float(item[1])))
        return out

    def write(self, pending: list[tuple[str, float]], jar: CookieJar) -> None:
        """Put the cookie holding ``pending`` into the jar; none left clears it."""
        if not pending:
            jar.delete(self.cookie)
            return
        record = json.dumps([[state, created] for state, created in pending])
        jar.set(self.cookie, self.sealer.seal(record.encode("utf-8"), self.aad), STATE_TTL)


class JwtHandshake(Handshake):
    """Visitors log in on the customer's site, which sends back a signed JWT."""

    method = "jwt"

    def __init__(self, deps: HandshakeDeps) -> None:
        super().__init__(deps)
        self.settings = self.config.handshake.jwt
        self.verifier = JwtVerifier(deps)
        self.replay = ReplayCache(deps.keyspace)
        self.csrf_cookie = deps.store.cookies.name + "_jwt"
        # Under bind_state, "state" is the token's own claim, not part of the user object.
        self.protocol_claims = (*JWT_CLAIMS, "state") if self.settings.bind_state else JWT_CLAIMS
        self.states = (LoginStates(self.config.session.secrets,
                                   deps.store.cookies.name + "_jwt_state")
                       if self.settings.bind_state else None)

    async def start(self) -> None:
        """Fetch the JWKS ahead of the first login (a failure is retried on use)."""
        if self.verifier.jwks is not None:
            try:
                await self.verifier.jwks.refresh(force=True)
            except Unavailable:
                pass  # already logged; logins retry the fetch

    def routes(self) -> list[Route]:
        """The callback under the prefix, and Mintlify's ``/login/jwt-callback``."""
        return [Route("GET", "jwt-callback", self.callback_page),
                Route("POST", "jwt-callback", self.callback),
                Route("GET", "/login/jwt-callback", self.callback_page, absolute=True),
                Route("POST", "/login/jwt-callback", self.callback, absolute=True)]

    async def login(self, request: web.Request, return_to: str) -> web.StreamResponse:
        """Send the browser to the login URL, or show a chooser when there are several.

        Under ``bind_state`` the login URL also gets a fresh ``state``, kept in this browser.
        """
        urls = self.settings.login_urls
        jar = CookieJar()
        state = self._new_state(request, jar) if self.states is not None else None
        if len(urls) == 1:
            response = web.Response(status=302, headers={
                "Location": with_redirect(urls[0].url, return_to, state),
                "Cache-Control": "no-store"})
        else:
            choices = [{"name": entry.name, "url": with_redirect(entry.url, return_to, state)}
                       for entry in urls]
            response = own_page(request, "login.html", 200,
                                {"title": "Log in", "choices": choices})
        self.deps.store.cookies.apply(jar, response)
        return response

    def _new_state(self, request: web.Request, jar: CookieJar) -> str:
        """A fresh state, added to the ones this browser is already waiting for."""
        assert self.states is not None
        now = time.time()
        state = random_token(24)
        pending = [*self.states.pending(request, now), (state, now)][-MAX_PENDING:]
        self.states.write(pending, jar)
        return state

    async def authenticate(self, token: str, request: web.Request, jar: CookieJar) -> User:
        """Verify a login token, use it (and under ``bind_state`` its state) up, and return
        its user object; changes to the state cookie go into ``jar``."""
        now = time.time()
        try:
            compact, claims = await self.verifier.verify(token, now)
            data = {k: v for k, v in claims.items() if k not in self.protocol_claims}
            user = parse_user(data, subject_paths=self.config.user.subject,
                              max_age=self.config.session.max_age, now=now)
            if self.states is not None:
                await self._use_state(request, claims.get("state"), now, jar)
            # The signed part, not the whole token: an ECDSA signature has two valid forms.
            ttl = float(claims["exp"]) + self.settings.leeway - now
            if not await self.replay.first_use(compact.signing_input, ttl):
                raise TokenError("this login token was already used; log in again",
                                 code="replayed")
        except HandshakeFailed as exc:
            self.refused(exc)
            raise
        return user

    async def _use_state(self, request: web.Request, state: object, now: float,
                         jar: CookieJar) -> None:
        """Use up the token's state, which must be one this browser is waiting for."""
        assert self.states is not None
        if not isinstance(state, str) or not state:
            raise state_mismatch()
        pending = self.states.pending(request, now)
        # Every entry is compared, so the time taken does not tell which one matched.
        matches = [constant_time_equal(known, state) for known, _created in pending]
        if not any(matches):
            raise state_mismatch()
        # A copy of the cookie (another tab, a restored one) cannot use the state again.
        if not await self.replay.first_use(f"{STATE_PURPOSE}:{state}", STATE_TTL):
            raise state_mismatch()
        self.states.write([entry for entry, used in zip(pending, matches, strict=True)
                           if not used], jar)

    def refused(self, exc: HandshakeFailed) -> None:
        """Log and count a refused login, with its reason and never the token."""
        log.warning("jwt login refused", extra=exc.log_fields())
        self.outcome("failed", exc.code)

    async def start_session(self, request: web.Request, user: User, location: str,
                            jar: CookieJar | None = None) -> web.Response:
        """A fresh session for ``user`` and a 303 to ``location``."""
        jar = CookieJar() if jar is None else jar
        await self.new_session(user, jar, request)
        self.outcome("ok", "login")
        audit.info("login", extra={"event": "login", "sub": user.sub, "method": self.method})
        response = web.Response(status=303, headers={"Location": location,
                                                     "Cache-Control": "no-store"})
        self.deps.store.cookies.apply(jar, response)
        return response

    async def callback_page(self, request: web.Request) -> web.StreamResponse:
        """The tiny page that moves the fragment's token into a same-origin POST."""
        base = self.config.server.base_path
        return_to = safe_return_path(request.query.get("redirect"), base_path=base)
        csrf = secrets.token_urlsafe(24)
        login = html.escape(f"{self.config.server.route_base}/login?"
                            f"{urlencode({'redirect': return_to})}", quote=True)
        body = _CALLBACK_BODY.format(action=html.escape(request[SCOPE].path, quote=True),
                                     redirect=html.escape(return_to, quote=True), csrf=csrf,
                                     login=login)
        response = own_page(request, "callback.html", 200, {"title": "Logging in"},
                            form=body, script=_CALLBACK_SCRIPT)
        jar = CookieJar()
        jar.set(self.csrf_cookie, csrf, CSRF_MAX_AGE)
        self.deps.store.cookies.apply(jar, response)
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """Verify the posted token, start a session, 303 to the validated ``redirect``."""
        try:
            form = await _read_form(request)
            self._check_origin(request, form)
            token = form.get("token", "").strip()
            if not token:
                raise TokenError("the request carries no token", code="malformed")
        except HandshakeFailed as exc:
            self.refused(exc)
            return self._failure(request, exc)
        jar = CookieJar()
        try:
            user = await self.authenticate(token, request, jar)
        except HandshakeFailed as exc:  # already logged and counted
            return self._failure(request, exc)
        value = request.query.get("redirect") or form.get("redirect")
        location = safe_return_path(value, base_path=self.config.server.base_path)
        anchor = form.get("anchor", "")
        if anchor and _ANCHOR.match(anchor) and "#" not in location:
            location += "#" + anchor
        if self.csrf_cookie in request.cookies:
            jar.delete(self.csrf_cookie)
        return await self.start_session(request, user, location, jar)

    def _check_origin(self, request: web.Request, form: dict[str, str]) -> None:
        """Same-origin POSTs only: Sec-Fetch-Site decides when sent, then Origin."""
        ok = post_from_this_site(request.headers.get("Sec-Fetch-Site"),
                                 request.headers.get("Origin"), self.config.server.public_origin)
        if ok is None:
            # The callback page's no-referrer policy makes browsers send "null" over plain
            # http; its form then carries the value of a cookie only this site could set.
            cookie = request.cookies.get(self.csrf_cookie, "")
            ok = bool(cookie) and constant_time_equal(cookie, form.get("csrf", ""))
        if not ok:
            raise CrossSite("A login can only be completed from this docs site.")

    def _failure(self, request: web.Request, exc: HandshakeFailed) -> web.StreamResponse:
        # The error boundary answers a POST with JSON; a browser's form POST gets a page.
        if "text/html" not in request.headers.get("Accept", ""):
            raise exc
        return error_page(request, exc.status, exc.code, exc.message,
                          [(f"{self.config.server.route_base}/login", "Log in again")])

    async def intercept(self, request: web.Request) -> web.StreamResponse | None:
        """``?jwt_token=`` / ``?auth_token=`` on a docs URL: log in, then drop the parameter."""
        if not self.settings.accept_query_token or request.method not in ("GET", "HEAD"):
            return None
        name = next((n for n in QUERY_TOKENS if n in request.query), None)
        if name is None:
            return None
        jar = CookieJar()
        user = await self.authenticate(request.query[name], request, jar)
        scope: Scope = request[SCOPE]
        rest = "&".join(part for part in scope.query.split("&")
                        if part and unquote_plus(part.partition("=")[0]) not in QUERY_TOKENS)
        location = safe_return_path(scope.path + (f"?{rest}" if rest else ""),
                                    base_path=self.config.server.base_path)
        return await self.start_session(request, user, location, jar)


async def _read_form(request: web.Request) -> dict[str, str]:
    """The POST's string fields, from a form or a JSON object."""
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except (ValueError, RecursionError):
            raise TokenError("the request body is not JSON", code="malformed") from None
        if not isinstance(data, dict):
            raise TokenError("the request body is not a JSON object", code="malformed")
    else:
        data = dict(await request.post())
    fields = {k: v for k, v in data.items() if isinstance(v, str)}
    if "token" in data and "token" not in fields:
        raise TokenError("the token must be a string", code="malformed")
    return fields


_CALLBACK_BODY = """<p id="status">Logging you in&hellip;</p>
<noscript><p>Logging in needs JavaScript. Turn it on and reload this page, or
<a href="{login}">start again</a>.</p></noscript>
<p id="none" hidden>This address carries no login token. <a href="{login}">Log in</a>.</p>
<form id="login" method="post" action="{action}" hidden>
<input type="hidden" name="token"><input type="hidden" name="anchor">
<input type="hidden" name="redirect" value="{redirect}">
<input type="hidden" name="csrf" value="{csrf}"></form>"""

# Reads "#<jwt>" or the legacy "#jwt=<jwt>&anchor=<id>", takes it out of the address bar
# and the history first, then posts it from this origin.
_CALLBACK_SCRIPT = """(function () {
  "use strict";
  var token = location.hash.slice(1), anchor = "";
  if (/^jwt=/.test(token)) {
    var params = new URLSearchParams(token);
    token = params.get("jwt") || "";
    anchor = params.get("anchor") || "";
  }
  history.replaceState(null, "", location.pathname + location.search);
  if (!token) {
    document.getElementById("status").hidden = true;
    document.getElementById("none").hidden = false;
    return;
  }
  var form = document.getElementById("login");
  form.elements.token.value = token;
  form.elements.anchor.value = anchor;
  form.submit();
})();"""
