"""``session.redis_url``: one Redis server, a Sentinel-watched master, or a Redis Cluster,
told apart by the URL's scheme.

- ``redis://``, ``rediss://`` (TLS), ``unix://``: one server, as redis-py reads them.
- ``redis+sentinel://[user:password@]host:26379[,host2:26379...]/<master name>[/<db>]``
  (``rediss+sentinel://`` for TLS): the sentinels are asked where the master is, and asked
  again after a failover. The credentials are the master's; sentinels that need their own
  take ``?sentinel_username=...&sentinel_password=...``.
- ``redis+cluster://[user:password@]host:6379[,host2:6379...]`` (``rediss+cluster://``):
  any reachable nodes; the client learns the rest and follows the slots as they move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

SERVER_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = SERVER_SCHEMES + SENTINEL_SCHEMES + CLUSTER_SCHEMES
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_DEFAULT_PORT = {"sentinel": 26379, "cluster": 6379}


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message never repeats a password."""


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is and how to log in to it."""

    #: "server", "sentinel" or "cluster".
    kind: str
    #: The URL as written (for "server", handed to redis-py as it is).
    url: str = field(repr=False)
    #: The sentinels (sentinel) or the seed nodes (cluster).
    hosts: tuple[tuple[str, int], ...] = ()
    #: The master's name the sentinels watch.
    service: str = ""
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def redis_kind(url: str) -> str:
    """"server", "sentinel", "cluster", or "" for a scheme that is none of them."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in SENTINEL_SCHEMES:
        return "sentinel"
    if scheme in CLUSTER_SCHEMES:
        return "cluster"
    return "server" if scheme in SERVER_SCHEMES else ""


def _holds_secret(url: str) -> bool:
    """Whether ``url`` names a password anywhere: then no part of it is repeated in a
    message, as a password with a character it should have percent-encoded (``/``, ``?``,
    ``&``, ``:``) is read as part of a host, a path or an option."""
    return "@" in url or "password" in url.lower()


def _shown(text: str, url: str) -> str:
    """`` (text)`` for a message, or nothing when ``url`` names a password."""
    return "" if _holds_secret(url) else f" ({text})"


def _hosts(text: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise RedisUrlError(f"names a host without a name{_shown(repr(item), url)}"
                                if item else "has an empty host in its host list")
        if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise RedisUrlError("has a bad port" + (f" for {host}" if not _holds_secret(url)
                                                    else ""))
        hosts.append((host, int(port_text) if port_text else default_port))
    return tuple(hosts)


_AT_AFTER_HOST = ("has an @ after its host: percent-encode a /, ?, # or @ in the user name "
                  "or password (%2F, %3F, %23, %40)")


def _after_host(rest: str, kind: str) -> bool:
    """Whether an ``@`` sits past the host part (in the path, the query or the fragment):
    a user name or password cut short by a character it should have percent-encoded."""
    ends = [index for index in (rest.find(c) for c in "/?#") if index >= 0]
    tail = rest[min(ends):] if ends else ""
    if kind == "sentinel":
        # The sentinels' own password (?sentinel_password=...) may hold an @ as it is.
        before, mark, after = tail.partition("?")
        tail = before + (after.partition("#")[1] + after.partition("#")[2] if mark else "")
    return "@" in tail


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL; raises RedisUrlError saying what is wrong (never the password)."""
    kind = redis_kind(url)
    if not kind:
        raise RedisUrlError(f"must start with one of {', '.join(s + '://' for s in SCHEMES)}")
    scheme = url.partition("://")[0].lower()
    rest = url.partition("://")[2]
    if _after_host(rest, kind):
        # A user name or password with a character it should have percent-encoded: what
        # follows it would be read as the host, the port, the path (the database) or the
        # query, and a piece of the password repeated where those are shown.
        raise RedisUrlError(_AT_AFTER_HOST)
    if kind == "server":
        parts = urlsplit(url)
        if not (parts.netloc or (scheme == "unix" and parts.path)):
            raise RedisUrlError("names no server")
        if scheme != "unix":
            try:
                parts.port  # noqa: B018 - read to check it, as redis-py reads it
            except ValueError:
                raise RedisUrlError("has a bad port") from None
            if not parts.hostname:
                raise RedisUrlError("names no server")
            if parts.path.strip("/") and not parts.path.strip("/").isdigit():
                raise RedisUrlError("has a database that is not a number")
        return RedisTarget(kind, url, tls=scheme == "rediss")
    netloc, slash, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    userinfo, at, hostlist = netloc.rpartition("@")
    if not hostlist:
        raise RedisUrlError(f"names no {'sentinel' if kind == 'sentinel' else 'node'}")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    options = dict(parse_qsl(query, keep_blank_values=True))
    allowed = _SENTINEL_OPTIONS if kind == "sentinel" else ()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        named = "" if _holds_secret(url) else f": {', '.join(unknown)}"
        raise RedisUrlError(f"has options this gateway does not read{named}"
                            + (f" (it reads {', '.join(allowed)})" if allowed else ""))
    hosts = _hosts(hostlist, _DEFAULT_PORT[kind], url)
    segments = path.split("/") if slash and path else []
    db_text = "0"
    service = ""
    if kind == "sentinel":
        if not segments or not segments[0]:
            raise RedisUrlError("must name the master the sentinels watch: "
                                "redis+sentinel://host:26379/<master name>[/<db>]")
        service = unquote(segments[0])
        if len(segments) > 2:
            raise RedisUrlError("has a path longer than /<master name>/<db>")
        if len(segments) == 2 and segments[1]:
            db_text = segments[1]
    else:
        if len(segments) > 1 or (segments and segments[0] not in ("", "0")):
            raise RedisUrlError("must not name a database: a Redis Cluster has only db 0")
    if not db_text.isdigit():
        raise RedisUrlError(f"has a database that is not a number{_shown(repr(db_text), url)}")
    return RedisTarget(
        kind, url, hosts=hosts, service=service, db=int(db_text),
        tls=scheme.startswith("rediss"), username=username, password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None)
