"""Reading ``gateway.yaml``: safe YAML, ``${VAR}`` interpolation, validation of every section.

Every problem is collected and reported at once, one ``key.path: message`` line each.
Import the results from ``gateway.config``; this module holds the machinery.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from gateway import keys as keyfiles
from gateway.config import (
    MIN_SECRET_BYTES,
    AccessConfig,
    AssertionConfig,
    Config,
    GroupsFrom,
    HandshakeConfig,
    IdentityConfig,
    JwtConfig,
    LoggingConfig,
    LoginUrl,
    OAuthConfig,
    Rule,
    ServerConfig,
    SessionConfig,
    SharedSessionConfig,
    UpstreamConfig,
    UserConfig,
    parse_duration,
)
from gateway.errors import ConfigError

T = TypeVar("T")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # header and cookie names (RFC 9110 token)
_DIGITS = re.compile(r"^[0-9]+$")
_USER_FIELDS = ("expiresAt", "groups", "content", "apiPlaygroundInputs")
_SIGNING_ALGS = ("EdDSA", "ES256", "RS256")
_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256")
_JWT_ALGS = ("EdDSA", "ES256", "ES384", *_RSA_ALGS, "HS256", "HS384", "HS512")
_OAUTH_RESERVED = ("response_type", "client_id", "redirect_uri", "state", "code_challenge",
                   "code_challenge_method", "nonce", "scope")
_MISSING: Any = object()


class _Problems:
    """Problems (and warnings) found so far, in file order, one line each."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.warnings: list[str] = []
        self._muted: set[str] = set()

    def add(self, path: str, message: str) -> None:
        if path in self._muted:
            return
        line = f"{path}: {message}" if path else message
        if line not in self.items:
            self.items.append(line)

    def mute(self, path: str) -> None:
        """Report nothing more about a value already known to be broken at its source."""
        self._muted.add(path)

    def muted(self, path: str) -> bool:
        return path in self._muted

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")


def _kind(value: Any, reveal: bool = True) -> str:
    """How a wrong value reads in a message; ``reveal=False`` for secrets."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return (f"the boolean {str(value).lower()} "
                "(YAML reads on/off/yes/no as booleans; quote it)")
    if isinstance(value, int | float):
        return f"the number {value}" if reveal else "a number"
    if isinstance(value, str):
        return f"the string {value!r}" if reveal else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, datetime.date):
        return "a date (YAML reads 2024-01-31 as a date; quote it)"
    return type(value).__name__


def _hint(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """A "did you mean" for one clearly closest choice; none when two are as close."""
    scored = sorted(((difflib.SequenceMatcher(None, word, choice).ratio(), choice)
                     for choice in dict.fromkeys(choices)), reverse=True)
    if not scored or scored[0][0] < 0.6 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return ""
    return f"; did you mean {scored[0][1]!r}?"


def _to_str(value: Any, reveal: bool = True) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_kind(value, reveal)}")
    return value


class _Section:
    """Reads one mapping of the file, records problems, and notices unknown keys."""

    def __init__(self, data: Any, path: str, problems: _Problems) -> None:
        self.path = path
        self.problems = problems
        self.known: list[str] = []
        if data is None or data is _MISSING:
            data = {}
        if not isinstance(data, dict):
            problems.add(path, f"must be a mapping of keys, not {_kind(data)}")
            data = {}
        self.data: dict[Any, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def raw(self, name: str) -> Any:
        self.known.append(name)
        return self.data.get(name, _MISSING)

    def present(self, name: str) -> bool:
        return self.data.get(name) is not None

    def section(self, name: str) -> _Section:
        return _Section(self.raw(name), self.key(name), self.problems)

    def _get(self, name: str, default: T, convert: Callable[[Any, str], T]) -> T:
        value = self.raw(name)
        if value is _MISSING:
            return default
        try:
            return convert(value, self.key(name))
        except ValueError as exc:
            self.problems.add(self.key(name), str(exc))
            self.problems.mute(self.key(name))
            return default

    def string(self, name: str, default: str, *, secret: bool = False) -> str:
        return self._get(name, default, lambda v, _: _to_str(v, not secret))

    def opt_string(self, name: str, default: str | None = None, *,
                   secret: bool = False) -> str | None:
        return self._get(name, default, lambda v, _: None if v is None else _to_str(v, not secret))

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def convert(value: Any, path: str) -> str:
            if not isinstance(value, str):
                raise ValueError(f"must be one of {', '.join(choices)}, not {_kind(value)}")
            if value not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}"
                                 + _hint(value, choices))
            return value

        return self._get(name, default, convert)

    def boolean(self, name: str, default: bool) -> bool:
        def convert(value: Any, path: str) -> bool:
            # "${VAR:-true}" yields a string; accept the two spellings that cannot mislead.
            if value in ("true", "false"):
                return bool(value == "true")
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, not {_kind(value)}")
            return value

        return self._get(name, default, convert)

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        def convert(value: Any, path: str) -> int:
            return _to_int(value, minimum)

        return self._get(name, default, convert)

    def duration(self, name: str, default: float, *, allow_zero: bool = False) -> float:
        def convert(value: Any, path: str) -> float:
            if not isinstance(value, str):
                number = isinstance(value, int | float) and not isinstance(value, bool)
                raise ValueError(f"must be a duration like 30s or 15m, not {_kind(value)}"
                                 + (f' (write "{value}s" for seconds)' if number else ""))
            seconds = parse_duration(value)
            if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
                raise ValueError("must be longer than zero")
            return seconds

        return self._get(name, default, convert)

    def strings(self, name: str, default: tuple[str, ...], *,
                secret: bool = False) -> tuple[str, ...]:
        def convert(value: Any, path: str) -> tuple[str, ...]:
            if not isinstance(value, list):
                raise ValueError(f"must be a list of strings, not {_kind(value, not secret)}")
            out = []
            for index, item in enumerate(value):
                try:
                    out.append(_to_str(item, not secret))
                except ValueError as exc:
                    self.problems.add(f"{path}[{index}]", str(exc))
            return tuple(out)

        return self._get(name, default, convert)

    def string_map(self, name: str) -> dict[str, str]:
        def convert(value: Any, path: str) -> dict[str, str]:
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise ValueError(f"must be a mapping of strings, not {_kind(value)}")
            out = {}
            for key, item in value.items():
                try:
                    out[_to_str(key)] = _to_str(item)
                except ValueError as exc:
                    self.problems.add(f"{path}.{key}", str(exc))
            return out

        return self._get(name, {}, convert)

    def finish(self) -> None:
        """Report every key of this mapping that no reader asked for."""
        for name in self.data:
            if name in self.known:
                continue
            if isinstance(name, bool):
                self.problems.add(self.key(str(name).lower()), "unknown key (YAML reads "
                                  "on/off/yes/no as booleans; quote it)")
                continue
            if not isinstance(name, str):
                self.problems.add(self.key(str(name)), "unknown key (keys are words)")
                continue
            self.problems.add(self.key(name), "unknown key" + _hint(name, self.known))


def _to_int(value: Any, minimum: int) -> int:
    # A string of digits comes from "${VAR}"; it is exact, so take it.
    if isinstance(value, str) and _DIGITS.match(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number, not {_kind(value)}")
    if value < minimum:
        raise ValueError(f"must be at least {minimum}, not {value}")
    return value


def _interpolate(node: Any, env: Mapping[str, str], problems: _Problems, path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of parsed YAML."""
    if isinstance(node, dict):
        return {k: _interpolate(v, env, problems, f"{path}.{k}" if path else str(k))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, problems, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is not None and (value != "" or default is None):
            return value
        if default is not None:
            return default
        missing.append(name)
        return ""

    result = _VAR.sub(substitute, node)
    if "${" in _VAR.sub("", node):
        problems.add(path, "has a malformed ${...}; write ${NAME} or ${NAME:-default}")
        problems.mute(path)
    elif missing:
        problems.add(path, f"environment variable {', '.join(missing)} is not set")
        problems.mute(path)
    return result


def _split_host_port(text: str, path: str, problems: _Problems) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not _DIGITS.match(port) or not host.strip("[]"):
        problems.add(path, f"must be host:port, like 127.0.0.1:8080, not {text!r}")
        return None
    number = int(port)
    if number > 65535:
        problems.add(path, f"port {number} is out of range 0-65535")
        return None
    return host.strip("[]"), number


def _check_url(value: str | None, path: str, problems: _Problems,
               schemes: tuple[str, ...] = ("http", "https"), *, reveal: bool = True) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    where = parts.netloc or (parts.scheme == "unix" and parts.path)
    if parts.scheme not in schemes or not where:
        shown = f", not {value!r}" if reveal else ""
        names = f"{', '.join(schemes[:-1])} or {schemes[-1]}" if len(schemes) > 1 else schemes[0]
        problems.add(path, f"must be an absolute {names} URL{shown}")


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _key_problem(exc: keyfiles.KeyFileError, path: Path, text: str) -> str:
    message = str(exc)
    prefix = f"{path}: "
    return f"file {text!r}: {message.removeprefix(prefix)}"


def _check_public_key(text: str, base: Path, where: str, algorithms: tuple[str, ...] | None,
                      problems: _Problems) -> Path:
    path = _resolve(base, text)
    if not path.is_file():
        problems.add(where, f"file {text!r} does not exist")
        return path
    try:
        key = keyfiles.load_public_key(path)
    except keyfiles.KeyFileError as exc:
        problems.add(where, _key_problem(exc, path, text))
        return path
    alg = keyfiles.alg_of(key)
    usable = _RSA_ALGS if alg == "RS256" else (alg,)
    if algorithms is not None and not set(usable) & set(algorithms):
        problems.add(where, f"holds a key for {'/'.join(usable)}, which algorithms "
                            f"({', '.join(algorithms) or 'empty'}) does not allow")
    return path


def _check_private_key(text: str, base: Path, where: str, algorithm: str | None,
                       problems: _Problems) -> Path:
    path = _resolve(base, text)
    if not path.is_file():
        command = f"docs-gateway keys generate --alg {algorithm or 'EdDSA'} --out "
        problems.add(where, f"file {text!r} does not exist; create one with: "
                            f"{command}{text.removesuffix('.pem')}")
        return path
    try:
        key = keyfiles.load_private_key(path)
    except keyfiles.KeyFileError as exc:
        problems.add(where, _key_problem(exc, path, text))
        return path
    alg = keyfiles.alg_of(key)
    if algorithm is not None and alg != algorithm:
        problems.add(where, f"file {text!r} holds an {alg} key, but the algorithm is {algorithm}")
    if path.stat().st_mode & 0o077:
        problems.warn(where, f"file {text!r} can be read by other users; chmod 600 it")
    return path


def _cpu_count() -> int:
    # Honour a container's CPU set, which os.cpu_count() ignores.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _server(s: _Section) -> ServerConfig:
    problems = s.problems
    listen = s.string("listen", "127.0.0.1:8080")
    host, port = _split_host_port(listen, s.key("listen"), problems) or ("127.0.0.1", 8080)
    public_url = s.string("public_url", f"http://{listen}")
    _check_url(public_url, s.key("public_url"), problems)
    if urlsplit(public_url).query or urlsplit(public_url).fragment:
        problems.add(s.key("public_url"), "must not have a query or a fragment")
    workers_raw = s.raw("workers")
    workers = 1
    if workers_raw == "auto":
        workers = _cpu_count()
    elif workers_raw is not _MISSING:
        try:
            workers = _to_int(workers_raw, 1)
        except ValueError as exc:
            problems.add(s.key("workers"), f'{exc} (or "auto": one per CPU)')
    proxies = []
    for index, cidr in enumerate(s.strings("trusted_proxies", ())):
        try:
            proxies.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            problems.add(f"{s.key('trusted_proxies')}[{index}]",
                         f"{cidr!r} is not an IP address or CIDR")
    prefix = s.string("prefix", "/_gateway")
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", prefix):
        problems.add(s.key("prefix"),
                     f"must be a path like /_gateway (no trailing slash), not {prefix!r}")
    compat = s.strings("compat", ())
    for index, name in enumerate(compat):
        if name != "mintlify":
            problems.add(f"{s.key('compat')}[{index}]",
                         f"unknown compatibility {name!r}; known: mintlify")
    admin = s.opt_string("admin_listen")
    admin_hp = _split_host_port(admin, s.key("admin_listen"), problems) if admin else None
    if admin_hp and admin_hp[1] and admin_hp == (host, port):
        problems.add(s.key("admin_listen"), "must differ from server.listen")
    s.finish()
    return ServerConfig(
        host=host, port=port, public_url=public_url.rstrip("/") or public_url,
        workers=workers, trusted_proxies=tuple(proxies), prefix=prefix, compat=compat,
        admin_host=admin_hp[0] if admin_hp else None, admin_port=admin_hp[1] if admin_hp else None,
    )


def _upstream(s: _Section, base: Path) -> UpstreamConfig:
    problems = s.problems
    url = s.opt_string("url")
    root_text = s.opt_string("root")
    if url is not None and root_text is not None:
        problems.add(s.path, "set exactly one of url and root, not both")
    elif url is None and root_text is None:
        problems.add(s.path, "set one of url (a docs server) or root (a built docs folder)")
    _check_url(url, s.key("url"), problems)
    root = None
    if root_text is not None:
        root = _resolve(base, root_text)
        if not root.is_dir():
            problems.add(s.key("root"), f"folder {root_text!r} does not exist")
    config = UpstreamConfig(
        url=url.rstrip("/") if url else None,
        root=root,
        timeout=s.duration("timeout", 30.0),
        connect_timeout=s.duration("connect_timeout", 5.0),
        host_header=s.choice("host_header", "upstream", ("upstream", "preserve")),
        max_connections=s.integer("max_connections", 100, minimum=1),
    )
    s.finish()
    return config


def _login_urls(s: _Section) -> tuple[LoginUrl, ...]:
    raw = s.raw("login_urls")
    if raw is _MISSING or raw is None:
        return ()
    if not isinstance(raw, list):
        s.problems.add(s.key("login_urls"), f"must be a list of {{name, url}}, not {_kind(raw)}")
        return ()
    out = []
    for index, item in enumerate(raw):
        entry = _Section(item, f"{s.key('login_urls')}[{index}]", s.problems)
        url = entry.string("url", "")
        name = entry.string("name", "Log in")
        if not url:
            s.problems.add(entry.key("url"), "is required")
        _check_url(url or None, entry.key("url"), s.problems)
        entry.finish()
        out.append(LoginUrl(name=name, url=url))
    return tuple(out)


def _jwt(s: _Section, base: Path, active: bool) -> JwtConfig:
    problems = s.problems
    login_urls = _login_urls(s)
    key_texts = s.strings("public_keys", ())
    jwks_url = s.opt_string("jwks_url")
    _check_url(jwks_url, s.key("jwks_url"), problems)
    secret = s.opt_string("secret", secret=True)
    # With a shared secret the only sensible default is HS256, not the asymmetric pair.
    algorithms = s.strings("algorithms", ("HS256",) if secret is not None else ("EdDSA", "ES256"))
    for index, alg in enumerate(algorithms):
        if alg.lower() == "none":
            problems.add(f"{s.key('algorithms')}[{index}]", '"none" is never accepted')
        elif alg not in _JWT_ALGS:
            problems.add(f"{s.key('algorithms')}[{index}]",
                         f"unknown algorithm {alg!r}" + _hint(alg, _JWT_ALGS))
    if active:
        keys = tuple(_check_public_key(text, base, f"{s.key('public_keys')}[{index}]",
                                       None if secret is not None else algorithms, problems)
                     for index, text in enumerate(key_texts))
    else:
        keys = tuple(_resolve(base, text) for text in key_texts)
    config = JwtConfig(
        login_urls=login_urls, public_keys=keys, jwks_url=jwks_url, secret=secret,
        algorithms=algorithms, issuer=s.opt_string("issuer"), audience=s.opt_string("audience"),
        require_host=s.boolean("require_host", True), max_age=s.duration("max_age", 300.0),
        leeway=s.duration("leeway", 30.0, allow_zero=True),
        accept_query_token=s.boolean("accept_query_token", False),
    )
    s.finish()
    if not active:
        return config
    if secret is not None and (keys or jwks_url):
        problems.add(s.key("secret"), "excludes public_keys and jwks_url; use one kind of key")
    if secret is None and not keys and not jwks_url and not problems.muted(s.key("public_keys")):
        problems.add(s.path, "needs public_keys, jwks_url or secret to verify tokens")
    if secret is not None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            problems.add(s.key("secret"), f"must be at least {MIN_SECRET_BYTES} bytes")
        if any(not a.startswith("HS") for a in algorithms):
            problems.add(s.key("algorithms"), "with a secret, only HS256, HS384, HS512 apply")
    elif any(a.startswith("HS") for a in algorithms):
        problems.add(s.key("algorithms"), "HS algorithms need a secret, not public keys")
    if not login_urls:
        problems.add(s.key("login_urls"), "needs at least one {name, url} where visitors log in")
    if config.accept_query_token:
        problems.warn(s.key("accept_query_token"),
                      "tokens in query strings end up in access logs and Referer headers")
    return config


def _shared(s: _Section, active: bool) -> SharedSessionConfig:
    problems = s.problems
    config = SharedSessionConfig(
        info_api_url=s.opt_string("info_api_url"),
        cookies=s.strings("cookies", ("session",)),
        login_url=s.opt_string("login_url"),
        cache_ttl=s.duration("cache_ttl", 30.0, allow_zero=True),
        timeout=s.duration("timeout", 5.0),
    )
    _check_url(config.info_api_url, s.key("info_api_url"), problems)
    _check_url(config.login_url, s.key("login_url"), problems)
    for index, name in enumerate(config.cookies):
        if not _TOKEN.match(name):
            problems.add(f"{s.key('cookies')}[{index}]", f"{name!r} is not a cookie name")
    s.finish()
    if active:
        if not config.info_api_url:
            problems.add(s.key("info_api_url"), "is required for the shared_session method")
        if not config.cookies:
            problems.add(s.key("cookies"), "needs at least one dashboard cookie name")
    return config


def _groups_from(s: _Section) -> GroupsFrom | None:
    if not s.present("groups_from"):
        s.raw("groups_from")
        return None
    g = s.section("groups_from")
    groups_from = GroupsFrom(
        source=g.choice("source", "id_token", ("id_token", "access_token", "info_api")),
        claim=g.string("claim", "groups"),
        delimiter=g.string("delimiter", ","),
    )
    g.finish()
    return groups_from


def _oauth(s: _Section, active: bool) -> OAuthConfig:
    problems = s.problems
    config = OAuthConfig(
        issuer=s.opt_string("issuer"),
        authorization_url=s.opt_string("authorization_url"),
        token_url=s.opt_string("token_url"),
        info_api_url=s.opt_string("info_api_url"),
        jwks_url=s.opt_string("jwks_url"),
        client_id=s.string("client_id", "docs"),
        client_secret=s.opt_string("client_secret", secret=True),
        token_auth=s.choice("token_auth", "client_secret_basic",
                            ("client_secret_basic", "client_secret_post")),
        scopes=s.strings("scopes", ("openid", "email")),
        extra_params=s.string_map("extra_params"),
        groups_from=_groups_from(s),
        logout_url=s.opt_string("logout_url"),
        refresh=s.boolean("refresh", True),
        refresh_interval=s.duration("refresh_interval", 300.0),
        timeout=s.duration("timeout", 10.0),
    )
    for name in ("issuer", "authorization_url", "token_url", "info_api_url", "jwks_url",
                 "logout_url"):
        _check_url(getattr(config, name), s.key(name), problems)
    for name in config.extra_params:
        if name in _OAUTH_RESERVED:
            problems.add(f"{s.key('extra_params')}.{name}",
                         "is set by the gateway and cannot be overridden")
    s.finish()
    if active:
        if not config.issuer and not (config.authorization_url and config.token_url):
            problems.add(s.path,
                         "needs issuer (OIDC discovery) or both authorization_url and token_url")
        if not config.client_id:
            problems.add(s.key("client_id"), "is required")
        if not config.info_api_url and config.groups_from is None and "openid" not in config.scopes:
            problems.add(s.key("info_api_url"),
                         "is required unless the openid scope or groups_from gives the user")
    return config


def _session(s: _Section) -> SessionConfig:
    problems = s.problems
    config = SessionConfig(
        store=s.choice("store", "cookie", ("cookie", "redis")),
        secrets=s.strings("secrets", (), secret=True),
        cookie_name=s.string("cookie_name", "docs_session"),
        same_site=s.choice("same_site", "lax", ("lax", "strict", "none")),
        max_age=s.duration("max_age", 14 * 86400.0),
        redis_url=s.string("redis_url", "redis://127.0.0.1:6379/0", secret=True),
    )
    if not config.secrets:
        problems.add(s.key("secrets"), "needs at least one secret of 32 bytes or more (make one: "
                     "python -c 'import secrets; print(secrets.token_urlsafe(48))')")
    for index, secret in enumerate(config.secrets):
        if len(secret.encode()) < MIN_SECRET_BYTES:
            problems.add(f"{s.key('secrets')}[{index}]",
                         f"is {len(secret.encode())} bytes; use at least {MIN_SECRET_BYTES}")
    if not _TOKEN.match(config.cookie_name):
        problems.add(s.key("cookie_name"), f"{config.cookie_name!r} is not a cookie name")
    elif config.cookie_name.startswith("__"):
        problems.add(s.key("cookie_name"),
                     "must not start with __ (the __Host- prefix is added when it applies)")
    # The URL may hold a Redis password: never echo it.
    _check_url(config.redis_url, s.key("redis_url"), problems, ("redis", "rediss", "unix"),
               reveal=False)
    s.finish()
    return config


def _assertion(a: _Section, base: Path) -> AssertionConfig:
    problems = a.problems
    header_raw = a.raw("header")
    header: str | None = "X-Gateway-Assertion"
    if header_raw is None:
        header = None
    elif header_raw is not _MISSING:
        if isinstance(header_raw, str) and _TOKEN.match(header_raw):
            header = header_raw
        else:
            problems.add(a.key("header"), f"must be a header name or null, not {_kind(header_raw)}")
    algorithm = a.choice("algorithm", "EdDSA", _SIGNING_ALGS)
    key_raw = a.raw("private_key")
    where = a.key("private_key")
    texts: list[tuple[str, str]] = []
    if isinstance(key_raw, str):
        texts = [(key_raw, where)]
    elif isinstance(key_raw, list) and key_raw and all(isinstance(k, str) for k in key_raw):
        texts = [(text, f"{where}[{index}]") for index, text in enumerate(key_raw)]
    elif key_raw is not _MISSING and key_raw is not None:
        problems.add(where, f"must be a PEM file path or a list of them, not {_kind(key_raw)}")
    # The first key signs; later ones are only published (rotation), whatever their algorithm.
    keys = tuple(_check_private_key(text, base, path, algorithm if index == 0 else None, problems)
                 for index, (text, path) in enumerate(texts))
    config = AssertionConfig(
        header=header, private_keys=keys, algorithm=algorithm, ttl=a.duration("ttl", 60.0),
        audience=a.opt_string("audience"), claims=a.strings("claims", ("groups", "content")),
    )
    a.finish()
    if header and not keys:
        problems.warn(where, "not set; an ephemeral key is made at each start, so upstreams "
                             "must refetch jwks.json after a restart")
    return config


def _identity(s: _Section, base: Path) -> IdentityConfig:
    problems = s.problems
    assertion = _assertion(s.section("assertion"), base)
    headers = s.string_map("headers")
    for name, field_path in headers.items():
        if not _TOKEN.match(name):
            problems.add(f"{s.key('headers')}.{name}", "is not a header name")
        elif assertion.header and name.lower() == assertion.header.lower():
            problems.add(f"{s.key('headers')}.{name}", "is already the assertion header")
        if not field_path:
            problems.add(f"{s.key('headers')}.{name}", "needs a user field, like sub or groups")
    expose = s.strings("expose", _USER_FIELDS)
    for index, name in enumerate(expose):
        if name not in _USER_FIELDS:
            problems.add(f"{s.key('expose')}[{index}]",
                         f"unknown field {name!r}" + _hint(name, _USER_FIELDS))
    config = IdentityConfig(assertion=assertion, headers=headers,
                            inject_script=s.boolean("inject_script", True), expose=expose)
    s.finish()
    return config


def _rules(s: _Section) -> tuple[Rule, ...]:
    raw = s.raw("rules")
    if raw is _MISSING or raw is None:
        return ()
    if not isinstance(raw, list):
        s.problems.add(s.key("rules"), f"must be a list of {{path, groups}}, not {_kind(raw)}")
        return ()
    rules = []
    for index, item in enumerate(raw):
        r = _Section(item, f"{s.key('rules')}[{index}]", s.problems)
        path = r.string("path", "")
        if not r.present("path"):
            s.problems.add(r.key("path"), "is required (a path glob like /admin/**)")
        elif not path.startswith("/"):
            s.problems.add(r.key("path"), f"must be a path glob starting with /, not {path!r}")
        if not r.present("groups"):
            s.problems.add(r.key("groups"), "is required (a list of groups; [] admits nobody)")
        groups = r.strings("groups", ())
        r.finish()
        rules.append(Rule(path=path, groups=groups))
    return tuple(rules)


def _access(s: _Section) -> AccessConfig:
    public = s.strings("public", ("/favicon.ico", "/assets/**"))
    for index, pattern in enumerate(public):
        if not pattern.startswith("/"):
            s.problems.add(f"{s.key('public')}[{index}]", f"must start with /, not {pattern!r}")
    config = AccessConfig(
        public=public, rules=_rules(s),
        denied=s.choice("denied", "not_found", ("not_found", "forbidden")),
        page_meta=s.boolean("page_meta", True), fragments=s.boolean("fragments", True),
        indexes=s.boolean("indexes", True),
    )
    s.finish()
    return config


def _user(s: _Section) -> UserConfig:
    config = UserConfig(subject=s.strings("subject", ("sub", "content.id", "content.email")))
    if not config.subject:
        s.problems.add(s.key("subject"), "needs at least one path")
    s.finish()
    return config


def _logging(s: _Section) -> LoggingConfig:
    config = LoggingConfig(
        level=s.choice("level", "info", ("debug", "info", "warning", "error")),
        format=s.choice("format", "json", ("json", "text")),
    )
    s.finish()
    return config


def _cross_checks(config: Config, problems: _Problems) -> None:
    """Rules that involve more than one section."""
    server, session = config.server, config.session
    shared = config.handshake.shared_session
    if (config.handshake.method == "shared_session" and config.mode == "authenticate"
            and not shared.login_url):
        problems.add("handshake.shared_session.login_url",
                     "is required in authenticate mode (where anonymous visitors are sent)")
    if not server.https and session.same_site == "none":
        problems.add("session.same_site",
                     "none needs an https public_url (browsers drop SameSite=None without Secure)")
    if config.mode == "personalize" and config.access.rules:
        problems.warn("access.rules", "personalize mode blocks nothing; these rules are ignored")
    host = urlsplit(server.public_url).hostname or ""
    if not server.https and not _is_loopback(host):
        problems.warn("server.public_url", "plain http: session cookies cross the network "
                                           "unencrypted; use https")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_config(data: Any, *, base: Path | None = None, env: Mapping[str, str] | None = None,
                 source: Path | None = None) -> Config:
    """Validate parsed YAML data into a Config, or raise ConfigError with every problem."""
    if not isinstance(data, dict):
        raise ConfigError(["the file must be a mapping of sections (server:, upstream:, "
                           f"handshake:, ...), not {_kind(data)}"])
    problems = _Problems()
    base = base or Path.cwd()
    top = _Section(_interpolate(data, os.environ if env is None else env, problems), "", problems)
    server = _server(top.section("server"))
    upstream = _upstream(top.section("upstream"), base)
    mode = top.choice("mode", "authenticate", ("authenticate", "personalize"))
    hs = top.section("handshake")
    method = hs.choice("method", "jwt", ("jwt", "shared_session", "oauth"))
    handshake = HandshakeConfig(
        method=method,
        jwt=_jwt(hs.section("jwt"), base, method == "jwt"),
        shared_session=_shared(hs.section("shared_session"), method == "shared_session"),
        oauth=_oauth(hs.section("oauth"), method == "oauth"),
    )
    hs.finish()
    config = Config(
        server=server, upstream=upstream, mode=mode, handshake=handshake,
        user=_user(top.section("user")), session=_session(top.section("session")),
        identity=_identity(top.section("identity"), base), access=_access(top.section("access")),
        logging=_logging(top.section("logging")), source=source,
    )
    top.finish()
    _cross_checks(config, problems)
    if problems.items:
        raise ConfigError(problems.items)
    return replace(config, warnings=tuple(problems.warnings))


def _duplicate_keys(node: yaml.Node, path: str, out: list[str]) -> None:
    """Keys given twice in one mapping: YAML keeps the last silently; we refuse."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            child = f"{path}.{name}" if path else name
            line = key_node.start_mark.line + 1
            if name in seen and name != "<<":
                out.append(f"{child}: is given twice (lines {seen[name]} and {line}); keep one")
            seen.setdefault(name, line)
            _duplicate_keys(value_node, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{index}]", out)


def parse_yaml(text: str, file: Path) -> tuple[Any, list[str]]:
    """Parsed data (plain YAML only: no tags that build objects) and duplicate-key problems."""
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ConfigError([f"{file}:{where} {exc.problem or exc.context or 'invalid YAML'}"]) \
            from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}: invalid YAML ({exc})"]) from None
    duplicates: list[str] = []
    if tree is not None:
        _duplicate_keys(tree, "", duplicates)
    return data, duplicates


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a YAML file; raise ConfigError listing every problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{file}: file not found (give one with -c FILE or $GATEWAY_CONFIG)"]) \
            from None
    except IsADirectoryError:
        raise ConfigError([f"{file}: is a folder, not a YAML file"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{file}: is not UTF-8 text"]) from None
    except OSError as exc:
        raise ConfigError([f"{file}: cannot be read ({exc.strerror or type(exc).__name__})"]) \
            from None
    data, duplicates = parse_yaml(text, file)
    if data is None:
        raise ConfigError([f"{file}: the file is empty"])
    try:
        config = build_config(data, base=file.resolve().parent, env=env, source=file)
    except ConfigError as exc:
        raise ConfigError(duplicates + exc.problems) from None
    if duplicates:
        raise ConfigError(duplicates)
    return config
