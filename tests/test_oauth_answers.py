"""The OAuth handshake against a provider's answers that break the protocol: token answers
read as Authlib's client reads them, and discovery documents checked by Authlib's RFC 8414
validators and the gateway's own rules. Against the real test provider, made hostile.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from joserfc import jwt as jose_jwt

from gateway.handshakes import oauth_flow as flow
from tests.authserver import KID, SIGNING_KEY
from tests.helpers import make_config
from tests.test_attack_oauth import HostileIdP, Start, refused
from tests.test_attack_oauth import gateway as gateway  # the gateway fixture
from tests.test_attack_oauth import idp as idp  # the hostile provider fixture
from tests.test_oauth import make_stale, me

# -- token answers, read as Authlib's client reads them -----------------------------------


def _token_answer(idp: HostileIdP, **fields: Any) -> bytes:
    """A token answer with an honest id_token for the last authorization request."""
    id_token = jose_jwt.encode({"alg": "RS256", "kid": KID}, idp.claims(), SIGNING_KEY)
    return json.dumps({"id_token": id_token, **fields}).encode()


@pytest.mark.parametrize(("fields", "said"), [
    ({"token_type": "Bearer"}, "no access_token"),
    ({"access_token": "", "token_type": "Bearer"}, "no access_token"),
    ({"access_token": 42, "token_type": "Bearer"}, "no access_token"),
    ({"access_token": "at\r\nX-Injected: 1", "token_type": "Bearer"}, "no access_token"),
    ({"access_token": "at", "token_type": "DPoP"}, "not a Bearer token"),
    ({"access_token": "at", "token_type": "mac"}, "not a Bearer token"),
    ({"access_token": "at", "token_type": None}, "not a Bearer token"),
    ({"access_token": "at", "token_type": "Bearer", "expires_in": "soon"}, "expires_in"),
    ({"access_token": "at", "token_type": "Bearer", "expires_in": 1e400}, "expires_in"),
    ({"error": "invalid_grant", "error_description": "The code has expired"},
     "invalid_grant: The code has expired"),
    ({"error": "invalid_grant", "error_description": 'a "quoted" \\ description'},
     "(HTTP 200, invalid_grant)"),
])
async def test_a_token_answer_the_login_cannot_use_is_refused(
        gateway: Start, idp: HostileIdP, fields: dict[str, Any], said: str) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    idp.token_body = _token_answer(idp, **fields)
    hop = await refused(browser, callback, "token_error")
    assert said in json.loads(hop.body)["message"]


@pytest.mark.parametrize("body", [b"<html>Sign in</html>", b"[]", b"null", b'"token"'])
async def test_a_token_answer_that_is_not_a_json_object_is_refused(
        gateway: Start, idp: HostileIdP, body: bytes) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    idp.token_body = body
    hop = await refused(browser, callback, "token_error")
    assert "not a JSON object" in json.loads(hop.body)["message"]


@pytest.mark.parametrize("fields", [
    {"token_type": "bearer"},
    {},
    {"token_type": "Bearer", "expires_in": "3600"},
    {"token_type": "Bearer", "expires_in": 0, "scope": "openid email", "refresh_token": ""},
])
async def test_token_answers_in_the_shapes_providers_send_log_in(
        gateway: Start, idp: HostileIdP, fields: dict[str, Any]) -> None:
    # token_type in any case or absent (Bearer), expires_in as a string of digits.
    browser = await gateway()
    callback = await browser.authorize(await browser.start("/guide"))
    idp.token_body = _token_answer(idp, access_token="at-1.~+/=", **fields)
    hop = await browser.get(callback)
    assert (hop.status, hop.location) == (303, "/guide"), hop.body
    assert (await browser.get("/_gateway/user")).status == 200


@pytest.mark.parametrize(("fields", "ends"), [
    ({"error": "invalid_grant"}, True),
    ({"access_token": "at2", "token_type": "DPoP"}, True),
    ({"access_token": "at2", "token_type": "Bearer", "expires_in": "soon"}, True),
    ({"access_token": "at2", "token_type": "bearer", "expires_in": "60"}, False),
])
async def test_a_refresh_answer_is_read_as_a_login_answer_is(
        gateway: Start, idp: HostileIdP, fields: dict[str, Any], ends: bool) -> None:
    # A refresh answer the session cannot continue with ends it, as at login; one without
    # an id_token keeps the user the login read.
    browser = await gateway()
    assert (await browser.login()).status == 303
    idp.token_body = json.dumps(fields).encode()
    await make_stale(browser)
    status, _ = await me(browser)
    assert status == (401 if ends else 200)
    assert idp.grants("refresh_token") == 1


# -- discovery documents, checked by Authlib's RFC 8414 validators and the gateway's rules --


def _document(idp: HostileIdP, **changes: Any) -> bytes:
    """The provider's discovery document with ``changes`` (None: the key left out)."""
    base = idp.issuer
    doc = {"issuer": base, "authorization_endpoint": f"{base}/authorize",
           "token_endpoint": f"{base}/token", "jwks_uri": f"{base}/jwks",
           "end_session_endpoint": f"{base}/logout", "response_types_supported": ["code"],
           "code_challenge_methods_supported": ["S256"],
           "id_token_signing_alg_values_supported": ["RS256"],
           "authorization_response_iss_parameter_supported": True, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


@pytest.mark.parametrize(("changes", "said"), [
    ({"response_types_supported": ["token", "id_token", "code id_token"]},
     'response_types_supported lacks "code"'),
    ({"response_types_supported": []}, '"response_types_supported" is required'),
    ({"response_types_supported": "code"}, '"response_types_supported" MUST be JSON array'),
    ({"id_token_signing_alg_values_supported": "RS256"},
     '"id_token_signing_alg_values_supported" MUST be JSON array'),
    ({"authorization_response_iss_parameter_supported": "false"},
     '"authorization_response_iss_parameter_supported" MUST be boolean'),
])
async def test_a_discovery_document_the_code_flow_cannot_use_is_refused(
        gateway: Start, idp: HostileIdP, changes: dict[str, Any], said: str) -> None:
    idp.discovery_body = _document(idp, **changes)
    browser = await gateway()
    hop = await browser.get("/_gateway/login?redirect=/guide")
    answer = json.loads(hop.body)
    assert (hop.status, answer["error"]) == (503, "idp_unavailable")
    assert said in answer["message"] and "OpenID discovery failed" in answer["message"]
    assert idp.authorize_requests == []
    # Once the provider's document is fixed, logins work without a restart.
    idp.discovery_body = _document(idp)
    assert (await browser.login()).status == 303


@pytest.mark.parametrize("changes", [
    {"response_types_supported": None},
    {"response_types_supported": ["code id_token", "code", "id_token"]},
    {"id_token_signing_alg_values_supported": None,
     "authorization_response_iss_parameter_supported": None},
    {"code_challenge_methods_supported": "S256", "subject_types_supported": "public",
     "ui_locales_supported": ["not a language tag!"], "grant_types_supported": "code"},
])
async def test_a_discovery_document_that_breaks_only_what_the_gateway_does_not_read_is_used(
        gateway: Start, idp: HostileIdP, changes: dict[str, Any]) -> None:
    # Keys left out, or keys the gateway never reads, are not judged (as oauth2-proxy and
    # Pomerium do not judge them).
    idp.discovery_body = _document(idp, **changes)
    browser = await gateway()
    assert (await browser.login()).status == 303


@pytest.mark.parametrize("announced", [["plain"], "S256"])
async def test_pkce_methods_announced_without_s256_are_a_warning_not_a_refusal(
        gateway: Start, idp: HostileIdP, announced: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    idp.discovery_body = _document(idp, code_challenge_methods_supported=announced)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        browser = await gateway()
        assert (await browser.login()).status == 303
    assert idp.authorize_requests[-1]["code_challenge_method"] == "S256"
    warnings = [r.getMessage() for r in caplog.records if "OpenID discovery" in r.getMessage()]
    assert len(warnings) == 1 and "S256" in warnings[0], warnings


def test_an_https_issuer_with_a_query_is_refused_by_authlibs_rule() -> None:
    issuer = "https://id.example.com/?tenant=1"
    config = make_config(handshake={"method": "oauth", "oauth": {
        "issuer": issuer, "client_id": "docs"}})
    doc = {"issuer": issuer, "authorization_endpoint": "https://id.example.com/authorize",
           "token_endpoint": "https://id.example.com/token"}
    with pytest.raises(ValueError, match="query or fragment"):
        flow.merge_endpoints(config.handshake.oauth, doc)


def test_an_http_issuer_keeps_its_http_endpoints() -> None:
    # Authlib's https rule does not apply to an issuer the configuration put on http (a
    # provider inside a private network); the gateway's URL rule does.
    issuer = "http://keycloak:8080/realms/docs"
    config = make_config(handshake={"method": "oauth", "oauth": {
        "issuer": issuer, "client_id": "docs"}})
    endpoints = flow.merge_endpoints(config.handshake.oauth, {
        "issuer": issuer, "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token", "jwks_uri": f"{issuer}/certs",
        "response_types_supported": ["code"]})
    assert (endpoints.token_url, endpoints.jwks_url) == (f"{issuer}/token", f"{issuer}/certs")
