"""The OAuth 2.0 handshake: authorization code + PKCE S256, optionally OpenID Connect.

The gateway is a client of the customer's authorization server. Pure parts (PKCE, URLs,
the state cookie, claims, answer interpretation) live in ``oauth_flow``; this module
does the HTTP, the session and the refresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from gateway.bounded import Bounded, KeyedLocks, OneTime
from gateway.errors import (
    GatewayError,
    HandshakeFailed,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.handshakes import oauth_flow as flow
from gateway.handshakes.base import Handshake, HandshakeDeps, Route, read_limited
from gateway.handshakes.jwks import JwksCache
from gateway.handshakes.jws import TokenError, check_header, split_jws, verified_claims
from gateway.responses import error_response
from gateway.sessions.base import CookieJar, Session
from gateway.user import User, parse_user

log = logging.getLogger(__name__)
audit = logging.getLogger("gateway.audit")

#: Largest answer read from the identity provider.
MAX_BODY = 1024 * 1024
#: Most login attempts (state cookies) one browser keeps at once.
MAX_ATTEMPTS = 5
#: Seconds between JWKS re-fetches for an unknown ``kid`` (key rotation).
JWKS_REFETCH = 30.0


class OAuthHandshake(Handshake):
    """Logs visitors in at the customer's OAuth 2.0 / OIDC server; refreshes their sessions."""

    method = "oauth"

    def __init__(self, deps: HandshakeDeps) -> None:
        super().__init__(deps)
        server = self.config.server
        self.oauth = self.config.handshake.oauth
        # Fixed from public_url: a Host header never decides where codes are sent.
        self.redirect_uri = f"{server.public_origin}{server.route_base}/callback"
        # Not "__Host-": that prefix forbids the narrower Path this cookie is given.
        stem = ("__Secure-" if server.https else "") + self.config.session.cookie_name
        self.codec = flow.StateCodec(self.config.session.secrets, stem)
        # A host next to the docs (a sibling subdomain) can set the state cookie above for
        # the docs host, but no "__Host-" cookie: each attempt is bound to this one, which
        # only the docs host can set. It needs https (the prefix requires Secure).
        self.binding_cookie = f"__Host-{self.config.session.cookie_name}_login" \
            if server.https else None
        # Mintlify's callback names live outside the prefix; the cookie must reach them.
        compat = "mintlify" in server.compat
        self.cookie_path = (server.base_path or "/") if compat else server.route_base
        self.timeout = aiohttp.ClientTimeout(total=self.oauth.timeout)
        self._endpoints: flow.Endpoints | None = None
        if not self.oauth.issuer:
            self._endpoints = flow.merge_endpoints(self.oauth, None)
        self._discovery_lock = asyncio.Lock()
        self._jwks: JwksCache | None = None
        self._locks = KeyedLocks()
        # Sessions refreshed (or ended: None) here, for requests that carried the old copy.
        self._recent: Bounded[str, Session | None] = Bounded()
        self._retry_at: Bounded[str, float] = Bounded()
        self._states = OneTime(self.codec.ttl)

    async def start(self) -> None:
        """Discover the provider; if it is down, start anyway and retry on the first login."""
        if self._endpoints is None:
            try:
                await self.endpoints()
            except GatewayError as exc:
                log.warning("OpenID discovery failed; retrying on the first login: %s",
                            exc.message)

    def routes(self) -> list[Route]:
        """The redirect URI, plus Mintlify's callback names (mounted with compat only)."""
        return [Route("GET", "callback", self.callback),
                Route("GET", "/login/callback/oauth", self.callback, absolute=True),
                Route("GET", "/mintlify-oauth-callback", self.callback, absolute=True)]

    # -- talking to the provider ------------------------------------------------------

    async def _fetch(self, method: str, url: str, what: str, code: str,
                     **kwargs: Any) -> tuple[int, bytes]:
        """Status and body (at most MAX_BODY); an outage is UpstreamError/UpstreamTimeout."""
        host = urlsplit(url).netloc
        try:
            async with self.deps.http.request(method, url, timeout=self.timeout,
                                              allow_redirects=False, **kwargs) as response:
                body = await read_limited(response, MAX_BODY + 1)
                return response.status, body[:MAX_BODY]
        except TimeoutError:
            raise UpstreamTimeout(f"The identity provider's {what} ({host}) did not answer in "
                                  "time; please try again.", code=code) from None
        except aiohttp.ClientError:
            raise UpstreamError(f"The identity provider's {what} ({host}) cannot be reached; "
                                "please try again.", code=code) from None

    async def endpoints(self) -> flow.Endpoints:
        """The provider's endpoints, discovering them now if that has not worked yet."""
        if self._endpoints is not None:
            return self._endpoints
        issuer = self.oauth.issuer or ""
        async with self._discovery_lock:
            if self._endpoints is None:
                url = issuer.rstrip("/") + "/.well-known/openid-configuration"
                try:
                    status, body = await self._fetch("GET", url, "discovery document",
                                                     "idp_error")
                    doc = flow.discovery_document(status, body, issuer)
                    self._endpoints = flow.merge_endpoints(self.oauth, doc)
                    for note in self._endpoints.notes:
                        log.warning("OpenID discovery (%s): %s", issuer, note)
                except (GatewayError, ValueError) as exc:
                    if self.oauth.authorization_url and self.oauth.token_url:
                        return flow.merge_endpoints(self.oauth, None)
                    reason = exc.message if isinstance(exc, GatewayError) else str(exc)
                    raise Unavailable(f"The identity provider at {issuer} cannot be used yet "
                                      f"(OpenID discovery failed: {reason}). Please try again "
                                      "shortly.", code="idp_unavailable") from None
        return self._endpoints

    async def _token(self, form: dict[str, str]) -> flow.TokenSet:
        url = (await self.endpoints()).token_url
        headers = flow.client_authentication(self.oauth, form)
        status, body = await self._fetch("POST", url, "token endpoint", "token_error", data=form,
                                         headers=headers)
        return flow.token_result(status, body, urlsplit(url).netloc)

    async def _signing_key(self, alg: str, kid: str | None, code: str, what: str) -> Any:
        if alg in flow.HMAC_ALGORITHMS:
            return (self.oauth.client_secret or "").encode()
        url = (await self.endpoints()).jwks_url
        if url is None:
            raise HandshakeFailed(f"No key set is known to verify the {what}; set "
                                  "handshake.oauth.jwks_url or issuer.", code=code)
        if self._jwks is None or self._jwks.url != url:
            self._jwks = JwksCache(self.deps.http, url, JWKS_REFETCH, timeout=self.oauth.timeout)
        try:
            return await self._jwks.get_key(kid, alg)
        except TokenError as exc:
            raise HandshakeFailed(f"The {what} cannot be verified: {exc.message}.",
                                  code=code) from None

    async def _verify(self, token: str, *, audience: str | None, code: str,
                      what: str) -> dict[str, Any]:
        """A provider's token read by the one strict JWS path login tokens take too."""
        endpoints = await self.endpoints()
        try:
            compact = split_jws(token, flow.MAX_PROVIDER_TOKEN)
            # ID tokens say JWT or nothing; access tokens as JWTs (RFC 9068) say at+jwt.
            check_header(compact, endpoints.algorithms, types=("JWT", "at+jwt"))
        except TokenError as exc:
            raise HandshakeFailed(f"The {what} is not accepted: {exc.message}.",
                                  code=code) from None
        key = await self._signing_key(compact.alg, compact.kid, code, what)
        try:
            claims = verified_claims(compact, [key])
        except TokenError:
            raise HandshakeFailed(f"The {what}'s signature does not verify with the identity "
                                  "provider's published keys.", code=code) from None
        flow.check_token_claims(claims, issuer=endpoints.issuer, audience=audience, code=code,
                                what=what, now=time.time())
        return claims

    async def _id_claims(self, tokens: flow.TokenSet, nonce: str | None) -> dict[str, Any] | None:
        if tokens.id_token is None:
            return None
        claims = await self._verify(tokens.id_token, audience=self.oauth.client_id,
                                    code="id_token_invalid", what="id_token")
        flow.check_id_token_claims(claims, client_id=self.oauth.client_id, nonce=nonce)
        return claims

    async def _user(self, tokens: flow.TokenSet, id_claims: Mapping[str, Any] | None, *,
                    max_age: float, previous: User | None = None) -> User:
        """The user object: Info API, else token claims; groups per ``groups_from``.

        On a refresh (``previous``) without anything new to read, the user stays as it was.
        """
        source = self.oauth.groups_from
        if previous is not None and source is not None and source.source == "id_token" \
                and id_claims is None:
            return previous
        access_claims = None
        if source is not None and source.source == "access_token":
            access_claims = await self._verify(tokens.access_token, audience=None,
                                               code="access_token_invalid", what="access token")
        info = None
        if self.oauth.info_api_url:
            url = self.oauth.info_api_url
            status, body = await self._fetch("GET", url, "Info API", "info_api_error", headers={
                "Authorization": tokens.authorization, "Accept": "application/json"})
            info = flow.info_result(status, body, urlsplit(url).netloc)
        data = flow.user_data(self.oauth, info=info, id_claims=id_claims,
                              access_claims=access_claims)
        if data is None:
            if previous is not None:
                return previous
            raise HandshakeFailed("The identity provider sent no id_token, and no "
                                  "handshake.oauth.info_api_url is set to ask for the user.",
                                  code="id_token_invalid")
        return parse_user(data, subject_paths=self.config.user.subject, max_age=max_age)

    # -- login ------------------------------------------------------------------------

    async def login(self, request: web.Request, return_to: str) -> web.StreamResponse:
        """Redirect to the authorization endpoint with state, PKCE S256 and a nonce."""
        endpoints = await self.endpoints()
        binding = None
        if self.binding_cookie is not None:
            binding = flow.browser_binding(request.cookies.get(self.binding_cookie))
        login = flow.new_login_state(return_to, with_nonce="openid" in self.oauth.scopes,
                                     binding=binding)
        location = flow.authorization_url(endpoints, self.oauth, self.redirect_uri, login)
        response = web.Response(status=302, headers={"Location": location,
                                                     "Cache-Control": "no-store"})
        for name in flow.crowded_attempts(self.codec, request.cookies, MAX_ATTEMPTS - 1):
            self._delete_cookie(response, name)
        response.set_cookie(self.codec.prefix + login.attempt, self.codec.seal(login),
                            max_age=int(self.codec.ttl), path=self.cookie_path,
                            secure=self.config.server.https, httponly=True, samesite="Lax")
        if self.binding_cookie is not None and binding is not None:
            # "__Host-": Secure, Path=/ and no Domain, or browsers refuse it.
            response.set_cookie(self.binding_cookie, binding, max_age=int(self.codec.ttl),
                                path="/", secure=True, httponly=True, samesite="Lax")
        return response

    def _delete_cookie(self, response: web.StreamResponse, name: str) -> None:
        response.del_cookie(name, path=self.cookie_path, secure=self.config.server.https,
                            httponly=True, samesite="Lax")

    async def _consume(self, request: web.Request) -> tuple[str, flow.LoginState]:
        """The attempt this callback answers; its state is used up from here on."""
        state = request.query.get("state", "")
        name = self.codec.cookie_name(state)
        value = request.cookies.get(name) if name else None
        if name is None or value is None:
            raise flow.state_mismatch()
        login = self.codec.open(name, value)
        self.codec.match(login, state)
        if self.binding_cookie is not None:
            flow.check_binding(login, request.cookies.get(self.binding_cookie))
        if not await self._first_use(state):
            raise flow.state_mismatch()
        return name, login

    async def _first_use(self, state: str) -> bool:
        """Whether a state is used for the first time, so a copied cookie cannot replay it."""
        digest = hashlib.sha256(state.encode()).hexdigest()
        try:
            return await self.deps.keyspace.first_use(f"dg:state:{digest}", self.codec.ttl)
        except Unavailable:
            # The in-process record still refuses replays to this replica.
            return self._states.first_use(digest)

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """The redirect URI: check state and iss, exchange the code, start the session."""
        cookie: str | None = None
        return_to = self.config.server.base_path + "/"
        try:
            cookie, login = await self._consume(request)
            return_to = login.return_to
            query = request.query
            flow.check_iss(query.get("iss"), await self.endpoints())
            if "error" in query:
                raise flow.idp_error(query["error"], query.get("error_description"))
            code = query.get("code")
            if not code:
                raise HandshakeFailed("The identity provider's answer has no code.",
                                      code="missing_code")
            tokens = await self._token({"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": self.redirect_uri,
                                        "code_verifier": login.verifier})
            id_claims = await self._id_claims(tokens, login.nonce)
            user = await self._user(tokens, id_claims, max_age=self.config.session.max_age)
            jar = CookieJar()
            await self.new_session(user, jar, request, id_token=tokens.id_token,
                                   access_token=tokens.access_token,
                                   refresh_token=tokens.refresh_token if self.oauth.refresh
                                   else None)
        except GatewayError as exc:
            self.outcome("failed", exc.code)
            log.info("oauth login failed", extra=exc.log_fields())
            again = f"{self.config.server.route_base}/login?redirect={quote(return_to)}"
            response = error_response(request, exc.status, exc.code, exc.message,
                                      [(again, "Log in again")])
        else:
            self.outcome("ok", "login")
            audit.info("login", extra={"event": "login", "sub": user.sub, "method": self.method})
            response = web.Response(status=303, headers={"Location": return_to,
                                                         "Cache-Control": "no-store"})
            self.deps.store.cookies.apply(jar, response)
        if cookie is not None:
            self._delete_cookie(response, cookie)
        return response

    # -- refresh and logout -----------------------------------------------------------

    async def identify(self, request: web.Request, session: Session | None,
                       jar: CookieJar) -> User | None:
        """The session's user, refreshed with the refresh token when it is due."""
        user = await super().identify(request, session, jar)
        if user is None or session is None or not self._due(session):
            return user
        async with self._locks.hold(session.id):
            if session.id in self._recent:
                # A concurrent request with the same cookie got here first.
                current = self._recent[session.id]
                if current is None:
                    await self._forget(request, jar)
                    return None
                if current.refreshed_at > session.refreshed_at:
                    return current.user
            if not self._due(session):
                return user
            async with self._shared_lock(session.id) as held:
                if not held:
                    return user
                if self.deps.keyspace.shared:
                    latest = (await self.deps.store.load(request.cookies)).session
                    if latest is not None and latest.refreshed_at > session.refreshed_at:
                        return latest.user
                return await self._refresh(request, session, jar)

    def _due(self, session: Session) -> bool:
        now = time.time()
        return (self.oauth.refresh and session.refresh_token is not None
                and session.method == self.method
                and now - session.refreshed_at >= self.oauth.refresh_interval
                and now >= self._retry_at.get(session.id, 0.0))

    def _shared_lock(self, session_id: str) -> AbstractAsyncContextManager[bool]:
        """``dg:lock:<sha256(id)>``: one replica refreshes a session at a time."""
        key = "dg:lock:" + hashlib.sha256(session_id.encode()).hexdigest()
        return self.deps.keyspace.lock(key, self.oauth.timeout * 3 + 5)

    async def _refresh(self, request: web.Request, session: Session,
                       jar: CookieJar) -> User | None:
        """Use the refresh token; a dead grant ends the session, an outage keeps it."""
        assert session.refresh_token is not None
        remaining = session.created_at + self.config.session.max_age - time.time()
        try:
            tokens = await self._token({"grant_type": "refresh_token",
                                        "refresh_token": session.refresh_token})
            id_claims = await self._id_claims(tokens, None)
            if id_claims is not None:
                flow.check_refreshed_id_token(id_claims, session.id_token)
            user = await self._user(tokens, id_claims, max_age=remaining,
                                    previous=session.user)
            # Whatever the source (id_token, Info API, access token), a refresh never
            # turns one reader's session into another's.
            if user.sub != session.user.sub:
                raise flow.subject_changed("user object")
        except (UpstreamError, Unavailable) as exc:
            return self._keep(session, exc.code)
        except HandshakeFailed as exc:
            if isinstance(exc, flow.TokenRejected) and not exc.fatal:
                return self._keep(session, exc.code)
            await self._end(request, session, jar, exc.code)
            return None
        fresh = session.with_user(user, access_token=tokens.access_token,
                                  refresh_token=tokens.refresh_token or session.refresh_token,
                                  id_token=tokens.id_token or session.id_token)
        try:
            await self.deps.store.save(fresh, request.cookies, jar)
        except Unavailable:
            return self._keep(session, "store_unavailable")
        self._recent.put(session.id, fresh)
        self._retry_at.pop(session.id, None)
        self.outcome("ok", "refresh")
        return user

    def _keep(self, session: Session, reason: str) -> User:
        # Back off, so an outage does not make every request wait for the provider.
        backoff = min(max(self.oauth.refresh_interval, 1.0), 60.0)
        self._retry_at.put(session.id, time.time() + backoff)
        self.outcome("failed", "refresh_deferred")
        log.warning("session refresh failed; keeping the session", extra={"reason": reason})
        return session.user

    async def _end(self, request: web.Request, session: Session, jar: CookieJar,
                   reason: str) -> None:
        self._recent.put(session.id, None)
        self.outcome("failed", "refresh_revoked")
        audit.info("logout", extra={"event": "logout", "sub": session.user.sub,
                                    "method": self.method, "reason": reason})
        await self._forget(request, jar)

    async def _forget(self, request: web.Request, jar: CookieJar) -> None:
        try:
            await self.deps.store.delete(request.cookies, jar)
        except Unavailable:
            for name in request.cookies:
                if self.deps.store.owns_cookie(name):
                    jar.delete(name)

    def logout_target(self, session: Session | None) -> str | None:
        """``logout_url`` as configured, else the provider's end_session_endpoint, else None."""
        if self.oauth.logout_url:
            return self.oauth.logout_url
        endpoints = self._endpoints
        if endpoints is None or endpoints.end_session_url is None:
            return None
        return flow.end_session_url(
            endpoints.end_session_url, id_token=session.id_token if session else None,
            post_logout=self.config.server.public_url.rstrip("/") + "/",
            client_id=self.oauth.client_id)
