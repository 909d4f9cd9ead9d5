"""The pure parts of the OAuth 2.0 / OpenID Connect handshake.

PKCE, URL building, the per-attempt login-state cookie, provider metadata, token
responses, JWT verification and claims-to-user mapping. Nothing here does I/O;
``gateway.handshakes.oauth`` is the one place that talks HTTP.

Authlib supplies the protocol pieces it has: the PKCE challenge and URL parameters, the
reading of a token endpoint's answer (its client's), the Bearer header, and the RFC 8414
metadata validators. ID tokens are never read by Authlib (its claim classes bring a
second JOSE library); they take the one strict path in ``jws``.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Client, OAuth2Error, TokenAuth
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc8414.models import validate_array_value

from gateway.config.model import OAuthConfig
from gateway.crypto import InvalidSealed, Sealer, constant_time_equal, random_token
from gateway.errors import HandshakeFailed, UpstreamError, shown
from gateway.handshakes.jws import HMAC_ALGS, TokenError, split_jws, strict_json

#: Seconds a login attempt (its state cookie) stays valid.
STATE_TTL = 600
STATE_PURPOSE = "oauth-state"
#: Algorithms an id_token or access token may be signed with; "none" never is.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "EdDSA")
HMAC_ALGORITHMS = HMAC_ALGS
#: Largest token from the provider read: as much as its answer may hold (the user object
#: in it is bounded on its own).
MAX_PROVIDER_TOKEN = 1024 * 1024
#: Claims about the token itself, never copied into the user object's content.
PROTOCOL_CLAIMS = frozenset({
    "iss", "aud", "exp", "iat", "nbf", "jti", "nonce", "azp", "at_hash", "c_hash", "s_hash",
    "auth_time", "acr", "amr", "sid", "sub", "typ", "client_id", "scope", "cnf",
})
_ATTEMPT = re.compile(r"^[A-Za-z0-9_-]{8}$")
#: An access token a header can carry after "Bearer " (visible ASCII, RFC 6750 2.1's b64token
#: and whatever else providers use that a header allows).
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]+")
#: The characters an error code or description may hold (RFC 6749 5.2).
_ERROR_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")
#: A browser binding: random_token(32), 43 base64url characters.
_BINDING = re.compile(r"[A-Za-z0-9_-]{43}")


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE verifier (RFC 7636 section 4.2), by Authlib."""
    return str(create_s256_code_challenge(verifier))


def add_query(url: str, params: Iterable[tuple[str, str]]) -> str:
    """``url`` with ``params`` appended to whatever query it already has, by Authlib."""
    return str(add_params_to_uri(url, list(params)))


@dataclass(frozen=True)
class LoginState:
    """One login attempt: what the callback needs to finish it."""

    state: str = field(repr=False)
    verifier: str = field(repr=False)
    nonce: str | None = field(repr=False)
    return_to: str
    created_at: float
    #: The value of the browser's binding cookie when the login started (https only).
    binding: str | None = field(default=None, repr=False)

    @property
    def attempt(self) -> str:
        """The short id in the state cookie's name."""
        return self.state.split(".", 1)[0]


def new_login_state(return_to: str, *, with_nonce: bool,
                    binding: str | None = None) -> LoginState:
    """A fresh attempt: a one-time state, a PKCE verifier (64 chars), maybe a nonce, and
    the browser binding it must come back with."""
    return LoginState(state=f"{random_token(6)}.{random_token(24)}", verifier=random_token(48),
                      nonce=random_token(24) if with_nonce else None, return_to=return_to,
                      created_at=time.time(), binding=binding)


def browser_binding(current: str | None) -> str:
    """The browser's binding value: the one its cookie holds when well-formed, else a new one
    (so several tabs logging in at once share it)."""
    if current is not None and _BINDING.fullmatch(current):
        return current
    return random_token(32)


def check_binding(login: LoginState, held: str | None) -> None:
    """Raise unless the browser's binding cookie is the one the attempt was started with.

    A sibling host can plant a state cookie (its own login's) for the docs host, but not
    the ``__Host-`` binding cookie, so a planted attempt never matches this browser.
    """
    if login.binding is None or held is None or not constant_time_equal(login.binding, held):
        raise state_mismatch()


class StateCodec:
    """Seals a LoginState into its cookie, named ``<cookie_name>_state_<attempt>``."""

    def __init__(self, secrets: Sequence[str], cookie_stem: str, ttl: float = STATE_TTL) -> None:
        self.sealer = Sealer(secrets, STATE_PURPOSE)
        self.prefix = f"{cookie_stem}_state_"
        self.ttl = ttl

    def cookie_name(self, state: str) -> str | None:
        """The cookie a state value belongs to; None when the value is malformed."""
        attempt = state.split(".", 1)[0]
        return self.prefix + attempt if _ATTEMPT.match(attempt) else None

    def seal(self, login: LoginState) -> str:
        """The cookie value; bound to the cookie's name so it cannot be moved to another."""
        record = {"s": login.state, "v": login.verifier, "n": login.nonce,
                  "r": login.return_to, "t": login.created_at, "b": login.binding}
        name = self.prefix + login.attempt
        return self.sealer.seal(json.dumps(record, separators=(",", ":")).encode(), name.encode())

    def open(self, name: str, value: str, now: float | None = None) -> LoginState:
        """The attempt a cookie holds; HandshakeFailed when forged, foreign or too old."""
        try:
            record = json.loads(self.sealer.open(value, name.encode()))
            binding = record.get("b")
            login = LoginState(state=str(record["s"]), verifier=str(record["v"]),
                               nonce=None if record["n"] is None else str(record["n"]),
                               return_to=str(record["r"]), created_at=float(record["t"]),
                               binding=None if binding is None else str(binding))
        except (InvalidSealed, ValueError, KeyError, TypeError, RecursionError):
            raise state_mismatch() from None
        if (time.time() if now is None else now) - login.created_at > self.ttl:
            raise HandshakeFailed("This login took longer than 10 minutes and has expired. "
                                  "Please log in again.", code="state_expired")
        return login

    def match(self, login: LoginState, state: str) -> None:
        """Raise unless the callback's state is the one this attempt sent."""
        if not constant_time_equal(login.state, state):
            raise state_mismatch()


def state_mismatch() -> HandshakeFailed:
    """The error for a callback that does not belong to a login started in this browser."""
    return HandshakeFailed("This login answer does not match a login started in this browser "
                           "(it was already used, expired, or came from elsewhere). "
                           "Please log in again.", code="state_mismatch")


@dataclass(frozen=True)
class Endpoints:
    """Where the identity provider's endpoints are: explicit config wins over discovery."""

    authorization_url: str
    token_url: str
    issuer: str | None = None
    jwks_url: str | None = None
    end_session_url: str | None = None
    iss_required: bool = False
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    #: What the discovery document announces that may make logins fail at the provider,
    #: though the gateway can use it (logged once it is read).
    notes: tuple[str, ...] = ()


def discovered_url(value: Any, *, https_only: bool) -> str | None:
    """A URL from a discovery document, or None when it is not one to send anyone to.

    Only absolute http(s) URLs with a host and no user info pass (never ``javascript:``,
    ``data:`` or a scheme-relative ``//host``); only https when the issuer is on https.
    """
    if not isinstance(value, str) or not value or value != value.strip() \
            or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    schemes = ("https",) if https_only else ("https", "http")
    if parts.scheme.lower() not in schemes or not parts.hostname or "@" in parts.netloc:
        return None
    return value


def _authlib_rule(key: str, check: Callable[..., Any], *args: Any) -> None:
    """Run one of Authlib's metadata validators; ValueError saying which rule ``key`` breaks."""
    try:
        check(*args)
    except ValueError as exc:
        raise ValueError(f"the discovery document is malformed: {exc}") from None
    except (TypeError, AttributeError):  # a value of a kind the validator does not expect
        raise ValueError(f'the discovery document is malformed: "{key}" holds a value of '
                         "the wrong kind") from None


def check_metadata(doc: Mapping[str, Any], *, https_only: bool) -> tuple[str, ...]:
    """What the gateway reads in a discovery document, checked by Authlib's RFC 8414
    validators and the gateway's own rules; keys the gateway does not read are not judged.

    ValueError for a document the code flow cannot work with: an https issuer with a query
    or fragment, ``response_types_supported`` without ``code``, a malformed
    ``id_token_signing_alg_values_supported`` or ``authorization_response_iss_parameter_
    supported``. Notes (returned) for what might only fail at the provider: PKCE methods
    announced without S256. The gateway always sends S256, which RFC 7636 makes mandatory
    for servers, so it is tried anyway, as it is when no methods are announced.
    """
    metadata = AuthorizationServerMetadata(doc)
    if https_only:
        # Authlib's rule demands https (loopback aside): for an http issuer, which the
        # configuration chose, the gateway's URL rule alone applies.
        _authlib_rule("issuer", metadata.validate_issuer)
    if doc.get("response_types_supported") is not None:  # absent: not judged
        _authlib_rule("response_types_supported", metadata.validate_response_types_supported)
        if not any(isinstance(kind, str) and kind.split() == ["code"]
                   for kind in doc["response_types_supported"]):
            raise ValueError("the discovery document's response_types_supported lacks "
                             '"code", the authorization code flow the gateway runs')
    _authlib_rule("id_token_signing_alg_values_supported", validate_array_value, metadata,
                  "id_token_signing_alg_values_supported")
    iss_flag = doc.get("authorization_response_iss_parameter_supported")
    if iss_flag is not None and not isinstance(iss_flag, bool):
        # RFC 9207's flag decides whether an answer without iss is refused: never guessed.
        raise ValueError("the discovery document is malformed: "
                         '"authorization_response_iss_parameter_supported" MUST be boolean')
    notes = []
    methods = doc.get("code_challenge_methods_supported")
    try:
        _authlib_rule("code_challenge_methods_supported",
                      metadata.validate_code_challenge_methods_supported)
    except ValueError as exc:
        notes.append(f"{exc}; PKCE S256 is sent anyway")
    else:
        if methods and "S256" not in methods:
            notes.append(f"the provider announces the PKCE methods {repr(methods)[:200]} but "
                         "not S256, which the gateway always sends; if logins fail at the "
                         "provider (invalid_request), enable S256 there")
    return tuple(notes)


def merge_endpoints(oauth: OAuthConfig, discovery: Mapping[str, Any] | None) -> Endpoints:
    """Endpoints from config and (optionally) a discovery document; ValueError if incomplete
    or if the document is one the code flow cannot work with (``check_metadata``).

    A discovered URL that is not a usable http(s) URL counts as absent.
    """
    doc: Mapping[str, Any] = discovery or {}
    https_only = (oauth.issuer or "").lower().startswith("https://")
    notes = check_metadata(doc, https_only=https_only) if discovery is not None else ()
    taken: dict[str, str] = {}

    def pick(explicit: str | None, key: str) -> str | None:
        if explicit:
            return explicit
        url = discovered_url(doc.get(key), https_only=https_only)
        if url is not None:
            taken[key] = url
        return url

    authorization_url = pick(oauth.authorization_url, "authorization_endpoint")
    token_url = pick(oauth.token_url, "token_endpoint")
    if authorization_url is None or token_url is None:
        raise ValueError("no authorization_endpoint or token_endpoint")
    jwks_url = pick(oauth.jwks_url, "jwks_uri")
    if https_only:
        # Authlib's transport rule on the URLs taken from the document, besides the
        # gateway's stricter one above (https only, a host, no user info).
        taken_metadata = AuthorizationServerMetadata(taken)
        for key in taken:
            _authlib_rule(key, getattr(taken_metadata, f"validate_{key}"))
    advertised = doc.get("id_token_signing_alg_values_supported")
    algorithms = ASYMMETRIC_ALGORITHMS
    if isinstance(advertised, list):
        algorithms = tuple(a for a in advertised
                           if a in ASYMMETRIC_ALGORITHMS or (a in HMAC_ALGORITHMS
                                                            and oauth.client_secret))
    issuer = doc.get("issuer") if isinstance(doc.get("issuer"), str) else oauth.issuer
    return Endpoints(authorization_url=authorization_url, token_url=token_url, issuer=issuer,
                     jwks_url=jwks_url, end_session_url=pick(None, "end_session_endpoint"),
                     iss_required=doc.get("authorization_response_iss_parameter_supported") is True,
                     algorithms=algorithms, notes=notes)


def same_issuer(a: str, b: str) -> bool:
    """Issuer identifiers compare exactly, except for one trailing slash."""
    return a.removesuffix("/") == b.removesuffix("/")


@dataclass(frozen=True)
class TokenSet:
    """The useful parts of a token endpoint answer."""

    access_token: str = field(repr=False)
    #: The Authorization header value that presents the access token (RFC 6750 Bearer).
    authorization: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)


class TokenRejected(HandshakeFailed):
    """The token endpoint refused a grant; ``fatal`` when the grant is dead (invalid_grant)."""

    code = "token_error"

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


def client_authentication(oauth: OAuthConfig, form: dict[str, str]) -> dict[str, str]:
    """Add the client's credentials to a token request; the headers it needs."""
    headers = {"Accept": "application/json"}
    secret = oauth.client_secret
    if secret is None or oauth.token_auth == "client_secret_post":
        form["client_id"] = oauth.client_id
        if secret is not None:
            form["client_secret"] = secret
    else:
        # RFC 6749 2.3.1: both parts are form-encoded before the Basic encoding.
        pair = f"{quote(oauth.client_id, safe='')}:{quote(secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return headers


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None


class TokenAnswer:
    """A token endpoint's answer in the shape Authlib's clients read one: ``status_code``,
    ``json()`` and ``raise_for_status()``; ``data`` is what ``json()`` found."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.body = body
        self.data: Any = None

    def json(self) -> Any:
        self.data = _json(self.body)
        return self.data

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise ValueError(f"HTTP {self.status_code}")


def _provider_said(error: Any, description: Any) -> str:
    """``, <error>: <description>`` for a message, each only when it keeps to RFC 6749's
    characters for errors, cut short."""
    said = ""
    if isinstance(error, str) and _ERROR_TEXT.fullmatch(error):
        said = ", " + error[:60]
        if isinstance(description, str) and _ERROR_TEXT.fullmatch(description):
            said += ": " + description[:200]
    return said


def bearer_authorization(token: Mapping[str, Any]) -> str | None:
    """The Authorization header value presenting ``token``'s access token, as Authlib's
    client presents one (its ``TokenAuth`` signers: a ``token_type`` of Bearer in any case,
    or none); None for any other type."""
    token_type = token.get("token_type", TokenAuth.DEFAULT_TOKEN_TYPE)
    sign = TokenAuth.SIGN_METHODS.get(token_type.lower()) if isinstance(token_type, str) \
        else None
    if sign is None:
        return None
    _, headers, _ = sign(token["access_token"], "", {}, "", "header")
    return str(headers["Authorization"])


def token_result(status: int, body: bytes, host: str) -> TokenSet:
    """The tokens in a token endpoint answer, or the error it means.

    5xx/429 is an outage (UpstreamError); 400/401 or invalid_grant a dead grant. The answer
    is read as Authlib's client reads it (a JSON object; an ``error`` object is a refusal;
    ``expires_in`` a number of seconds); the access token must be one a Bearer header can
    carry, its ``token_type`` Bearer (or absent) as Authlib's client presents tokens.
    """
    if status >= 500 or status == 429:
        raise UpstreamError(f"The identity provider's token endpoint ({host}) failed with "
                            f"HTTP {status}; please try again.", code="token_error")
    answer = TokenAnswer(status, body)
    client = OAuth2Client(None)
    token: Mapping[str, Any] | None = None
    refused, error, description = False, None, None
    problem = "is not a JSON object"
    try:
        parsed = client.parse_response_token(answer)
        token = parsed if isinstance(parsed, dict) else None
    except OAuth2Error as exc:
        refused, error, description = True, exc.error, exc.description
    except (ValueError, TypeError, AttributeError, OverflowError):
        if isinstance(answer.data, dict) and "error" in answer.data:
            # An error whose description Authlib refuses (outside RFC 6749's characters).
            refused, error = True, answer.data["error"]
        elif isinstance(answer.data, dict):
            problem = "has an expires_in (or expires_at) that is not a number of seconds"
    if status != 200 or refused:
        # An error object in a 200 answer ends a session as an answer without tokens did.
        raise TokenRejected(f"The identity provider's token endpoint ({host}) refused the "
                            f"request (HTTP {status}{_provider_said(error, description)}).",
                            fatal=status in (200, 400, 401) or error == "invalid_grant")
    if token is None:
        raise HandshakeFailed(f"The identity provider's token answer {problem}.",
                              code="token_error")
    access_token = token.get("access_token")
    if not isinstance(access_token, str) or not _HEADER_TOKEN.fullmatch(access_token):
        raise HandshakeFailed("The identity provider's token answer has no access_token.",
                              code="token_error")
    authorization = bearer_authorization(token)
    if authorization is None:
        raise HandshakeFailed("The identity provider's token answer is not a Bearer token "
                              f"(token_type {json.dumps(token.get('token_type'))[:40]}).",
                              code="token_error")

    def optional(key: str) -> str | None:
        value = token.get(key)
        return value if isinstance(value, str) and value else None

    return TokenSet(access_token=access_token, authorization=authorization,
                    refresh_token=optional("refresh_token"), id_token=optional("id_token"))


def info_result(status: int, body: bytes, host: str) -> Any:
    """The Info API's JSON; 401/403 refuse the login, anything else wrong is an outage."""
    if status in (401, 403):
        raise HandshakeFailed(f"The Info API ({host}) refused the access token (HTTP "
                              f"{status}).", code="info_api_error")
    if status != 200:
        raise UpstreamError(f"The Info API ({host}) failed with HTTP {status}; please try "
                            "again.", code="info_api_error")
    data = _json(body)
    if data is None:
        raise UpstreamError(f"The Info API ({host}) answered with something that is not "
                            "JSON.", code="info_api_error")
    return data


def discovery_document(status: int, body: bytes, issuer: str) -> dict[str, Any]:
    """A discovery document that names ``issuer``; ValueError otherwise."""
    doc = _json(body) if status == 200 else None
    if not isinstance(doc, dict) or not same_issuer(str(doc.get("issuer", "")), issuer):
        raise ValueError(f"HTTP {status}, not a discovery document for this issuer")
    return doc


def check_iss(iss: str | None, endpoints: Endpoints) -> None:
    """RFC 9207: the answer must name the issuer the request went to."""
    if iss is None and endpoints.iss_required:
        raise HandshakeFailed("The identity provider's answer does not say who sent it "
                              "(no iss), though it announces it always does.",
                              code="iss_mismatch")
    if iss is not None and endpoints.issuer and not same_issuer(iss, endpoints.issuer):
        raise HandshakeFailed("The login answer names another identity provider than the "
                              "one this login was sent to (iss).", code="iss_mismatch")


def authorization_url(endpoints: Endpoints, oauth: OAuthConfig, redirect_uri: str,
                      login: LoginState) -> str:
    """The authorization request: code flow, one-time state, PKCE S256, nonce, extras."""
    params = [("response_type", "code"), ("client_id", oauth.client_id),
              ("redirect_uri", redirect_uri), ("scope", " ".join(oauth.scopes)),
              ("state", login.state), ("code_challenge", pkce_challenge(login.verifier)),
              ("code_challenge_method", "S256")]
    if login.nonce is not None:
        params.append(("nonce", login.nonce))
    return add_query(endpoints.authorization_url, [*params, *oauth.extra_params.items()])


def check_token_claims(claims: Mapping[str, Any], *, issuer: str | None, audience: str | None,
                       code: str, what: str, now: float, leeway: float = 30.0) -> None:
    """The claims of a provider's token once its signature verified: ``exp``, ``iat`` and
    ``sub`` present, ``exp`` and ``nbf`` within ``leeway``, ``iss`` (when the issuer is
    known) and ``aud`` (when given); HandshakeFailed naming why."""
    for name in ("exp", "iat", "sub"):
        if name not in claims:
            raise HandshakeFailed(f"The {what} has no {name} claim.", code=code)
    times = {}
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise HandshakeFailed(f"The {what}'s {name} is not a number.", code=code)
        times[name] = float(value)
    if now > times["exp"] + leeway:
        raise HandshakeFailed(f"The {what} has expired; check the clocks of the identity "
                              "provider and the gateway.", code=code)
    if max(times.get("nbf", 0.0), times["iat"]) > now + leeway:
        raise HandshakeFailed(f"The {what} is not valid yet; check the clocks of the "
                              "identity provider and the gateway.", code=code)
    if audience is not None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if audience not in audiences:
            raise HandshakeFailed(f"The {what} was issued for another client (aud does not "
                                  "include client_id).", code=code, expected=repr(audience),
                                  received=shown(aud))
    token_issuer = claims.get("iss")
    if issuer is not None and not (isinstance(token_issuer, str)
                                   and same_issuer(token_issuer, issuer)):
        raise HandshakeFailed(f"The {what} comes from another issuer than {issuer}.", code=code,
                              expected=repr(issuer), received=shown(token_issuer))


def check_id_token_claims(claims: Mapping[str, Any], *, client_id: str,
                          nonce: str | None) -> None:
    """OIDC's checks beyond the signature: ``azp`` and ``nonce`` (section 3.1.3.7)."""
    aud = claims.get("aud")
    azp = claims.get("azp")
    if (isinstance(aud, list) and len(aud) > 1 and azp is None) or \
            (azp is not None and azp != client_id):
        raise HandshakeFailed("The id_token was issued to another client (azp).",
                              code="id_token_invalid")
    if nonce is not None:
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not constant_time_equal(sent, nonce):
            raise HandshakeFailed("The id_token does not answer this login (nonce mismatch). "
                                  "Please log in again.", code="id_token_invalid")


def subject_changed(what: str) -> HandshakeFailed:
    """The error that ends a session whose refresh names another reader."""
    return HandshakeFailed(f"The identity provider's refresh answer ({what}) names another "
                           "user than the one logged in; the session is ended.",
                           code="subject_changed")


def check_refreshed_id_token(claims: Mapping[str, Any], original: str | None) -> None:
    """OIDC Core 12.2: an id_token from a refresh names the subject and issuer of the one
    the login received; anything else ends the session (HandshakeFailed)."""
    if original is None:
        return
    try:
        # The login's id_token was verified when the session began, and is kept sealed in it.
        first = strict_json(split_jws(original, MAX_PROVIDER_TOKEN).payload, "payload")
    except TokenError:
        raise subject_changed("the login's id_token is unreadable") from None
    if not isinstance(first, dict):
        raise subject_changed("the login's id_token is unreadable")
    for name in ("sub", "iss"):
        if claims.get(name) != first.get(name):
            raise subject_changed(f"id_token {name}")


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by exact name, else by dotted path (``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for segment in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment)
    return value


def groups_from_claim(value: Any, delimiter: str) -> tuple[str, ...]:
    """Mintlify's rule: a string is split on the delimiter, trimmed, empties dropped;
    an array is one group per item."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(delimiter) if part.strip())
    if isinstance(value, list):
        groups = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise HandshakeFailed("The groups claim holds an item that is not a string.",
                                      code="invalid_groups")
            if str(item).strip():
                groups.append(str(item))
        return tuple(groups)
    raise HandshakeFailed("The groups claim must be a string or a list of strings.",
                          code="invalid_groups")


def user_data_from_claims(claims: Mapping[str, Any], skip: str | None = None) -> dict[str, Any]:
    """A user object from token claims: ``sub``, and the profile claims as ``content``."""
    content = {k: v for k, v in claims.items() if k not in PROTOCOL_CLAIMS and k != skip}
    return {"sub": claims.get("sub"), "content": content}


def end_session_url(endpoint: str, *, id_token: str | None, post_logout: str,
                    client_id: str) -> str:
    """RP-initiated logout (OIDC): the end_session_endpoint with its parameters."""
    params = [("id_token_hint", id_token)] if id_token else []
    params += [("post_logout_redirect_uri", post_logout), ("client_id", client_id)]
    return add_query(endpoint, params)


#: The IdP error codes a callback may report; anything else counts as "idp_error".
IDP_ERRORS = frozenset({
    "access_denied", "login_required", "consent_required", "interaction_required",
    "account_selection_required", "temporarily_unavailable", "server_error", "invalid_request",
    "invalid_scope", "unauthorized_client", "unsupported_response_type",
})


def idp_error(error: str, description: str | None) -> HandshakeFailed:
    """The page for an error the identity provider sent back instead of a code."""
    code = error if error in IDP_ERRORS else "idp_error"
    if code == "access_denied":
        message = "The login was declined at the identity provider, so you are not logged in."
    else:
        message = f"The identity provider did not log you in ({code})."
    if description:
        message += f" It said: {description[:200]}"
    return HandshakeFailed(message, code=code)


def user_data(oauth: OAuthConfig, *, info: Any, id_claims: Mapping[str, Any] | None,
              access_claims: Mapping[str, Any] | None) -> Any:
    """The user object before validation: the Info API's answer, else token claims, with
    groups per ``groups_from``; None when there is nothing to read it from."""
    source = oauth.groups_from
    data: Any = info
    if data is None:
        claims = id_claims if id_claims is not None else access_claims
        if claims is None:
            return None
        skip = source.claim if source is not None and source.source != "info_api" else None
        data = user_data_from_claims(claims, skip)
    if source is None or not isinstance(data, dict):
        return data
    origin = {"id_token": id_claims, "access_token": access_claims,
              "info_api": data}[source.source]
    if origin is None:
        raise HandshakeFailed(f"The identity provider sent no {source.source} to read groups "
                              "from (handshake.oauth.groups_from).", code="id_token_invalid")
    groups = groups_from_claim(claim_value(origin, source.claim), source.delimiter)
    return {**data, "groups": list(groups)}


def crowded_attempts(codec: StateCodec, cookies: Mapping[str, str], keep: int) -> list[str]:
    """The state cookies to drop, oldest (or unreadable) first, so at most ``keep`` remain."""
    ages: list[tuple[float, str]] = []
    for name, value in cookies.items():
        if name.startswith(codec.prefix):
            try:
                ages.append((codec.open(name, value).created_at, name))
            except HandshakeFailed:
                ages.append((0.0, name))
    ages.sort()
    return [name for _, name in ages[:max(0, len(ages) - keep)]]
