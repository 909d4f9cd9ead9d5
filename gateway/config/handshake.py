"""Reading the ``handshake:`` section of ``gateway.yaml``: the method and its settings.

Every method's settings are read (unknown keys are errors wherever they are); only the
active method's are checked for completeness. Part of ``config.load``.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config.model import (
    MIN_SECRET_BYTES,
    GroupsFrom,
    HandshakeConfig,
    JwtConfig,
    LoginUrl,
    OAuthConfig,
    SharedSessionConfig,
)
from gateway.config.reader import (
    JWT_ALGS,
    MISSING,
    OAUTH_RESERVED,
    TOKEN,
    Section,
    check_public_key,
    check_url,
    did_you_mean,
    kind_of,
    resolve_path,
)


def handshake_section(hs: Section, base: Path) -> HandshakeConfig:
    """The handshake method and the settings of each method (``base``: where paths start)."""
    method = hs.choice("method", "jwt", ("jwt", "shared_session", "oauth"))
    handshake = HandshakeConfig(
        method=method,
        jwt=_jwt(hs.section("jwt"), base, method == "jwt"),
        shared_session=_shared(hs.section("shared_session"), method == "shared_session"),
        oauth=_oauth(hs.section("oauth"), method == "oauth"),
    )
    hs.finish()
    return handshake


def _login_urls(s: Section) -> tuple[LoginUrl, ...]:
    raw = s.raw("login_urls")
    if raw is MISSING or raw is None:
        return ()
    if not isinstance(raw, list):
        s.problems.add(s.key("login_urls"), f"must be a list of {{name, url}}, not {kind_of(raw)}")
        return ()
    out = []
    for index, item in enumerate(raw):
        entry = Section(item, f"{s.key('login_urls')}[{index}]", s.problems)
        url = entry.string("url", "")
        name = entry.string("name", "Log in")
        if not url:
            s.problems.add(entry.key("url"), "is required")
        check_url(url or None, entry.key("url"), s.problems)
        entry.finish()
        out.append(LoginUrl(name=name, url=url))
    return tuple(out)


def _jwt(s: Section, base: Path, active: bool) -> JwtConfig:
    problems = s.problems
    login_urls = _login_urls(s)
    key_texts = s.strings("public_keys", ())
    jwks_url = s.opt_string("jwks_url")
    check_url(jwks_url, s.key("jwks_url"), problems)
    secret = s.opt_string("secret", secret=True)
    # With a shared secret the only sensible default is HS256, not the asymmetric pair.
    algorithms = s.strings("algorithms", ("HS256",) if secret is not None else ("EdDSA", "ES256"))
    for index, alg in enumerate(algorithms):
        if alg.lower() == "none":
            problems.add(f"{s.key('algorithms')}[{index}]", '"none" is never accepted')
        elif alg not in JWT_ALGS:
            problems.add(f"{s.key('algorithms')}[{index}]",
                         f"unknown algorithm {alg!r}" + did_you_mean(alg, JWT_ALGS))
    if active:
        keys = tuple(check_public_key(text, base, f"{s.key('public_keys')}[{index}]",
                                       None if secret is not None else algorithms, problems)
                     for index, text in enumerate(key_texts))
    else:
        keys = tuple(resolve_path(base, text) for text in key_texts)
    config = JwtConfig(
        login_urls=login_urls, public_keys=keys, jwks_url=jwks_url, secret=secret,
        algorithms=algorithms, issuer=s.opt_string("issuer"), audience=s.opt_string("audience"),
        require_host=s.boolean("require_host", True), max_age=s.duration("max_age", 300.0),
        leeway=s.duration("leeway", 30.0, allow_zero=True),
        accept_query_token=s.boolean("accept_query_token", False),
        bind_state=s.boolean("bind_state", False),
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


def _shared(s: Section, active: bool) -> SharedSessionConfig:
    problems = s.problems
    config = SharedSessionConfig(
        info_api_url=s.opt_string("info_api_url"),
        cookies=s.strings("cookies", ("session",)),
        login_url=s.opt_string("login_url"),
        logout_url=s.opt_string("logout_url"),
        cache_ttl=s.duration("cache_ttl", 30.0, allow_zero=True),
        timeout=s.duration("timeout", 5.0),
    )
    check_url(config.info_api_url, s.key("info_api_url"), problems)
    check_url(config.login_url, s.key("login_url"), problems)
    check_url(config.logout_url, s.key("logout_url"), problems)
    for index, name in enumerate(config.cookies):
        if not TOKEN.match(name):
            problems.add(f"{s.key('cookies')}[{index}]", f"{name!r} is not a cookie name")
    s.finish()
    if active:
        if not config.info_api_url:
            problems.add(s.key("info_api_url"), "is required for the shared_session method")
        if not config.cookies:
            problems.add(s.key("cookies"), "needs at least one dashboard cookie name")
    return config


def _groups_from(s: Section) -> GroupsFrom | None:
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


def _oauth(s: Section, active: bool) -> OAuthConfig:
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
        check_url(getattr(config, name), s.key(name), problems)
    for name in config.extra_params:
        if name in OAUTH_RESERVED:
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
