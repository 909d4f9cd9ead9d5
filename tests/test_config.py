"""Loading gateway.yaml: good files give a Config, bad files give every problem, one line each."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.config.load import build_config, load_config
from gateway.config.model import (
    Config,
    GroupsFrom,
    LoginUrl,
    Rule,
    default_config_path,
    format_duration,
    parse_duration,
)
from gateway.errors import ConfigError

SECRET = "s" * 40
ENV = {"GATEWAY_SESSION_SECRET": SECRET}
DELETE = "<delete>"

BASE: dict[str, Any] = {
    "upstream": {"url": "http://127.0.0.1:3000"},
    "handshake": {
        "method": "jwt",
        "jwt": {
            "login_urls": [{"name": "Dashboard", "url": "https://dash.example.com/docs-login"}],
            "public_keys": ["keys/login.pub.pem"],
        },
    },
    "session": {"secrets": ["${GATEWAY_SESSION_SECRET}"]},
}


def _pem_private(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_public(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A config folder with keys/login.pub.pem, keys/gateway.pem (Ed25519), keys/es256.pem."""
    keys = tmp_path / "keys"
    keys.mkdir()
    login, gateway = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    (keys / "login.pub.pem").write_bytes(_pem_public(login))
    (keys / "gateway.pem").write_bytes(_pem_private(gateway))
    (keys / "es256.pem").write_bytes(_pem_private(ec.generate_private_key(ec.SECP256R1())))
    (keys / "notes.txt").write_text("not a key\n")
    for name in ("gateway.pem", "es256.pem"):
        (keys / name).chmod(0o600)
    return tmp_path


def merged(patch: str) -> dict[str, Any]:
    """BASE with a YAML snippet merged in (mappings merge, other values replace)."""

    def merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value == DELETE:
                into.pop(key, None)
            elif isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    data = copy.deepcopy(BASE)
    merge(data, yaml.safe_load(patch) or {})
    return data


def write(folder: Path, text: str) -> Path:
    path = folder / "gateway.yaml"
    path.write_text(text)
    return path


def load(folder: Path, patch: str = "", env: dict[str, str] | None = None) -> Config:
    text = yaml.safe_dump(merged(patch), sort_keys=False)
    return load_config(write(folder, text), env=ENV if env is None else env)


def problems(folder: Path, patch: str = "", env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(folder, patch, env)
    return info.value.problems


def raw_problems(folder: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(folder, text), env=ENV)
    return info.value.problems


BAD = [
    ("sesion: {}", ["sesion: unknown key; did you mean 'session'?"]),
    ("server: {listne: '127.0.0.1:1'}", ["server.listne: unknown key; did you mean 'listen'?"]),
    ("server: {colour: red}", ["server.colour: unknown key"]),
    ("on: true", ["true: unknown key (YAML reads on/off/yes/no as booleans; quote it)"]),
    ("server: '127.0.0.1:8080'",
     ["server: must be a mapping of keys, not the string '127.0.0.1:8080'"]),
    ("server: {listen: localhost}",
     ["server.listen: must be host:port, like 127.0.0.1:8080, not 'localhost'"]),
    ("server: {listen: '127.0.0.1:70000'}", ["server.listen: port 70000 is out of range 0-65535"]),
    ("server: {public_url: docs.example.com}",
     ["server.public_url: must be an absolute http or https URL, not 'docs.example.com'"]),
    ("server: {public_url: 'https://docs.example.com/?a=1'}",
     ["server.public_url: must not have a query or a fragment"]),
    ("server: {workers: many}",
     ["server.workers: must be a whole number, not the string 'many' (or \"auto\": one per CPU)"]),
    ("server: {workers: 0}",
     ["server.workers: must be at least 1, not 0 (or \"auto\": one per CPU)"]),
    ("server: {trusted_proxies: ['10.0.0.0/8', intranet]}",
     ["server.trusted_proxies[1]: 'intranet' is not an IP address or CIDR"]),
    ("server: {prefix: /_gateway/}",
     ["server.prefix: must be a path like /_gateway (no trailing slash), not '/_gateway/'"]),
    ("server: {compat: [mintlfy]}",
     ["server.compat[0]: unknown compatibility 'mintlfy'; known: mintlify"]),
    ("server: {admin_listen: '127.0.0.1:8080'}",
     ["server.admin_listen: must differ from server.listen"]),
    ("upstream: {url: null}",
     ["upstream: set one of url (a docs server) or root (a built docs folder)"]),
    ("upstream: {root: ./site}",
     ["upstream: set exactly one of url and root, not both",
      "upstream.root: folder './site' does not exist"]),
    ("upstream: {url: '127.0.0.1:3000'}",
     ["upstream.url: must be an absolute http or https URL, not '127.0.0.1:3000'"]),
    ("upstream: {timeout: 30}",
     ['upstream.timeout: must be a duration like 30s or 15m, not the number 30 '
      '(write "30s" for seconds)']),
    ("upstream: {connect_timeout: 2 weeks}",
     ["upstream.connect_timeout: '2 weeks' is not a duration; use a number and a unit, "
      "like 30s, 15m, 12h"]),
    ("upstream: {host_header: preserv}",
     ["upstream.host_header: must be one of upstream, preserve, not 'preserv'; "
      "did you mean 'preserve'?"]),
    ("upstream: {max_connections: 0}", ["upstream.max_connections: must be at least 1, not 0"]),
    ("mode: authenticated",
     ["mode: must be one of authenticate, personalize, not 'authenticated'; "
      "did you mean 'authenticate'?"]),
    ("handshake: {method: saml}",
     ["handshake.method: must be one of jwt, shared_session, oauth, not 'saml'"]),
    ("handshake: {jwt: {public_keys: <delete>}}",
     ["handshake.jwt: needs public_keys, jwks_url or secret to verify tokens"]),
    (f"handshake: {{jwt: {{secret: {SECRET}}}}}",
     ["handshake.jwt.secret: excludes public_keys and jwks_url; use one kind of key"]),
    ("handshake: {jwt: {public_keys: <delete>, secret: short}}",
     ["handshake.jwt.secret: must be at least 32 bytes"]),
    ("handshake: {jwt: {algorithms: [EdDSA, none]}}",
     ['handshake.jwt.algorithms[1]: "none" is never accepted']),
    ("handshake: {jwt: {algorithms: [EdDSA, ES265]}}",
     ["handshake.jwt.algorithms[1]: unknown algorithm 'ES265'; did you mean 'ES256'?"]),
    ("handshake: {jwt: {algorithms: [EdDSA, HS256]}}",
     ["handshake.jwt.algorithms: HS algorithms need a secret, not public keys"]),
    ("handshake: {jwt: {algorithms: [RS256]}}",
     ["handshake.jwt.public_keys[0]: holds a key for EdDSA, which algorithms (RS256) "
      "does not allow"]),
    ("handshake: {jwt: {public_keys: [keys/nope.pub.pem]}}",
     ["handshake.jwt.public_keys[0]: file 'keys/nope.pub.pem' does not exist"]),
    ("handshake: {jwt: {public_keys: [keys/notes.txt]}}",
     ["handshake.jwt.public_keys[0]: file 'keys/notes.txt': is not a PEM public key"]),
    ("handshake: {jwt: {public_keys: keys/login.pub.pem}}",
     ["handshake.jwt.public_keys: must be a list of strings, not the string 'keys/login.pub.pem'"]),
    ("handshake: {jwt: {login_urls: <delete>}}",
     ["handshake.jwt.login_urls: needs at least one {name, url} where visitors log in"]),
    ("handshake: {jwt: {login_urls: [{name: Dashboard, link: 'https://x.example'}]}}",
     ["handshake.jwt.login_urls[0].url: is required",
      "handshake.jwt.login_urls[0].link: unknown key"]),
    ("handshake: {jwt: {require_host: maybe}}",
     ["handshake.jwt.require_host: must be true or false, not the string 'maybe'"]),
    ("handshake: {jwt: {leeway: -1s}}",
     ["handshake.jwt.leeway: '-1s' is not a duration; use a number and a unit, "
      "like 30s, 15m, 12h"]),
    ("handshake: {method: shared_session}",
     ["handshake.shared_session.info_api_url: is required for the shared_session method",
      "handshake.shared_session.login_url: is required in authenticate mode "
      "(where anonymous visitors are sent)"]),
    ("handshake: {shared_session: {cookies: [my session]}}",
     ["handshake.shared_session.cookies[0]: 'my session' is not a cookie name"]),
    ("handshake: {method: oauth}",
     ["handshake.oauth: needs issuer (OIDC discovery) or both authorization_url and token_url"]),
    ("handshake: {oauth: {extra_params: {prompt: login, state: x}}}",
     ["handshake.oauth.extra_params.state: is set by the gateway and cannot be overridden"]),
    ("handshake: {oauth: {groups_from: {source: userinfo}}}",
     ["handshake.oauth.groups_from.source: must be one of id_token, access_token, info_api, "
      "not 'userinfo'"]),
    ("handshake: {oauth: {client_secret: 123456789}}",
     ["handshake.oauth.client_secret: must be a string, not a number"]),
    ("session: {secrets: <delete>}",
     ["session.secrets: needs at least one secret of 32 bytes or more (make one: "
      "python -c 'import secrets; print(secrets.token_urlsafe(48))')"]),
    ("session: {secrets: [too-short]}", ["session.secrets[0]: is 9 bytes; use at least 32"]),
    ("session: {secrets: the-secret-as-a-string-not-a-list-1234}",
     ["session.secrets: must be a list of strings, not a string"]),
    ("session: {store: memcached}",
     ["session.store: must be one of cookie, redis, not 'memcached'"]),
    ("session: {same_site: on}",
     ["session.same_site: must be one of lax, strict, none, not the boolean true "
      "(YAML reads on/off/yes/no as booleans; quote it)"]),
    ("session: {same_site: none}",
     ["session.same_site: none needs an https public_url "
      "(browsers drop SameSite=None without Secure)"]),
    ("session: {cookie_name: __Host-docs}",
     ["session.cookie_name: must not start with __ (the __Host- prefix is added when it applies)"]),
    ("session: {redis_url: 'http://:hunter2@cache:6379'}",
     ["session.redis_url: must start with one of redis://, rediss://, unix://, "
      "redis+sentinel://, rediss+sentinel://, redis+cluster://, rediss+cluster://"]),
    ("session: {redis_url: 'redis+sentinel://:hunter2@s1:26379,s2:26379'}",
     ["session.redis_url: must name the master the sentinels watch: "
      "redis+sentinel://host:26379/<master name>[/<db>]"]),
    ("session: {redis_url: 'redis+sentinel://s1:26379/main/one'}",
     ["session.redis_url: has a database that is not a number ('one')"]),
    ("session: {redis_url: 'redis+sentinel://s1:26379/main?db=2'}",
     ["session.redis_url: has options this gateway does not read: db "
      "(it reads sentinel_username, sentinel_password)"]),
    # A URL that names a password has none of its parts repeated.
    ("session: {redis_url: 'redis+sentinel://s1:26379/main?password=hunter2'}",
     ["session.redis_url: has options this gateway does not read "
      "(it reads sentinel_username, sentinel_password)"]),
    ("session: {redis_url: 'redis+sentinel://s1:263790/main'}",
     ["session.redis_url: has a bad port for s1"]),
    ("session: {redis_url: 'redis+cluster://:hunter2@n1:7000,,n2:7001'}",
     ["session.redis_url: has an empty host in its host list"]),
    ("session: {redis_url: 'redis://:pass/word@cache:6379/0'}",
     ["session.redis_url: has an @ after its host: percent-encode a /, ?, # or @ in the "
      "user name or password (%2F, %3F, %23, %40)"]),
    ("session: {redis_url: 'redis://cache:port/0'}", ["session.redis_url: has a bad port"]),
    ("session: {redis_url: 'redis://cache:6379/zero'}",
     ["session.redis_url: has a database that is not a number"]),
    ("session: {redis_url: 'rediss+cluster://n1:7000/2'}",
     ["session.redis_url: must not name a database: a Redis Cluster has only db 0"]),
    ("session: {max_age: 0s}", ["session.max_age: must be longer than zero"]),
    ("identity: {assertion: {algorithm: HS256}}",
     ["identity.assertion.algorithm: must be one of EdDSA, ES256, RS256, not 'HS256'"]),
    ("identity: {assertion: {private_key: ./keys/signing.pem}}",
     ["identity.assertion.private_key: file './keys/signing.pem' does not exist; create one "
      "with: docs-gateway keys generate --alg EdDSA --out ./keys/signing"]),
    ("identity: {assertion: {private_key: keys/gateway.pem, algorithm: ES256}}",
     ["identity.assertion.private_key: file 'keys/gateway.pem' holds an EdDSA key, "
      "but the algorithm is ES256"]),
    ("identity: {assertion: {private_key: [keys/gateway.pem, keys/gone.pem]}}",
     ["identity.assertion.private_key[1]: file 'keys/gone.pem' does not exist; create one "
      "with: docs-gateway keys generate --alg EdDSA --out keys/gone"]),
    ("identity: {assertion: {header: 42}}",
     ["identity.assertion.header: must be a header name or null, not the number 42"]),
    ("identity: {headers: {X Gateway User: sub}}",
     ["identity.headers.X Gateway User: is not a header name"]),
    ("identity: {headers: {x-gateway-assertion: sub}}",
     ["identity.headers.x-gateway-assertion: is already the assertion header"]),
    ("identity: {expose: [group]}",
     ["identity.expose[0]: unknown field 'group'; did you mean 'groups'?"]),
    ("identity: {inject_script: yes please}",
     ["identity.inject_script: must be true or false, not the string 'yes please'"]),
    ("identity: {playgrounds: [swagger, stoplight]}",
     ["identity.playgrounds[0]: unknown playground 'swagger'; did you mean 'swagger-ui'?",
      "identity.playgrounds[1]: unknown playground 'stoplight'; known: swagger-ui, scalar"]),
    ("identity: {playgrounds: scalar}",
     ["identity.playgrounds: must be a list of strings, not the string 'scalar'"]),
    ("access: {public: ['assets/**']}", ["access.public[0]: must start with /, not 'assets/**'"]),
    ("access: {rules: [{path: /admin/**}]}",
     ["access.rules[0].groups: is required (a list of groups; [] admits nobody)"]),
    ("access: {rules: [{groups: [admin]}]}",
     ["access.rules[0].path: is required (a path glob like /admin/**)"]),
    ("access: {rules: {path: /admin/**, groups: [admin]}}",
     ["access.rules: must be a list of {path, groups}, not a mapping"]),
    ("access: {denied: 403}",
     ["access.denied: must be one of not_found, forbidden, not the number 403"]),
    ("logging: {level: off}",
     ["logging.level: must be one of debug, info, warning, error, not the boolean false "
      "(YAML reads on/off/yes/no as booleans; quote it)"]),
    ("logging: {format: yaml}", ["logging.format: must be one of json, text, not 'yaml'"]),
    ("user: {subject: []}", ["user.subject: needs at least one path"]),
    ("upstream: {url: '${UPSTREAM'}",
     ["upstream.url: has a malformed ${...}; write ${NAME} or ${NAME:-default}"]),
    ("upstream: {url: 'http://${DOCS_HOST}:3000'}",
     ["upstream.url: environment variable DOCS_HOST is not set"]),
]


@pytest.mark.parametrize(("patch", "expected"), BAD, ids=[case[1][0][:60] for case in BAD])
def test_bad_file_names_each_problem(folder: Path, patch: str, expected: list[str]) -> None:
    assert problems(folder, patch) == expected


def test_bad_files_are_distinct_and_many() -> None:
    assert len({patch for patch, _ in BAD}) == len(BAD) >= 30


def test_every_problem_is_reported_at_once(folder: Path) -> None:
    found = problems(folder, "server: {listen: nowhere}\nmode: open\n"
                             "session: {max_age: 14}\nextra: 1\n")
    assert found == [
        "server.listen: must be host:port, like 127.0.0.1:8080, not 'nowhere'",
        "mode: must be one of authenticate, personalize, not 'open'",
        'session.max_age: must be a duration like 30s or 15m, not the number 14 '
        '(write "14s" for seconds)',
        "extra: unknown key",
    ]


def test_missing_environment_variable_is_named_once(folder: Path) -> None:
    # The empty value is not also reported as too short.
    assert problems(folder, env={}) == [
        "session.secrets[0]: environment variable GATEWAY_SESSION_SECRET is not set"]


def test_secret_values_never_appear_in_messages(folder: Path) -> None:
    found = problems(folder, "session: {redis_url: 'http://:hunter2@cache'}\n"
                             "handshake: {jwt: {secret: [hunter2]}}\n")
    assert found
    assert not any("hunter2" in line for line in found)
    for url in ("redis+sentinel://:hunter2@s1:x/main", "redis+cluster://u:hunter2@:7000",
                "redis+sentinel://:hunter2@s1/main/0/1", "redis+cluster://:hunter2@",
                # A password with a character it should have percent-encoded: the URL is
                # read as it is, and no part of it is echoed.
                "redis+sentinel://:xx/hunter2@s1:26379/main",
                "redis+sentinel://:hunter2/xx@s1:26379/main",
                "redis+sentinel://:xx?hunter2@s1:26379/main",
                "redis+sentinel://:hunter2:99999/x@s1:26379/main",
                "redis+sentinel://:x@s1:26379/main/hunter2@s2",
                "redis+cluster://u:hunter2/x@n1:7000",
                # One server's URL too: redis-py reads such a password's first part as the
                # port, and says so at start; the rest was logged as the path.
                "redis://:hunter2/x@cache:6379/0", "redis://:x/hunter2@cache:6379/0",
                "rediss://u:hunter2?x@cache:6380", "redis://:hunter2#x@cache:6379",
                "redis://u:6379/hunter2@cache:6379/0"):
        found = problems(folder, f"session: {{redis_url: '{url}'}}\n")
        assert found and not any("hunter2" in line for line in found), url


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert info.value.problems == [
        f"{tmp_path / 'missing.yaml'}: file not found (give one with -c FILE or $GATEWAY_CONFIG)"]


def test_empty_file(tmp_path: Path) -> None:
    assert raw_problems(tmp_path, "# only a comment\n") == [
        f"{tmp_path / 'gateway.yaml'}: the file is empty"]


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    assert raw_problems(tmp_path, "server:\n  listen: [1, 2\nmode: personalize\n") == [
        f"{tmp_path / 'gateway.yaml'}: line 3, column 5: expected ',' or ']', but got ':'"]


def test_python_tags_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"mode: !!python/object/apply:os.system ['touch {marker}']\n"
    found = raw_problems(tmp_path, text)
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'gateway.yaml'}: line 1, column 7: could not "
                               "determine a constructor for the tag")
    assert not marker.exists()


def test_duplicate_keys_are_refused(folder: Path) -> None:
    text = ("upstream:\n  url: http://127.0.0.1:3000\n  url: http://127.0.0.1:4000\n"
            "mode: personalize\nmode: authenticate\n")
    found = raw_problems(folder, text)
    assert found[:2] == [
        "upstream.url: is given twice (lines 2 and 3); keep one",
        "mode: is given twice (lines 4 and 5); keep one",
    ]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert raw_problems(tmp_path, "- server\n- upstream\n") == [
        "the file must be a mapping of sections (server:, upstream:, handshake:, ...), not a list"]


def test_several_documents_are_refused(tmp_path: Path) -> None:
    found = raw_problems(tmp_path, "mode: personalize\n---\nmode: authenticate\n")
    assert found == [f"{tmp_path / 'gateway.yaml'}: line 2, column 1: "
                     "but found another document"]


def test_minimal_jwt_file_gets_the_documented_defaults(folder: Path) -> None:
    config = load(folder)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.server.public_url == "http://127.0.0.1:8080"
    assert config.server.prefix == "/_gateway" and config.server.workers == 1
    assert config.upstream.url == "http://127.0.0.1:3000"
    assert (config.upstream.timeout, config.upstream.connect_timeout) == (30.0, 5.0)
    assert config.mode == "authenticate"
    jwt = config.handshake.jwt
    assert jwt.login_urls == (LoginUrl("Dashboard", "https://dash.example.com/docs-login"),)
    assert jwt.public_keys == (folder / "keys" / "login.pub.pem",)
    assert jwt.algorithms == ("EdDSA", "ES256")
    assert (jwt.max_age, jwt.leeway, jwt.require_host) == (300.0, 30.0, True)
    assert config.session.secrets == (SECRET,)
    assert (config.session.store, config.session.max_age) == ("cookie", 14 * 86400.0)
    assert config.identity.assertion.header == "X-Gateway-Assertion"
    assert config.access.public == ("/favicon.ico", "/assets/**")
    assert config.access.denied == "not_found"
    assert config.user.subject == ("sub", "content.id", "content.email")
    assert (config.logging.level, config.logging.format) == ("info", "json")
    assert config.source == folder / "gateway.yaml"


def test_minimal_shared_session_file(folder: Path) -> None:
    config = load(folder, "handshake: {method: shared_session, jwt: <delete>, shared_session: "
                          "{info_api_url: 'https://dash.example.com/api/user', cookies: [sid], "
                          "login_url: 'https://dash.example.com/login'}}")
    shared = config.handshake.shared_session
    assert config.handshake.method == "shared_session"
    assert shared.info_api_url == "https://dash.example.com/api/user"
    assert (shared.cookies, shared.cache_ttl, shared.timeout) == (("sid",), 30.0, 5.0)


def test_minimal_oauth_file(folder: Path) -> None:
    config = load(folder, "handshake: {method: oauth, jwt: <delete>, oauth: "
                          "{issuer: 'https://id.example.com', client_secret: '${CS}', "
                          "groups_from: {source: id_token, claim: roles}}}",
                  env={**ENV, "CS": "client-secret"})
    oauth = config.handshake.oauth
    assert oauth.issuer == "https://id.example.com"
    assert oauth.client_secret == "client-secret"
    assert oauth.groups_from == GroupsFrom(source="id_token", claim="roles", delimiter=",")
    assert oauth.scopes == ("openid", "email") and oauth.refresh is True


def test_inactive_method_sections_need_no_key_files(folder: Path) -> None:
    config = load(folder, "handshake: {method: oauth, jwt: {public_keys: [keys/absent.pem]}, "
                          "oauth: {issuer: 'https://id.example.com'}}")
    assert config.handshake.method == "oauth"


def test_interpolation_anywhere_in_a_string(folder: Path) -> None:
    env = {**ENV, "HOST": "docs.example.com", "EMPTY": "", "PORT": "9000"}
    config = load(folder, "server: {public_url: 'https://${HOST}/guide/', "
                          "listen: '${BIND:-0.0.0.0}:${PORT}'}\n"
                          "upstream: {url: 'http://${UP:-127.0.0.1}:${EMPTY:-3000}'}",
                  env=env)
    assert config.server.public_url == "https://docs.example.com/guide"
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9000)
    assert config.upstream.url == "http://127.0.0.1:3000"


def test_numbers_and_booleans_from_the_environment(folder: Path) -> None:
    config = load(folder, "server: {workers: '${W}'}\nupstream: {max_connections: '${M}'}\n"
                          "identity: {inject_script: '${INJECT:-false}'}",
                  env={**ENV, "W": "3", "M": "7"})
    assert (config.server.workers, config.upstream.max_connections) == (3, 7)
    assert config.identity.inject_script is False


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("30s", 30.0), ("15m", 900.0), ("12h", 43200.0), ("14d", 1209600.0),
    ("1.5h", 5400.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["30", "s", "5 weeks", "-1s", "1e3s", ""])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_durations_in_the_file(folder: Path) -> None:
    config = load(folder, "upstream: {timeout: 500ms}\nsession: {max_age: 12h}\n"
                          "handshake: {jwt: {max_age: 15m, leeway: 0s}}")
    assert config.upstream.timeout == 0.5
    assert config.session.max_age == 43200.0
    assert (config.handshake.jwt.max_age, config.handshake.jwt.leeway) == (900.0, 0.0)


def test_workers_auto_is_one_per_cpu(folder: Path) -> None:
    config = load(folder, "server: {workers: auto}")
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert config.server.workers == expected


def test_public_url_base_path(folder: Path) -> None:
    config = load(folder, "server: {public_url: 'https://example.com/docs/', prefix: /auth}")
    assert config.server.base_path == "/docs"
    assert config.server.route_base == "/docs/auth"
    assert config.server.public_host == "example.com" and config.server.https


def test_jwt_secret_defaults_to_hs256(folder: Path) -> None:
    config = load(folder, f"handshake: {{jwt: {{public_keys: <delete>, secret: {SECRET}}}}}")
    assert config.handshake.jwt.algorithms == ("HS256",)


def test_paths_are_relative_to_the_file_not_the_working_folder(
        folder: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    (folder / "site").mkdir()
    config = load(folder, "upstream: {url: null, root: site}\n"
                          "identity: {assertion: {private_key: keys/gateway.pem}}")
    assert config.upstream.root == folder / "site"
    assert config.identity.assertion.private_keys == (folder / "keys" / "gateway.pem",)


def test_a_served_folder_may_not_hold_the_config_or_the_signing_keys(folder: Path) -> None:
    (folder / "site").mkdir()
    found = problems(folder, "upstream: {url: null, root: .}\n"
                             "identity: {assertion: {private_key: keys/gateway.pem}}")
    assert [line for line in found if line.startswith("upstream.root")] == [
        f"upstream.root: serves the config file ({folder / 'gateway.yaml'}) to anyone who "
        "asks; keep it outside the folder",
        f"upstream.root: serves identity.assertion.private_keys[0] "
        f"({folder / 'keys' / 'gateway.pem'}) to anyone who asks; keep it outside the folder"]
    found = problems(folder, "upstream: {url: null, audiences: [{name: all, root: keys}]}\n"
                             "identity: {assertion: {private_key: keys/gateway.pem}}")
    assert any(line.startswith("upstream.audiences[0].root: serves identity.assertion")
               for line in found)
    # Beside the folder, not in it: fine.
    assert load(folder, "upstream: {url: null, root: site}\n"
                        "identity: {assertion: {private_key: keys/gateway.pem}}")


def test_assertion_keys_rotate_across_algorithms(folder: Path) -> None:
    config = load(folder, "identity: {assertion: {algorithm: ES256, "
                          "private_key: [keys/es256.pem, keys/gateway.pem]}}")
    assert config.identity.assertion.private_keys == (
        folder / "keys" / "es256.pem", folder / "keys" / "gateway.pem")
    assert config.warnings == ()


def test_rules(folder: Path) -> None:
    config = load(folder, "access: {rules: [{path: /admin/**, groups: [admin]}, "
                          "{path: /closed, groups: []}]}")
    assert config.access.rules == (Rule("/admin/**", ("admin",)), Rule("/closed", ()))


def test_warnings(folder: Path) -> None:
    (folder / "keys" / "gateway.pem").chmod(0o644)
    config = load(folder, "server: {public_url: 'http://docs.example.com'}\n"
                          "mode: personalize\n"
                          "handshake: {jwt: {accept_query_token: true}}\n"
                          "identity: {assertion: {private_key: keys/gateway.pem}}\n"
                          "access: {rules: [{path: /admin/**, groups: [admin]}]}")
    assert config.warnings == (
        "handshake.jwt.accept_query_token: tokens in query strings end up in access logs "
        "and Referer headers",
        "identity.assertion.private_key: file 'keys/gateway.pem' can be read by other users; "
        "chmod 600 it",
        "access.rules: personalize mode blocks nothing; these rules are ignored",
        "server.public_url: plain http: session cookies cross the network unencrypted; use https",
    )


def test_ephemeral_assertion_key_warns(folder: Path) -> None:
    assert load(folder).warnings == (
        "identity.assertion.private_key: not set; an ephemeral key is made at each start, "
        "so upstreams must refetch jwks.json after a restart",)
    assert load(folder, "identity: {assertion: {header: null}}").warnings == ()


def test_secrets_stay_out_of_repr(folder: Path) -> None:
    config = load(folder, "session: {redis_url: 'redis://:hunter2@cache:6379/0'}")
    assert SECRET not in repr(config) and "hunter2" not in repr(config)


def test_build_config_takes_parsed_data(folder: Path) -> None:
    config = build_config(merged(""), base=folder, env=ENV)
    assert config.handshake.jwt.public_keys == (folder / "keys" / "login.pub.pem",)
    with pytest.raises(ConfigError) as info:
        build_config(merged("mode: 1"), base=folder, env=ENV)
    assert info.value.problems == ["mode: must be one of authenticate, personalize, "
                                   "not the number 1"]


def test_default_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    assert default_config_path() == Path("gateway.yaml")
    monkeypatch.setenv("GATEWAY_CONFIG", "/etc/docs-gateway/gateway.yaml")
    assert default_config_path() == Path("/etc/docs-gateway/gateway.yaml")

