"""The configuration: one frozen dataclass per section of ``gateway.yaml``.

Reading, interpolating and validating the file live in ``config.load``;
``load_config`` and ``build_config`` are importable from here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The header each known forward-auth proxy sets to the page it asks about, replacing any
#: copy the client sent. Any other target header reaches the gateway as the client wrote it.
FORWARD_AUTH_HEADERS = {"nginx": "X-Original-URI", "caddy": "X-Forwarded-Uri",
                        "traefik": "X-Forwarded-Uri"}


@dataclass(frozen=True)
class ServerConfig:
    """``server:`` where and how the gateway listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    workers: int = 1
    trusted_proxies: tuple[Network, ...] = ()
    prefix: str = "/_gateway"
    compat: tuple[str, ...] = ()
    admin_host: str | None = None
    admin_port: int | None = None
    #: Where ``/metrics`` is served: ``admin`` (the admin port; nowhere without one),
    #: ``public`` (also ``/_gateway/metrics`` on the docs port) or ``off``.
    metrics: str = "admin"
    login_rate_limit: int = 30
    max_concurrent: int = 1024
    #: The proxy that asks ``/auth`` (``nginx``, ``caddy``, ``traefik``) or the header it sets.
    forward_auth: str | None = None

    @property
    def forward_auth_header(self) -> str | None:
        """The one header ``/auth`` reads the page asked about from; None: forward auth off."""
        if self.forward_auth is None:
            return None
        return FORWARD_AUTH_HEADERS.get(self.forward_auth, self.forward_auth)

    # Read on every request: worked out once (the dataclass is frozen).
    @cached_property
    def public_origin(self) -> str:
        """``scheme://host[:port]`` of ``public_url``."""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @cached_property
    def base_path(self) -> str:
        """The path part of ``public_url`` without a trailing slash ("" at the root)."""
        return urlsplit(self.public_url).path.rstrip("/")

    @cached_property
    def public_host(self) -> str:
        """The host (and port, if any) visitors use."""
        return urlsplit(self.public_url).netloc

    @cached_property
    def https(self) -> bool:
        """Whether visitors reach the docs over https."""
        return urlsplit(self.public_url).scheme == "https"

    @cached_property
    def route_base(self) -> str:
        """Where the gateway's own routes live, base path included."""
        return self.base_path + self.prefix


@dataclass(frozen=True)
class Audience:
    """One entry of ``upstream.audiences``: a build of the docs for some readers."""

    name: str
    url: str | None = None
    root: Path | None = None
    #: The reader has any of these groups (empty: not asked).
    groups: tuple[str, ...] = ()
    #: Any logged-in reader.
    authenticated: bool = False

    @property
    def catch_all(self) -> bool:
        """Whether it takes every reader (the last entry)."""
        return not self.groups and not self.authenticated


@dataclass(frozen=True)
class UpstreamConfig:
    """``upstream:`` the docs host, a folder to serve, or one build per audience."""

    url: str | None = None
    root: Path | None = None
    #: First match wins; the last entry takes everyone else.
    audiences: tuple[Audience, ...] = ()
    timeout: float = 30.0
    connect_timeout: float = 5.0
    host_header: str = "upstream"
    max_connections: int = 100


@dataclass(frozen=True)
class LoginUrl:
    """One entry of ``handshake.jwt.login_urls``."""

    name: str
    url: str


@dataclass(frozen=True)
class JwtConfig:
    """``handshake.jwt``."""

    login_urls: tuple[LoginUrl, ...] = ()
    public_keys: tuple[Path, ...] = ()
    jwks_url: str | None = None
    secret: str | None = field(default=None, repr=False)
    algorithms: tuple[str, ...] = ("EdDSA", "ES256")
    issuer: str | None = None
    audience: str | None = None
    require_host: bool = True
    max_age: float = 300.0
    leeway: float = 30.0
    accept_query_token: bool = False
    #: Bind each login to the browser that started it: the token must carry its ``state``.
    bind_state: bool = False


@dataclass(frozen=True)
class SharedSessionConfig:
    """``handshake.shared_session``."""

    info_api_url: str | None = None
    cookies: tuple[str, ...] = ("session",)
    login_url: str | None = None
    logout_url: str | None = None
    cache_ttl: float = 30.0
    timeout: float = 5.0


@dataclass(frozen=True)
class GroupsFrom:
    """``handshake.oauth.groups_from``: where groups come from."""

    source: str = "id_token"
    claim: str = "groups"
    delimiter: str = ","


@dataclass(frozen=True)
class OAuthConfig:
    """``handshake.oauth``."""

    issuer: str | None = None
    authorization_url: str | None = None
    token_url: str | None = None
    info_api_url: str | None = None
    jwks_url: str | None = None
    client_id: str = "docs"
    client_secret: str | None = field(default=None, repr=False)
    token_auth: str = "client_secret_basic"
    scopes: tuple[str, ...] = ("openid", "email")
    extra_params: Mapping[str, str] = field(default_factory=dict)
    groups_from: GroupsFrom | None = None
    logout_url: str | None = None
    refresh: bool = True
    refresh_interval: float = 300.0
    timeout: float = 10.0


@dataclass(frozen=True)
class HandshakeConfig:
    """``handshake:`` which login handshake, and its settings."""

    method: str = "jwt"
    jwt: JwtConfig = field(default_factory=JwtConfig)
    shared_session: SharedSessionConfig = field(default_factory=SharedSessionConfig)
    oauth: OAuthConfig = field(default_factory=OAuthConfig)


@dataclass(frozen=True)
class UserConfig:
    """``user:`` how the subject is found in the user object."""

    subject: tuple[str, ...] = ("sub", "content.id", "content.email")


@dataclass(frozen=True)
class SessionConfig:
    """``session:`` where sessions live and how their cookie looks."""

    store: str = "cookie"
    secrets: tuple[str, ...] = field(default=(), repr=False)
    cookie_name: str = "docs_session"
    same_site: str = "lax"
    max_age: float = 14 * 86400.0
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    #: Seconds a worker keeps a session read from Redis, while Redis reports changes (0: off).
    redis_cache: float = 5.0


@dataclass(frozen=True)
class AssertionConfig:
    """``identity.assertion``: the signed JWT header sent upstream."""

    header: str | None = "X-Gateway-Assertion"
    private_keys: tuple[Path, ...] = ()
    algorithm: str = "EdDSA"
    ttl: float = 60.0
    audience: str | None = None
    claims: tuple[str, ...] = ("groups", "content")


#: The API playgrounds client.js knows how to fill.
PLAYGROUNDS = ("swagger-ui", "scalar")


@dataclass(frozen=True)
class IdentityConfig:
    """``identity:`` how the visitor is handed to the docs."""

    assertion: AssertionConfig = field(default_factory=AssertionConfig)
    headers: Mapping[str, str] = field(default_factory=dict)
    inject_script: bool = True
    expose: tuple[str, ...] = ("expiresAt", "groups", "content", "apiPlaygroundInputs")
    #: API playgrounds the client script fills from ``apiPlaygroundInputs`` (each only where
    #: its playground is on the page).
    playgrounds: tuple[str, ...] = PLAYGROUNDS


@dataclass(frozen=True)
class Rule:
    """One ``access.rules`` entry: a path glob and the groups that may open it."""

    path: str
    groups: tuple[str, ...]


#: Feeds as docs generators name them: mkdocs-rss-plugin (Material for MkDocs' blog),
#: Hugo (``index.xml`` in every section), Docusaurus' blog, Jekyll, Sphinx's ablog.
FEED_NAMES = ("feed_rss_*.xml", "feed_json_*.json", "index.xml", "rss.xml", "atom.xml",
              "feed.xml", "feed.json")


@dataclass(frozen=True)
class IndexNames:
    """``access.index_names``: the file names read as each kind of listing, anywhere in
    the site (globs on the last path segment, ``*`` and ``?``, compared without case)."""

    llms: tuple[str, ...] = ("llms.txt",)
    llms_full: tuple[str, ...] = ("llms-full.txt",)
    feeds: tuple[str, ...] = FEED_NAMES
    docusaurus: tuple[str, ...] = ("search-index*.json",)


@dataclass(frozen=True)
class AccessConfig:
    """``access:`` who may see what."""

    public: tuple[str, ...] = ("/favicon.ico", "/assets/**")
    rules: tuple[Rule, ...] = ()
    denied: str = "not_found"
    page_meta: bool = True
    fragments: bool = True
    indexes: bool = True
    index_names: IndexNames = field(default_factory=IndexNames)
    navigation: bool = True
    page_cache_mb: int = 32


@dataclass(frozen=True)
class LoggingConfig:
    """``logging:``."""

    level: str = "info"
    format: str = "json"


@dataclass(frozen=True)
class BrandColors:
    """``brand.colors``: hex colours of the gateway's own pages."""

    accent: str = "#0b57d0"
    text: str = "#1f1f1f"
    background: str = "#ffffff"


@dataclass(frozen=True)
class BrandConfig:
    """``brand:`` the site's name, logo and colours on the pages the gateway draws itself
    (login chooser, login callback, error pages), and a folder of templates replacing them."""

    name: str | None = None
    logo: str | None = None
    colors: BrandColors = field(default_factory=BrandColors)
    templates: Path | None = None
    #: The folder's templates as read (and checked) at load: name -> source.
    sources: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Config:
    """The whole file."""

    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    mode: str = "authenticate"
    handshake: HandshakeConfig = field(default_factory=HandshakeConfig)
    user: UserConfig = field(default_factory=UserConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    brand: BrandConfig = field(default_factory=BrandConfig)
    source: Path | None = None
    warnings: tuple[str, ...] = ()


MIN_SECRET_BYTES = 32
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"500ms"``, ``"30s"``, ``"15m"``, ``"12h"``, ``"14d"`` to seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use a number and a unit, like 30s, 15m, 12h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration: 1209600.0 -> ``"14d"``, 0.5 -> ``"500ms"``."""
    for unit in ("d", "h", "m", "s"):
        count = seconds / _UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{round(seconds * 1000, 3):g}ms"


def default_config_path() -> Path:
    """``$GATEWAY_CONFIG``, then ``./gateway.yaml``."""
    return Path(os.environ.get("GATEWAY_CONFIG") or "gateway.yaml")
