"""A real OAuth 2.0 / OpenID Connect authorization server for tests, built on Authlib.

Authlib has no aiohttp integration, so ``AiohttpAuthorizationServer`` adapts its
synchronous server: each aiohttp request is read once (query and form), then handed to
Authlib as an ``OAuth2Request``; Authlib's ``(status, body, headers)`` answers become
aiohttp responses. PKCE S256 is required, refresh tokens rotate, id_tokens are RS256.
``Faults`` make it misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidRequestError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    TokenMixin,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import AuthorizationCodeMixin, UserInfo
from authlib.oidc.core.grants import OpenIDCode
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy, MultiMapping

from gateway.crypto import random_token

KID = "test-key"
# Generated once per test run: RSA key generation is the slowest step here.
SIGNING_KEY = RSAKey.generate_key(2048, parameters={"kid": KID})
# Same kid, different key: what an id_token with a bad signature is signed with.
WRONG_KEY = RSAKey.generate_key(2048, parameters={"kid": KID})


@dataclass
class IdpUser:
    """A user of the test IdP; ``claims`` go into id_tokens, ``info`` is the Info API answer."""

    sub: str
    claims: dict[str, Any] = field(default_factory=dict)
    info: Any = None

    def info_object(self) -> Any:
        """The Mintlify user object the Info API returns for this user."""
        if self.info is not None:
            return self.info
        content = {k: v for k, v in self.claims.items() if k != "groups"}
        return {"sub": self.sub, "groups": self.claims.get("groups", []), "content": content}


@dataclass
class Faults:
    """Switches that make the server misbehave."""

    token_status: int | None = None     # 400 or 500 for the authorization_code grant
    token_hang: bool = False            # /token answers only when the server shuts down
    id_token: str | None = None         # bad_signature | wrong_aud | wrong_nonce | expired
    userinfo: int | str | None = None   # 401 | 500 | "garbage"
    iss: str = "send"                   # send | omit | forge (RFC 9207 iss parameter)
    refresh: str | None = None          # invalid_grant | "500"
    deny: bool = False                  # the user declines: error=access_denied
    discovery_down: bool = False        # the discovery document answers 503


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    """A registered client: public (auth method "none") or confidential."""

    client_id: str
    redirect_uris: list[str]
    client_secret: str | None = None
    auth_method: str = "none"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or "openid"

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and hmac.compare_digest(client_secret,
                                                                      self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint != "token" or method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class AuthCode(AuthorizationCodeMixin):  # type: ignore[misc]
    """An issued authorization code."""

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    sub: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass
class Token(TokenMixin):  # type: ignore[misc]
    """An issued access token and its refresh token."""

    access_token: str
    refresh_token: str | None
    client_id: str
    scope: str
    sub: str
    expires_at: float
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked


class StrictCodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE required on every authorization request, and S256 only."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with code_challenge_method=S256 is required.",
                                      redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.server.idp.codes[code] = AuthCode(
            code=code, client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri, scope=request.scope,
            sub=request.user.sub, code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"), nonce=data.get("nonce"))

    def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
        item = self.server.idp.codes.get(code)
        return item if item is not None and item.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: AuthCode) -> None:
        self.server.idp.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: AuthCode) -> IdpUser | None:
        users: dict[str, IdpUser] = self.server.idp.users
        return users.get(authorization_code.sub)


class RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        token = self.server.idp.by_refresh.get(refresh_token)
        return token if token is not None and not token.revoked else None

    def authenticate_user(self, refresh_token: Token) -> IdpUser | None:
        users: dict[str, IdpUser] = self.server.idp.users
        return users.get(refresh_token.sub)

    def revoke_old_credential(self, refresh_token: Token) -> None:
        refresh_token.revoked = True


class OpenIDTokens(OpenIDCode):  # type: ignore[misc]
    """id_tokens for the code grant (and, like many IdPs, for refreshes), with faults."""

    def __init__(self, idp: TestIdP) -> None:
        super().__init__(require_nonce=False)
        self.idp = idp

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return any(code.nonce == nonce for code in self.idp.codes.values())

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return WRONG_KEY if self.idp.faults.id_token == "bad_signature" else SIGNING_KEY

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": KID}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        fault = self.idp.faults.id_token
        claims: dict[str, Any] = {"iss": self.idp.issuer, "aud": [
            "someone-else" if fault == "wrong_aud" else client.client_id]}
        if fault == "expired":
            now = int(time.time())
            claims.update(iat=now - 7200, exp=now - 3600)
        return claims

    def get_authorization_code_claims(self, authorization_code: AuthCode) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
        if self.idp.faults.id_token == "wrong_nonce":
            claims["nonce"] = "not-the-nonce-that-was-sent"
        return claims

    def generate_user_info(self, user: IdpUser, scope: str) -> UserInfo:
        return UserInfo(sub=user.sub, **user.claims)


class FaultyIssuer(IssuerParameter):  # type: ignore[misc]
    """RFC 9207's iss parameter on authorization responses: sent, omitted or forged."""

    def __init__(self, idp: TestIdP) -> None:
        self.idp = idp

    def get_issuer(self) -> str | None:
        mode = self.idp.faults.iss
        return None if mode == "omit" else "https://evil.example" if mode == "forge" \
            else self.idp.issuer

    def add_issuer_parameter(self, authorization_server: Any, response: web.Response) -> None:
        issuer = self.get_issuer()
        location = response.headers.get("Location")
        if issuer and location:
            joiner = "&" if "?" in location else "?"
            response.headers["Location"] = f"{location}{joiner}{urlencode({'iss': issuer})}"


@dataclass
class ReadRequest:
    """An aiohttp request, read: what Authlib's synchronous code needs."""

    method: str
    url: str
    headers: CIMultiDictProxy[str]
    query: MultiMapping[str]
    form: MultiMapping[str]


class AiohttpPayload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, values: MultiDict[str]) -> None:
        self._values = values

    @property
    def data(self) -> MultiDict[str]:
        return self._values

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._values.items():
            values[key].append(value)
        return values


class AiohttpOAuth2Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, request: ReadRequest) -> None:
        super().__init__(method=request.method, uri=request.url, headers=request.headers)
        self._read = request
        values: MultiDict[str] = MultiDict(request.query)
        values.extend(request.form)
        self.payload = AiohttpPayload(values)

    @property
    def args(self) -> MultiMapping[str]:
        return self._read.query

    @property
    def form(self) -> MultiMapping[str]:
        return self._read.form


async def read_request(request: web.Request) -> ReadRequest:
    """Read the body once, so Authlib can look at it synchronously."""
    form: Any = await request.post() if request.method == "POST" else MultiDict()
    return ReadRequest(method=request.method, url=str(request.url), headers=request.headers,
                       query=request.query, form=MultiDictProxy(MultiDict(form)))


class AiohttpAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """Authlib's AuthorizationServer speaking aiohttp."""

    def __init__(self, idp: TestIdP) -> None:
        super().__init__()
        self.idp = idp
        self.register_token_generator("default", BearerTokenGenerator(
            idp.new_access_token, lambda **_: random_token(32)))

    def query_client(self, client_id: str) -> Client | None:
        return self.idp.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        record = Token(access_token=token["access_token"],
                       refresh_token=token.get("refresh_token"),
                       client_id=request.client.client_id, scope=token.get("scope", ""),
                       sub=request.user.sub, expires_at=time.time() + token["expires_in"])
        self.idp.by_access[record.access_token] = record
        if record.refresh_token:
            self.idp.by_refresh[record.refresh_token] = record

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        return request if isinstance(request, OAuth2Request) else AiohttpOAuth2Request(request)

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no JSON endpoints here")

    def handle_response(self, status: int, body: Any, headers: Any) -> web.Response:
        if isinstance(body, dict):
            body = json.dumps(body)
        out: CIMultiDict[str] = CIMultiDict(headers)
        return web.Response(status=status, body=(body or "").encode(), headers=out)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class TestIdP:
    """The server, its data, its switches, and what it was asked."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.issuer = "http://127.0.0.1"  # set once the server listens
        self.faults = Faults()
        self.clients: dict[str, Client] = {}
        self.users: dict[str, IdpUser] = {}
        self.current: str | None = None
        self.codes: dict[str, AuthCode] = {}
        self.by_access: dict[str, Token] = {}
        self.by_refresh: dict[str, Token] = {}
        self.announce_iss = True
        self.jwt_access_tokens = False
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.token_headers: list[dict[str, str]] = []
        self.logout_requests: list[dict[str, str]] = []
        self._release = asyncio.Event()
        self.server = AiohttpAuthorizationServer(self)
        self.server.register_grant(CodeGrant, [StrictCodeChallenge(required=True),
                                               OpenIDTokens(self)])
        self.server.register_grant(RefreshGrant, [OpenIDTokens(self)])
        self.server.register_extension(FaultyIssuer(self))

    def add_client(self, client_id: str, redirect_uri: str, secret: str | None = None,
                   auth_method: str = "none") -> Client:
        """Register a client (public unless a secret and auth method are given)."""
        client = Client(client_id, [redirect_uri], secret, auth_method)
        self.clients[client_id] = client
        return client

    def login_as(self, sub: str, **claims: Any) -> IdpUser:
        """Who logs in at /authorize from now on (auto-approved)."""
        user = self.users.setdefault(sub, IdpUser(sub))
        user.claims.update(claims)
        self.current = sub
        return user

    def new_access_token(self, client: Client, grant_type: str, user: IdpUser,
                         scope: str) -> str:
        """An opaque token, or an RFC 9068 JWT with the user's claims."""
        if not self.jwt_access_tokens:
            return random_token(32)
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user.sub, "aud": "docs-api", "iat": now,
                  "exp": now + 3600, "client_id": client.client_id, "scope": scope,
                  **user.claims}
        return jose_jwt.encode({"alg": "RS256", "kid": KID, "typ": "at+jwt"}, claims,
                               SIGNING_KEY)

    def grants(self, grant_type: str) -> int:
        """How many token requests of a grant type arrived."""
        return sum(1 for r in self.token_requests if r.get("grant_type") == grant_type)

    def release(self) -> None:
        """Let a hanging /token answer (before the server closes)."""
        self._release.set()

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/userinfo", self.userinfo)
        app.router.add_get("/logout", self.logout)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        if self.faults.discovery_down:
            return web.Response(status=503, text="down")
        base = self.issuer
        return web.json_response({
            "issuer": base, "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token", "userinfo_endpoint": f"{base}/userinfo",
            "jwks_uri": f"{base}/jwks", "end_session_endpoint": f"{base}/logout",
            "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic",
                                                      "client_secret_post"],
            "authorization_response_iss_parameter_supported": self.announce_iss,
        })

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [SIGNING_KEY.as_dict(private=False)]})

    async def authorize(self, request: web.Request) -> web.Response:
        self.authorize_requests.append(dict(request.query))
        read = read_request_sync(request)
        user = None if self.faults.deny or self.current is None else self.users[self.current]
        response: web.Response
        try:
            grant = self.server.get_consent_grant(read, end_user=user)
        except OAuth2Error as error:
            response = self.server.handle_error_response(read, error)
            return response
        response = self.server.create_authorization_response(grant.request, grant_user=user,
                                                             grant=grant)
        return response

    async def token(self, request: web.Request) -> web.Response:
        read = await read_request(request)
        self.token_requests.append(dict(read.form))
        self.token_headers.append(dict(read.headers))
        grant_type = read.form.get("grant_type")
        if grant_type == "authorization_code":
            if self.faults.token_hang:
                await asyncio.wait_for(self._release.wait(), 60)
            if self.faults.token_status is not None:
                status = self.faults.token_status
                return web.json_response({"error": "invalid_request" if status < 500
                                          else "server_error"}, status=status)
        if grant_type == "refresh_token" and self.faults.refresh == "invalid_grant":
            return web.json_response({"error": "invalid_grant"}, status=400)
        if grant_type == "refresh_token" and self.faults.refresh == "500":
            return web.Response(status=500, text="internal error")
        response: web.Response = self.server.create_token_response(read)
        return response

    async def userinfo(self, request: web.Request) -> web.Response:
        fault = self.faults.userinfo
        if fault == "garbage":
            return web.Response(text="<html>surprise</html>", content_type="text/html")
        if isinstance(fault, int):
            return web.json_response({"error": "nope"}, status=fault)
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = self.by_access.get(value) if scheme.lower() == "bearer" else None
        if token is None or token.is_expired():
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response(self.users[token.sub].info_object())

    async def logout(self, request: web.Request) -> web.Response:
        self.logout_requests.append(dict(request.query))
        target = request.query.get("post_logout_redirect_uri")
        if target:
            return web.Response(status=302, headers={"Location": target})
        return web.Response(text="logged out")


def read_request_sync(request: web.Request) -> ReadRequest:
    """A GET request, read (no body to wait for)."""
    return ReadRequest(method=request.method, url=str(request.url), headers=request.headers,
                       query=request.query, form=MultiDictProxy(MultiDict()))
