"""A compact OpenID Connect provider for the demo's ``oauth`` method, built on Authlib.

Authorization code with PKCE (S256 only, always required), discovery, JWKS, token,
userinfo (answering the reader's Mintlify user object) and RP-initiated logout, served
by aiohttp through ``gateway.demo.authlib_aiohttp``. Everything lives in memory and ends
with the process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from authlib.oauth2.rfc6749 import (
    ClientMixin,
    InvalidRequestError,
    OAuth2Error,
    OAuth2Request,
    ResourceProtector,
    TokenMixin,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc import discovery, rpinitiated
from authlib.oidc.core import AuthorizationCodeMixin, UserInfo
from authlib.oidc.core.grants import OpenIDCode
from joserfc.jwk import RSAKey

from gateway.crypto import random_token
from gateway.demo.accounts import Account, find_account, picker_page
from gateway.demo.authlib_aiohttp import AiohttpServer, Reply, read_request

CLIENT_ID = "docs-demo"
SCOPES = ("openid", "email", "profile")
#: OpenID Connect requires RS256 among the id_token algorithms a provider offers.
ALGORITHM = "RS256"
CODE_TTL = 300.0
TOKEN_TTL = 3600


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    """The gateway, registered as a public client: PKCE instead of a secret."""

    client_id: str
    redirect_uri: str
    post_logout_redirect_uri: str

    @property
    def client_metadata(self) -> dict[str, Any]:
        """What RP-initiated logout checks ``post_logout_redirect_uri`` against."""
        return {"post_logout_redirect_uris": [self.post_logout_redirect_uri]}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in (scope or "openid").split() if s in SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        # No refresh tokens: a demo session simply lasts until logout.
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    """An issued authorization code and what it was issued for."""

    code: str = field(repr=False)
    account: Account
    redirect_uri: str
    scope: str
    challenge: str
    challenge_method: str
    nonce: str | None
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.issued_at)


@dataclass
class Token(TokenMixin):  # type: ignore[misc]
    """An issued access token."""

    access_token: str = field(repr=False)
    account: Account
    scope: str
    expires_at: float

    def check_client(self, client: Client) -> bool:
        return client.client_id == CLIENT_ID

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int(self.expires_at - time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return False


class S256Required(CodeChallenge):  # type: ignore[misc]
    """PKCE on every authorization request, with S256 only (``plain`` is refused)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE is required: send code_challenge with "
                                      "code_challenge_method=S256.", redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: Code) -> str:
        return authorization_code.challenge

    def get_authorization_code_challenge_method(self, authorization_code: Code) -> str:
        return authorization_code.challenge_method


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    """Codes kept in the provider's memory, usable once, for CODE_TTL seconds."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.server.provider.codes[code] = Code(
            code=code, account=request.user, redirect_uri=request.payload.redirect_uri,
            scope=request.scope, challenge=data["code_challenge"],
            challenge_method=data["code_challenge_method"], nonce=data.get("nonce"))

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found: Code | None = self.server.provider.codes.get(code)
        if found is None or time.time() - found.issued_at > CODE_TTL:
            return None
        return found

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.provider.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> Account:
        return authorization_code.account


class IdTokens(OpenIDCode):  # type: ignore[misc]
    """Signs id_tokens (RS256) with the provider's key; a nonce is required."""

    def __init__(self, provider: DemoProvider) -> None:
        super().__init__(require_nonce=True)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return any(code.nonce == nonce for code in self.provider.codes.values())

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return self.provider.key

    def get_client_algorithm(self, client: Client) -> str:
        return ALGORITHM

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": ALGORITHM, "kid": self.provider.kid, "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        return {"iss": self.provider.issuer, "aud": client.client_id}

    def generate_user_info(self, user: Account, scope: str) -> UserInfo:
        return self.provider.standard_claims(user, scope)


class Issuer(IssuerParameter):  # type: ignore[misc]
    """RFC 9207: authorization responses name the issuer they come from."""

    def __init__(self, provider: DemoProvider) -> None:
        self.provider = provider

    def get_issuer(self) -> str:
        return self.provider.issuer


class Bearer(BearerTokenValidator):  # type: ignore[misc]
    """Access tokens the userinfo endpoint accepts."""

    def __init__(self, provider: DemoProvider) -> None:
        super().__init__()
        self.provider = provider

    def authenticate_token(self, token_string: str) -> Token | None:
        return self.provider.tokens.get(token_string)


class EndSession(rpinitiated.EndSessionEndpoint):  # type: ignore[misc]
    """Logout: no provider session to end (every login asks again), then back to the docs."""

    def __init__(self, provider: DemoProvider) -> None:
        super().__init__()
        self.provider = provider

    def get_server_jwks(self) -> dict[str, Any]:
        return self.provider.jwks()

    def is_post_logout_redirect_uri_legitimate(self, request: OAuth2Request, uri: str,
                                               client: Client, logout_hint: str | None) -> bool:
        # The URI was already matched against the client's registration.
        return True

    def end_session(self, end_session_request: Any) -> None:
        pass


class Server(AiohttpServer):
    """The provider's authorization server: one client, tokens kept in memory."""

    def __init__(self, provider: DemoProvider) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.provider = provider
        self.register_token_generator("default", BearerTokenGenerator(
            lambda **_: random_token(32), expires_generator=TOKEN_TTL))

    def query_client(self, client_id: str) -> Client | None:
        client = self.provider.client
        return client if client_id == client.client_id else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.provider.tokens[token["access_token"]] = Token(
            access_token=token["access_token"], account=request.user,
            scope=token.get("scope", ""), expires_at=time.time() + token["expires_in"])


class DemoProvider:
    """The provider: its key, its one client, what it issued, and its aiohttp app."""

    def __init__(self, issuer: str, redirect_uri: str, post_logout_redirect_uri: str,
                 api_url: str | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.api_url = api_url
        self.key = RSAKey.generate_key(2048, parameters={"alg": ALGORITHM, "use": "sig"})
        self.kid = self.key.thumbprint()
        self.client = Client(CLIENT_ID, redirect_uri, post_logout_redirect_uri)
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.server = Server(self)
        self.server.register_grant(CodeGrant, [S256Required(required=True), IdTokens(self)])
        self.server.register_extension(Issuer(self))
        self.server.register_endpoint(EndSession(self))
        self.protector = ResourceProtector()
        self.protector.register_token_validator(Bearer(self))
        self.discovery_document = self.metadata()

    def metadata(self) -> dict[str, Any]:
        """The OpenID discovery document, validated by Authlib's metadata classes."""
        base = self.issuer
        doc = discovery.OpenIDProviderMetadata({
            "issuer": base, "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token", "userinfo_endpoint": f"{base}/userinfo",
            "jwks_uri": f"{base}/jwks.json", "end_session_endpoint": f"{base}/logout",
            "scopes_supported": list(SCOPES), "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_methods_supported": ["none"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
        })
        doc.validate(metadata_classes=[rpinitiated.OpenIDProviderMetadata])
        return dict(doc)

    def jwks(self) -> dict[str, Any]:
        """The public signing key."""
        return {"keys": [{**self.key.as_dict(private=False), "kid": self.kid}]}

    def standard_claims(self, account: Account, scope: str) -> UserInfo:
        """OpenID claims for the id_token, per scope."""
        content = account.user["content"]
        claims = UserInfo(sub=account.username, name=account.name,
                          given_name=content["firstName"], family_name=content["lastName"],
                          email=content["email"], email_verified=True)
        return claims.filter(scope)

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/", self.home)
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks.json", self.keys)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/userinfo", self.userinfo)
        app.router.add_get("/logout", self.logout)
        return app

    async def home(self, request: web.Request) -> web.Response:
        """A pointer for visitors who open the provider itself."""
        return web.Response(text="Demo sign-in server: the docs send you here to log in.")

    async def discovery(self, request: web.Request) -> web.Response:
        """``/.well-known/openid-configuration``."""
        return web.json_response(self.discovery_document)

    async def keys(self, request: web.Request) -> web.Response:
        """The JWKS id_tokens are verified with."""
        return web.json_response(self.jwks())

    async def authorize(self, request: web.Request) -> web.Response:
        """GET: check the request, show the reader picker. POST: the pick; code to the client."""
        read = await read_request(request)
        account = find_account(read.form.get("username")) if request.method == "POST" else None
        try:
            grant = self.server.get_consent_grant(read, end_user=account)
        except OAuth2Error as error:
            reply: Reply = self.server.handle_error_response(read, error)
            return reply.response()
        if account is None:
            params = {k: v for k, v in read.payload.data.items() if k != "username"}
            page = picker_page("Sign in to Acme ID", "The docs asked who you are. Pick a "
                               "reader; the docs receive their user object.", "/authorize",
                               params)
            return web.Response(text=page, content_type="text/html",
                                headers={"Cache-Control": "no-store"})
        reply = self.server.create_authorization_response(read, grant_user=account, grant=grant)
        return reply.response()

    async def token(self, request: web.Request) -> web.Response:
        """The token endpoint (authorization_code grant, PKCE checked)."""
        reply: Reply = self.server.create_token_response(await read_request(request))
        return reply.response()

    async def userinfo(self, request: web.Request) -> web.Response:
        """The Mintlify user object of the access token's reader."""
        read = await read_request(request)
        try:
            token: Token = self.protector.validate_request(["openid"], read)
        except OAuth2Error as error:
            status, body, headers = error()
            return Reply(status, body, list(headers)).response()
        return web.json_response(token.account.user_object(self.api_url),
                                 headers={"Cache-Control": "no-store"})

    async def logout(self, request: web.Request) -> web.Response:
        """RP-initiated logout: back to the registered docs URL, or a short page."""
        read = await read_request(request)
        reply: Reply | None = self.server.create_endpoint_response("end_session", read)
        if reply is not None:
            return reply.response()
        return web.Response(text="You are logged out of the demo sign-in server.")

