"""Reading ``gateway.yaml``: safe YAML, ``${VAR}`` interpolation, validation of every section.

Every problem is collected and reported at once, one ``key.path: message`` line each.
Import the results from ``gateway.config``; this module holds the machinery.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.brand import check_templates, contrast, is_hex_colour, read_templates
from gateway.config.handshake import handshake_section
from gateway.config.model import (
    FORWARD_AUTH_HEADERS,
    MIN_SECRET_BYTES,
    PLAYGROUNDS,
    AccessConfig,
    AssertionConfig,
    Audience,
    BrandColors,
    BrandConfig,
    Config,
    IdentityConfig,
    IndexNames,
    LoggingConfig,
    Rule,
    ServerConfig,
    SessionConfig,
    UpstreamConfig,
    UserConfig,
)
from gateway.config.reader import (
    MISSING,
    SIGNING_ALGS,
    TOKEN,
    USER_FIELDS,
    Problems,
    Section,
    check_private_key,
    check_url,
    cpu_count,
    did_you_mean,
    interpolate,
    kind_of,
    parse_yaml,
    resolve_path,
    split_host_port,
    to_int,
)
from gateway.config.redisurl import RedisUrlError, parse_redis_url
from gateway.errors import ConfigError


def _server(s: Section) -> ServerConfig:
    problems = s.problems
    listen = s.string("listen", "127.0.0.1:8080")
    host, port = split_host_port(listen, s.key("listen"), problems) or ("127.0.0.1", 8080)
    public_url = s.string("public_url", f"http://{listen}")
    check_url(public_url, s.key("public_url"), problems)
    if urlsplit(public_url).query or urlsplit(public_url).fragment:
        problems.add(s.key("public_url"), "must not have a query or a fragment")
    workers_raw = s.raw("workers")
    workers = 1
    if workers_raw == "auto":
        workers = cpu_count()
    elif workers_raw is not MISSING:
        try:
            workers = to_int(workers_raw, 1)
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
    admin_hp = split_host_port(admin, s.key("admin_listen"), problems) if admin else None
    if admin_hp and admin_hp[1] and admin_hp == (host, port):
        problems.add(s.key("admin_listen"), "must differ from server.listen")
    metrics = s.choice("metrics", "admin", ("admin", "public", "off"))
    login_rate_limit = s.integer("login_rate_limit", 30, minimum=0)
    max_concurrent = s.integer("max_concurrent", 1024, minimum=1)
    forward_auth = s.opt_string("forward_auth")
    if forward_auth is not None:
        _check_forward_auth(forward_auth, s.key("forward_auth"), bool(proxies), problems)
    s.finish()
    return ServerConfig(
        host=host, port=port, public_url=public_url.rstrip("/") or public_url,
        workers=workers, trusted_proxies=tuple(proxies), prefix=prefix, compat=compat,
        admin_host=admin_hp[0] if admin_hp else None, admin_port=admin_hp[1] if admin_hp else None,
        metrics=metrics, login_rate_limit=login_rate_limit, max_concurrent=max_concurrent,
        forward_auth=forward_auth,
    )


def _check_forward_auth(value: str, path: str, has_proxies: bool, problems: Problems) -> None:
    # A header name has a hyphen, so a misspelt proxy ("ngnix") is a problem, not a header.
    if value not in FORWARD_AUTH_HEADERS and not (TOKEN.match(value) and "-" in value):
        problems.add(path, "must be nginx, caddy, traefik or the name of the header your proxy "
                           f"sets to the page asked about (like X-Original-URI), not {value!r}"
                     + did_you_mean(value, tuple(FORWARD_AUTH_HEADERS)))
    elif not has_proxies:
        problems.add(path, "needs server.trusted_proxies: the page asked about is believed only "
                           "from the proxy's address")


def _origin(s: Section, base: Path) -> tuple[str | None, Path | None]:
    """``url`` (a docs server) or ``root`` (a built docs folder), exactly one."""
    problems = s.problems
    url = s.opt_string("url")
    root_text = s.opt_string("root")
    if url is not None and root_text is not None:
        problems.add(s.path, "set exactly one of url and root, not both")
    elif url is None and root_text is None:
        problems.add(s.path, "set one of url (a docs server) or root (a built docs folder)")
    check_url(url, s.key("url"), problems)
    root = None
    if root_text is not None:
        root = resolve_path(base, root_text)
        if not root.is_dir():
            problems.add(s.key("root"), f"folder {root_text!r} does not exist")
    return (url.rstrip("/") if url else None), root


def _audiences(s: Section, base: Path) -> tuple[Audience, ...]:
    raw = s.raw("audiences")
    if raw is MISSING or raw is None or raw == []:
        return ()
    if not isinstance(raw, list):
        s.problems.add(s.key("audiences"), "must be a list of {name, url or root, groups or "
                       f"authenticated}}, not {kind_of(raw)}")
        return ()
    audiences = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        a = Section(item, f"{s.key('audiences')}[{index}]", s.problems)
        name = a.string("name", "")
        if not a.present("name"):
            s.problems.add(a.key("name"), "is required (a short name, like admins)")
        elif not TOKEN.match(name):
            s.problems.add(a.key("name"), f"{name!r} is not a short name (letters, digits, -_)")
        elif name in names:
            s.problems.add(a.key("name"), f"{name!r} is already the name of another audience")
        names.add(name)
        url, root = _origin(a, base)
        audience = Audience(name=name, url=url, root=root, groups=a.strings("groups", ()),
                            authenticated=a.boolean("authenticated", False))
        if a.present("groups") and not audience.groups:
            s.problems.add(a.key("groups"), "must name at least one group")
        last = index == len(raw) - 1
        if last and not audience.catch_all:
            s.problems.add(a.path, "the last audience takes everyone else: give it no groups "
                           "and no authenticated")
        elif not last and audience.catch_all and not a.present("groups"):
            s.problems.add(a.path, "only the last audience may take everyone: give this one "
                           "groups or authenticated: true")
        a.finish()
        audiences.append(audience)
    return tuple(audiences)


def _upstream(s: Section, base: Path) -> UpstreamConfig:
    problems = s.problems
    audiences = _audiences(s, base)
    if audiences:
        if s.opt_string("url") is not None or s.opt_string("root") is not None:
            problems.add(s.path, "set exactly one of url, root and audiences")
        url, root = None, None
    else:
        url, root = _origin(s, base)
    config = UpstreamConfig(
        url=url,
        root=root,
        audiences=audiences,
        timeout=s.duration("timeout", 30.0),
        connect_timeout=s.duration("connect_timeout", 5.0),
        host_header=s.choice("host_header", "upstream", ("upstream", "preserve")),
        max_connections=s.integer("max_connections", 100, minimum=1),
    )
    s.finish()
    return config


def _session(s: Section) -> SessionConfig:
    problems = s.problems
    config = SessionConfig(
        store=s.choice("store", "cookie", ("cookie", "redis")),
        secrets=s.strings("secrets", (), secret=True),
        cookie_name=s.string("cookie_name", "docs_session"),
        same_site=s.choice("same_site", "lax", ("lax", "strict", "none")),
        max_age=s.duration("max_age", 14 * 86400.0),
        redis_url=s.string("redis_url", "redis://127.0.0.1:6379/0", secret=True),
        redis_cache=s.duration("redis_cache", 5.0, allow_zero=True),
    )
    if not config.secrets:
        problems.add(s.key("secrets"), "needs at least one secret of 32 bytes or more (make one: "
                     "python -c 'import secrets; print(secrets.token_urlsafe(48))')")
    for index, secret in enumerate(config.secrets):
        if len(secret.encode()) < MIN_SECRET_BYTES:
            problems.add(f"{s.key('secrets')}[{index}]",
                         f"is {len(secret.encode())} bytes; use at least {MIN_SECRET_BYTES}")
    if not TOKEN.match(config.cookie_name):
        problems.add(s.key("cookie_name"), f"{config.cookie_name!r} is not a cookie name")
    elif config.cookie_name.startswith("__"):
        problems.add(s.key("cookie_name"),
                     "must not start with __ (the __Host- prefix is added when it applies)")
    # The URL may hold a Redis password: never echo it (nor do the parser's messages).
    try:
        parse_redis_url(config.redis_url)
    except RedisUrlError as exc:
        problems.add(s.key("redis_url"), str(exc))
    s.finish()
    return config


def _assertion(a: Section, base: Path) -> AssertionConfig:
    problems = a.problems
    header_raw = a.raw("header")
    header: str | None = "X-Gateway-Assertion"
    if header_raw is None:
        header = None
    elif header_raw is not MISSING:
        if isinstance(header_raw, str) and TOKEN.match(header_raw):
            header = header_raw
        else:
            problems.add(a.key("header"),
                         f"must be a header name or null, not {kind_of(header_raw)}")
    algorithm = a.choice("algorithm", "EdDSA", SIGNING_ALGS)
    key_raw = a.raw("private_key")
    where = a.key("private_key")
    texts: list[tuple[str, str]] = []
    if isinstance(key_raw, str):
        texts = [(key_raw, where)]
    elif isinstance(key_raw, list) and key_raw and all(isinstance(k, str) for k in key_raw):
        texts = [(text, f"{where}[{index}]") for index, text in enumerate(key_raw)]
    elif key_raw is not MISSING and key_raw is not None:
        problems.add(where, f"must be a PEM file path or a list of them, not {kind_of(key_raw)}")
    # The first key signs; later ones are only published (rotation), whatever their algorithm.
    keys = tuple(check_private_key(text, base, path, algorithm if index == 0 else None, problems)
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


def _identity(s: Section, base: Path) -> IdentityConfig:
    problems = s.problems
    assertion = _assertion(s.section("assertion"), base)
    headers = s.string_map("headers")
    for name, field_path in headers.items():
        if not TOKEN.match(name):
            problems.add(f"{s.key('headers')}.{name}", "is not a header name")
        elif assertion.header and name.lower() == assertion.header.lower():
            problems.add(f"{s.key('headers')}.{name}", "is already the assertion header")
        if not field_path:
            problems.add(f"{s.key('headers')}.{name}", "needs a user field, like sub or groups")
    expose = s.strings("expose", USER_FIELDS)
    for index, name in enumerate(expose):
        if name not in USER_FIELDS:
            problems.add(f"{s.key('expose')}[{index}]",
                         f"unknown field {name!r}" + did_you_mean(name, USER_FIELDS))
    playgrounds = s.strings("playgrounds", PLAYGROUNDS)
    for index, name in enumerate(playgrounds):
        if name not in PLAYGROUNDS:
            problems.add(f"{s.key('playgrounds')}[{index}]",
                         f"unknown playground {name!r}" + (did_you_mean(name, PLAYGROUNDS)
                                                           or f"; known: {', '.join(PLAYGROUNDS)}"))
    config = IdentityConfig(assertion=assertion, headers=headers,
                            inject_script=s.boolean("inject_script", True), expose=expose,
                            playgrounds=tuple(dict.fromkeys(playgrounds)))
    s.finish()
    return config


def _rules(s: Section) -> tuple[Rule, ...]:
    raw = s.raw("rules")
    if raw is MISSING or raw is None:
        return ()
    if not isinstance(raw, list):
        s.problems.add(s.key("rules"), f"must be a list of {{path, groups}}, not {kind_of(raw)}")
        return ()
    rules = []
    for index, item in enumerate(raw):
        r = Section(item, f"{s.key('rules')}[{index}]", s.problems)
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


def _index_names(s: Section) -> IndexNames:
    """``access.index_names``: file-name globs per kind of listing; a name is one kind's."""
    default = IndexNames()
    names = IndexNames(llms=s.strings("llms", default.llms),
                       llms_full=s.strings("llms_full", default.llms_full),
                       feeds=s.strings("feeds", default.feeds),
                       docusaurus=s.strings("docusaurus", default.docusaurus))
    seen: dict[str, str] = {}
    for kind in ("llms", "llms_full", "feeds", "docusaurus"):
        for index, name in enumerate(getattr(names, kind)):
            where = f"{s.key(kind)}[{index}]"
            if not name or "/" in name:
                s.problems.add(where, f"must be a file name (no /), not {name!r}")
            elif name.lower() in seen and seen[name.lower()] != kind:
                s.problems.add(where, f"{name!r} is already in {s.key(seen[name.lower()])}")
            seen.setdefault(name.lower(), kind)
    s.finish()
    return names


def _access(s: Section) -> AccessConfig:
    public = s.strings("public", ("/favicon.ico", "/assets/**"))
    for index, pattern in enumerate(public):
        if not pattern.startswith("/"):
            s.problems.add(f"{s.key('public')}[{index}]", f"must start with /, not {pattern!r}")
    config = AccessConfig(
        public=public, rules=_rules(s),
        denied=s.choice("denied", "not_found", ("not_found", "forbidden")),
        page_meta=s.boolean("page_meta", True), fragments=s.boolean("fragments", True),
        indexes=s.boolean("indexes", True), navigation=s.boolean("navigation", True),
        index_names=_index_names(s.section("index_names")),
        page_cache_mb=s.integer("page_cache_mb", 32, minimum=0),
    )
    s.finish()
    return config


def _user(s: Section) -> UserConfig:
    config = UserConfig(subject=s.strings("subject", ("sub", "content.id", "content.email")))
    if not config.subject:
        s.problems.add(s.key("subject"), "needs at least one path")
    s.finish()
    return config


def _logging(s: Section) -> LoggingConfig:
    config = LoggingConfig(
        level=s.choice("level", "info", ("debug", "info", "warning", "error")),
        format=s.choice("format", "json", ("json", "text")),
    )
    s.finish()
    return config


_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")
#: Text on the background, and links (the accent) on it: WCAG AA asks for 4.5:1.
MIN_CONTRAST = 4.5


def _brand(s: Section, base: Path) -> BrandConfig:
    problems = s.problems
    logo = s.opt_string("logo")
    if logo is not None:
        parts = urlsplit(logo)
        if any(c.isspace() for c in logo) or (
                not (logo.startswith("/") and not logo.startswith("//"))
                and not (parts.scheme in ("http", "https") and _HOST.fullmatch(parts.netloc))):
            problems.add(s.key("logo"), "must be an image URL: a path on the docs site "
                         f"(/assets/logo.svg) or an absolute https URL, not {logo!r}")
    c = s.section("colors")
    default = BrandColors()
    colors = BrandColors(accent=c.string("accent", default.accent),
                         text=c.string("text", default.text),
                         background=c.string("background", default.background))
    bad = False
    for name in ("accent", "text", "background"):
        value = getattr(colors, name)
        if not is_hex_colour(value):
            bad = True
            problems.add(c.key(name), f"must be a hex colour like {getattr(default, name)}, "
                                      f"not {value!r}")
    c.finish()
    if not bad:
        for name in ("text", "accent"):
            ratio = contrast(getattr(colors, name), colors.background)
            if ratio < MIN_CONTRAST:
                problems.warn(c.key(name), f"{getattr(colors, name)} on the background "
                              f"{colors.background} has a contrast of {ratio:.1f}:1; "
                              f"readers need {MIN_CONTRAST}:1 (WCAG AA)")
    config = BrandConfig(name=s.opt_string("name"), logo=logo, colors=colors)
    folder_text = s.opt_string("templates")
    s.finish()
    if folder_text is None:
        return config
    folder = resolve_path(base, folder_text)
    where = s.key("templates")
    if not folder.is_dir():
        problems.add(where, f"folder {folder_text!r} does not exist")
        return config
    sources, unreadable = read_templates(folder)
    for problem in unreadable:
        problems.add(where, problem)
    if not sources and not unreadable:
        problems.warn(where, f"folder {folder_text!r} holds no .html templates; the default "
                             "pages are drawn")
    config = BrandConfig(name=config.name, logo=logo, colors=colors, templates=folder,
                         sources=tuple(sorted(sources.items())))
    for problem in check_templates(config):
        problems.add(where, problem)
    return config


def _cross_checks(config: Config, problems: Problems) -> None:
    """Rules that involve more than one section."""
    server, session = config.server, config.session
    shared = config.handshake.shared_session
    if (config.handshake.method == "shared_session" and config.mode == "authenticate"
            and not shared.login_url):
        problems.add("handshake.shared_session.login_url",
                     "is required in authenticate mode (where anonymous visitors are sent)")
    if server.forward_auth is not None and config.upstream.audiences:
        problems.warn("server.forward_auth",
                      "a proxy asking /_gateway/auth sends every reader to its one upstream: "
                      "with upstream.audiences, let the gateway serve the docs")
    if not server.https and session.same_site == "none":
        problems.add("session.same_site",
                     "none needs an https public_url (browsers drop SameSite=None without Secure)")
    if config.mode == "personalize" and config.access.rules:
        problems.warn("access.rules", "personalize mode blocks nothing; these rules are ignored")
    if server.workers > 1 and session.store == "cookie":
        problems.warn("session.store", f"cookie with {server.workers} workers (and the same "
                      "holds for several replicas): each process keeps its own record of used "
                      "login tokens, OAuth states and Info API answers, so a token replayed to "
                      "another process logs in again, and a logout cannot revoke a copied "
                      "cookie; use store: redis")
    _served_secrets(config, problems)
    for index, pattern in enumerate(config.access.public):
        _one_star(f"access.public[{index}]", pattern, "opens", problems)
    for index, rule in enumerate(config.access.rules):
        _one_star(f"access.rules[{index}].path", rule.path, "guards", problems)
    host = urlsplit(server.public_url).hostname or ""
    if not server.https and not _is_loopback(host):
        problems.warn("server.public_url", "plain http: session cookies cross the network "
                                           "unencrypted; use https")


def _served_secrets(config: Config, problems: Problems) -> None:
    """A folder the gateway serves must not hold its config or its signing keys: anyone
    could read them (and sign in as anyone with the keys)."""
    upstream = config.upstream
    roots = [("upstream.root", upstream.root)] + [
        (f"upstream.audiences[{index}].root", audience.root)
        for index, audience in enumerate(upstream.audiences)]
    kept = [("the config file", config.source)] + [
        (f"identity.assertion.private_keys[{index}]", path)
        for index, path in enumerate(config.identity.assertion.private_keys)]
    for where, root in roots:
        if root is None:
            continue
        for what, path in kept:
            if path is not None and path.resolve().is_relative_to(root.resolve()):
                problems.add(where, f"serves {what} ({path}) to anyone who asks; keep it "
                                    "outside the folder")


def _one_star(path: str, pattern: str, verb: str, problems: Problems) -> None:
    """A glob ending in ``/*`` stops at one level: most often ``/**`` was meant."""
    folder, _, last = pattern.rpartition("/")
    if last == "*":
        problems.warn(path, f"{pattern!r} {verb} one level only ({folder}/a, not {folder}/a/b "
                            f"or {folder or '/'} itself); {folder}/** covers the whole folder")


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
                           f"handshake:, ...), not {kind_of(data)}"])
    problems = Problems()
    base = base or Path.cwd()
    top = Section(interpolate(data, os.environ if env is None else env, problems), "", problems)
    server = _server(top.section("server"))
    upstream = _upstream(top.section("upstream"), base)
    mode = top.choice("mode", "authenticate", ("authenticate", "personalize"))
    handshake = handshake_section(top.section("handshake"), base)
    config = Config(
        server=server, upstream=upstream, mode=mode, handshake=handshake,
        user=_user(top.section("user")), session=_session(top.section("session")),
        identity=_identity(top.section("identity"), base), access=_access(top.section("access")),
        logging=_logging(top.section("logging")), brand=_brand(top.section("brand"), base),
        source=source,
    )
    top.finish()
    _cross_checks(config, problems)
    if problems.items:
        raise ConfigError(problems.items)
    return replace(config, warnings=tuple(problems.warnings))


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
        config = build_config(data, base=file.absolute().parent, env=env, source=file)
    except ConfigError as exc:
        raise ConfigError(duplicates + exc.problems) from None
    if duplicates:
        raise ConfigError(duplicates)
    return config
