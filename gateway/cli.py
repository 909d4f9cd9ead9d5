"""The ``docs-gateway`` command line: run, check, init, keys, token, demo, audit."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config.load import load_config
from gateway.config.model import (
    Config,
    default_config_path,
    format_duration,
    parse_duration,
)
from gateway.errors import ConfigError
from gateway.handshakes.shared_session import domain_warning

PROG = "docs-gateway"
KEY_ALGORITHMS = ("EdDSA", "ES256", "RS256")
Handler = Callable[[argparse.Namespace], int]


# Options whose values are opaque tokens that may begin with "-" (a base64url state, an
# audit's marker text).
_TOKEN_OPTIONS = ("--state", "--marker")


def _joined_values(argv: list[str]) -> list[str]:
    """``--state -x`` as ``--state=-x``: argparse would read the value as an option."""
    out: list[str] = []
    pending = False
    for word in argv:
        if pending and word.startswith("-") and word != "--":
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
        pending = word in _TOKEN_OPTIONS
    return out


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(_joined_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        (args.usage or parser).print_usage(sys.stderr)
        return 2
    try:
        status = handler(args)
        sys.stdout.flush()  # a reader that left (``| head``) is found here, not at exit
        return status
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        _print_problems(exc)
        return 2
    except CommandError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.verbose:
            raise
        print(f"{PROG}: error: {describe(exc)}", file=sys.stderr)
        return 1


def _quiet_stdout() -> None:
    """Standard output's reader is gone: nothing more goes there, not even at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _version() -> str:
    try:
        return metadata.version("docs-gateway")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``--verbose`` is accepted before or after the command."""
    # SUPPRESS keeps a subcommand from resetting a --verbose given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="An auth gateway in front of any docs site.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.set_defaults(verbose=False, usage=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, help_text: str, handler: Handler | None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        if handler is not None:
            sub.set_defaults(handler=handler)
        return sub

    config_help = "configuration file (default: $GATEWAY_CONFIG, then ./gateway.yaml)"
    run = command("run", "serve the docs behind the gateway", run_command)
    run.add_argument("-c", "--config", type=Path, metavar="FILE", help=config_help)
    check = command("check", "validate a configuration file and summarize it", check_command)
    check.add_argument("-c", "--config", type=Path, metavar="FILE", help=config_help)
    check.add_argument("--online", action="store_true",
                       help="also ask the upstream, Redis, the identity provider's discovery "
                            f"and keys, and the Info API whether they answer ({PROBE_TIMEOUT:g}s "
                            "each); exit 1 when one does not")

    keys = command("keys", "manage signing keys", None)
    keys.set_defaults(usage=keys)
    key_commands = keys.add_subparsers(title="commands", metavar="COMMAND")
    generate = key_commands.add_parser(
        "generate", parents=[common], help="write a new key pair",
        description="Write PREFIX.pem (PKCS#8 private key, mode 0600) and PREFIX.pub.pem.")
    generate.set_defaults(handler=keys_generate_command)
    generate.add_argument("--alg", required=True, choices=KEY_ALGORITHMS,
                          help="EdDSA (Ed25519), ES256 (P-256) or RS256 (RSA 2048)")
    generate.add_argument("--out", required=True, metavar="PREFIX",
                          help="path without extension, like keys/gateway")
    generate.add_argument("--force", action="store_true", help="replace existing files")

    token = command("token", "print a signed handshake JWT, for testing a jwt setup",
                    _lazy("token", "gateway.handshakes.jwt_token"))
    token.add_argument("--key", required=True, metavar="PEM", help="private key to sign with")
    token.add_argument("--sub", metavar="S", help="subject of the token")
    token.add_argument("--host", metavar="H", help="the docs host (claim host)")
    token.add_argument("--groups", type=_groups, default=[], metavar="a,b",
                       help="comma-separated groups")
    token.add_argument("--content", type=_json_object, default={}, metavar="JSON",
                       help='content object, like \'{"name": "Ada"}\'')
    token.add_argument("--ttl", type=_duration, default=10.0, metavar="10s",
                       help="lifetime of the token (default: 10s)")
    token.add_argument("--state", metavar="S",
                       help="the state claim (handshake.jwt.bind_state), from the login URL")

    init = command("init", "set up a gateway for the docs project in a folder: write "
                   "gateway.yaml and keys, print the next steps", _lazy("init", "gateway.init"))
    init.add_argument("--dir", default=".", metavar="DIR",
                      help="the docs project (default: the current folder)")
    init.add_argument("--method", choices=("jwt", "shared_session", "oauth"), default="jwt",
                      help="how readers log in: jwt (default), shared_session or oauth")
    init.add_argument("--generator", choices=("mkdocs", "docusaurus", "sphinx", "hugo"),
                      help="which project, when the folder holds more than one")
    init.add_argument("--keys", default="gateway-keys", metavar="FOLDER",
                      help="where the keys go, inside the project (default: gateway-keys)")
    init.add_argument("--force", action="store_true", help="replace an existing gateway.yaml")

    demo = command("demo", "run a sample docs site, a demo login and the gateway on 127.0.0.1",
                   _lazy("demo", "gateway.demo"))
    demo.add_argument("--port", type=int, default=8080, help="port of the gateway (default: 8080)")
    demo.add_argument("--method", choices=("jwt", "shared_session", "oauth"), default="jwt",
                      help="how readers log in: jwt (default), shared_session or oauth")

    audit = command("audit", "read the running site as several readers and report text a "
                    "reader receives from pages closed to it", _lazy("audit", "gateway.audit"))
    audit.add_argument("-c", "--config", type=Path, metavar="FILE", help=config_help)
    audit.add_argument("--as", dest="readers", action="append", required=True,
                       metavar="NAME[:GROUP,...]",
                       help="a reader, once per reader: NAME alone is anonymous, NAME: is "
                            "logged in without groups, NAME:a,b logged in with groups a and b")
    audit.add_argument("--key", metavar="PEM",
                       help="private key that signs the readers' login tokens (jwt; default: "
                            "handshake.jwt.secret when set)")
    audit.add_argument("--cookie", action="append", default=[], metavar="NAME=COOKIE-HEADER",
                       help="the Cookie header reader NAME sends instead of logging in")
    audit.add_argument("--marker", action="append", default=[], metavar="TEXT",
                       help="text no reader may receive outside the pages it may open")
    audit.add_argument("--max-pages", type=_positive, default=500, metavar="N",
                       help="addresses read per reader at most (default: 500)")
    audit.add_argument("--url", metavar="URL",
                       help="send the requests to this origin instead of server.public_url's")
    return parser


def check_command(args: argparse.Namespace) -> int:
    """Validate the file; print a summary (exit 0) or one line per problem (exit 2). With
    ``--online``, one line per dependency asked, and exit 1 when one does not answer."""
    path = args.config or default_config_path()
    config = load_config(path)
    print(summary(config, path))
    if not args.online:
        return 0
    sys.stdout.flush()
    results = asyncio.run(probe_all(config))
    print("online:")
    width = max(len(result.what) for result in results)
    for result in results:
        print(f"  {'ok' if result.ok else 'FAILED':6}  {result.what.ljust(width)}  "
              f"{result.where}: {result.detail}", flush=True)
    return 0 if all(result.ok for result in results) else 1


#: Seconds each ``check --online`` probe may take.
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Probe:
    """What one ``check --online`` probe found."""

    what: str
    where: str
    ok: bool
    detail: str


async def probe_all(config: Config, timeout: float = PROBE_TIMEOUT) -> list[Probe]:
    """Ask every dependency the config names whether it answers, all at once, each within
    ``timeout``: the upstream (any HTTP answer), Redis (PING), the identity provider's
    discovery document and key set (valid ones), the Info API (an answer below 500: without
    a reader's session it refuses, which is an answer)."""
    import aiohttp

    server, hs = config.server, config.handshake
    limit = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=limit, cookie_jar=aiohttp.DummyCookieJar()) as http:
        probes: list[Awaitable[Probe]] = []
        audiences = config.upstream.audiences
        origins = [(f"upstream {a.name}", a.url, a.root) for a in audiences] if audiences \
            else [("upstream", config.upstream.url, config.upstream.root)]
        for what, url, root in origins:
            if url is not None:
                probes.append(_probe_http(http, what, url.rstrip("/") + server.base_path + "/",
                                          timeout, lambda status, body: status < 600))
            elif root is not None:
                probes.append(_probe_folder(what, root))
        if config.session.store == "redis":
            probes.append(_probe_redis(config.session.redis_url, timeout))
        oauth = hs.oauth if hs.method == "oauth" else None
        if oauth is not None and oauth.issuer:
            issuer = oauth.issuer
            probes.append(_probe_http(
                http, "discovery", issuer.rstrip("/") + "/.well-known/openid-configuration",
                timeout, lambda status, body: _discovery_problem(status, body, issuer)))
        jwks_url = oauth.jwks_url if oauth is not None else \
            hs.jwt.jwks_url if hs.method == "jwt" else None
        if jwks_url:
            probes.append(_probe_http(http, "key set", jwks_url, timeout, _key_set_problem))
        info_api = oauth.info_api_url if oauth is not None else \
            hs.shared_session.info_api_url if hs.method == "shared_session" else None
        if info_api:
            probes.append(_probe_http(http, "Info API", info_api, timeout,
                                      lambda status, body: status < 500))
        return list(await asyncio.gather(*probes))


# A check of an answer: True (fine), False (a bad status), or a sentence saying what is wrong.
Judge = Callable[[int, bytes], "bool | str"]


async def _probe_http(http: Any, what: str, url: str, timeout: float, judge: Judge) -> Probe:
    import aiohttp

    where = _shown_url(url)
    try:
        async with http.get(url, allow_redirects=False) as response:
            body = await response.content.read(1024 * 1024)
            status = response.status
    except TimeoutError:
        return Probe(what, where, False, f"no answer within {timeout:g}s")
    except aiohttp.ClientConnectorError as exc:
        error = exc.os_error
        reason = os.strerror(error.errno) if error.errno else describe(error)
        return Probe(what, where, False, f"cannot connect ({reason})")
    except aiohttp.ClientError as exc:
        return Probe(what, where, False, f"{type(exc).__name__}: {describe(exc)}")
    verdict = judge(status, body)
    if verdict is True:
        return Probe(what, where, True, f"answers (HTTP {status})")
    problem = verdict if isinstance(verdict, str) else "an error"
    return Probe(what, where, False, f"HTTP {status}: {problem}")


def _discovery_problem(status: int, body: bytes, issuer: str) -> bool | str:
    from gateway.handshakes.oauth_flow import discovery_document

    try:
        discovery_document(status, body, issuer)
    except ValueError:
        return f"not a discovery document for {issuer}"
    return True


def _key_set_problem(status: int, body: bytes) -> bool | str:
    if status != 200:
        return False
    try:
        keys = json.loads(body).get("keys")
    except (ValueError, AttributeError):
        return "not a JSON key set"
    return True if isinstance(keys, list) and keys else "no keys in it"


async def _probe_folder(what: str, root: Path) -> Probe:
    found = root.is_dir()
    return Probe(what, f"folder {root}", found, "exists" if found else "is not a folder")


async def _probe_redis(url: str, timeout: float) -> Probe:
    from redis.exceptions import RedisError

    from gateway.shared import RedisKeyspace, redis_where

    where = f"redis {redis_where(url)}"
    try:
        keyspace = RedisKeyspace(url, timeout)
    except (RedisError, OSError, ValueError) as exc:
        return Probe("Redis", where, False, f"cannot be used ({type(exc).__name__})")
    try:
        answered = await asyncio.wait_for(keyspace.redis.ping(), timeout)
    except (TimeoutError, RedisError, OSError) as exc:
        # The exception text can carry the URL (and its password): the kind only.
        return Probe("Redis", where, False, f"cannot be reached ({type(exc).__name__})")
    finally:
        await keyspace.close()
    return Probe("Redis", where, bool(answered), "answers PING")


def _shown_url(url: str) -> str:
    """A URL without its user name, password and query (which may hold a key)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def run_command(args: argparse.Namespace) -> int:
    """Load the file and serve until interrupted."""
    config = load_config(args.config or default_config_path())
    try:
        server = importlib.import_module("gateway.server")
    except ImportError as exc:
        raise _unavailable("run", exc) from exc
    try:
        status: int = server.serve(config, verbose=args.verbose)
    except server.StartupError as exc:
        raise CommandError(str(exc)) from None
    return status


def keys_generate_command(args: argparse.Namespace) -> int:
    """Write a new private key (mode 0600) and its public half."""
    from gateway import keys

    prefix = str(args.out).removesuffix(".pem")
    private_path, public_path = Path(f"{prefix}.pem"), Path(f"{prefix}.pub.pem")
    if not args.force:
        for path in (private_path, public_path):
            if path.exists() or path.is_symlink():
                raise CommandError(f"{path} already exists; pass --force to replace it")
    key = keys.generate_private_key(args.alg)
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(private_path, keys.private_pem(key), 0o600)
        _write(public_path, keys.public_pem(key), 0o644)
    except OSError as exc:
        raise CommandError(f"cannot write {exc.filename or prefix}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    print(f"wrote {private_path} (private, {args.alg}, mode 0600) and {public_path}")
    return 0


def summary(config: Config, path: Path | str) -> str:
    """A one-screen description of a valid configuration."""
    server, upstream, session = config.server, config.upstream, config.session
    hs = config.handshake
    workers = f"{server.workers} worker{'s' if server.workers != 1 else ''}"
    lines = [f"{path}: OK", *_rows([
        ("listen", f"{_address(server.host, server.port)} ({workers})"),
        ("public_url", server.public_url),
        ("routes", server.route_base + "/" + (", compat: " + ", ".join(server.compat)
                                              if server.compat else "")),
        ("upstream", "; ".join(f"{a.name}: {a.url or f'folder {a.root}'}"
                               for a in upstream.audiences)
         if upstream.audiences else upstream.url or f"folder {upstream.root}"),
        ("mode", config.mode),
        ("handshake", f"{hs.method} ({_handshake_detail(config)})"),
        ("sessions", f"{session.store} store, cookie {session.cookie_name}, "
                     f"max age {format_duration(session.max_age)}, "
                     f"{len(session.secrets)} secret{'s' if len(session.secrets) != 1 else ''}"),
        ("access", f"{count(len(config.access.public), 'public glob')}, "
                   f"{count(len(config.access.rules), 'rule')}, denied -> "
                   f"{'404' if config.access.denied == 'not_found' else '403'}"),
        ("assertion", _assertion_detail(config)),
        ("headers", ", ".join(f"{k}: {v}" for k, v in config.identity.headers.items()) or "none"),
        ("pages", _pages_detail(config)),
        ("admin", _address(server.admin_host, server.admin_port)
         if server.admin_host is not None and server.admin_port is not None else "off"),
        ("metrics", _metrics_detail(config)),
    ])]
    warnings = list(config.warnings)
    cross_domain = domain_warning(config)
    if cross_domain:
        warnings.append(cross_domain)
    lines += [f"warning: {warning}" for warning in warnings]
    return "\n".join(lines)


def _metrics_detail(config: Config) -> str:
    server = config.server
    admin = server.admin_port is not None and server.metrics != "off"
    where = [f"{server.route_base}/metrics"] if server.metrics == "public" else []
    if admin:
        where.append("/metrics on the admin port")
    if where:
        return ", ".join(where)
    return "off" if server.metrics == "off" else "off (no server.admin_listen)"


def _handshake_detail(config: Config) -> str:
    hs = config.handshake
    if hs.method == "jwt":
        jwt = hs.jwt
        keys = ("shared secret" if jwt.secret is not None
                else count(len(jwt.public_keys), "public key") if jwt.public_keys
                else f"keys from {jwt.jwks_url}")
        return (f"{count(len(jwt.login_urls), 'login URL')}, {keys}, "
                f"algorithms {', '.join(jwt.algorithms)}")
    if hs.method == "shared_session":
        shared = hs.shared_session
        return f"Info API {shared.info_api_url}, cookies {', '.join(shared.cookies)}"
    oauth = hs.oauth
    where = oauth.issuer or oauth.authorization_url
    kind = "confidential" if oauth.client_secret else "public"
    return f"{where}, {kind} client {oauth.client_id!r}, scopes {' '.join(oauth.scopes)}"


def _pages_detail(config: Config) -> str:
    brand = config.brand
    parts = [repr(brand.name) if brand.name else "no site name"]
    if brand.logo:
        parts.append(f"logo {brand.logo}")
    parts.append(f"accent {brand.colors.accent}")
    if brand.templates is not None:
        parts.append(f"{count(len(brand.sources), 'template')} from {brand.templates}")
    return ", ".join(parts)


def _assertion_detail(config: Config) -> str:
    assertion = config.identity.assertion
    if not assertion.header:
        return "off"
    keys = (count(len(assertion.private_keys), "key file") if assertion.private_keys
            else "ephemeral key")
    return (f"header {assertion.header}, {assertion.algorithm}, "
            f"ttl {format_duration(assertion.ttl)}, {keys}")


def _rows(rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max(len(name) for name, _ in rows)
    return [f"  {name.ljust(width)}  {value}" for name, value in rows]


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 rule``, ``2 rules`` (``plural`` when adding an s is not the word)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode, so a private key is never readable by others, not even
    # briefly; O_NOFOLLOW keeps --force from writing through a planted symlink.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # an existing file (--force) keeps its old mode otherwise
        handle.write(data)


def _lazy(name: str, module: str) -> Handler:
    """A handler that imports ``module`` on use and calls its ``main(args)``."""

    def handler(args: argparse.Namespace) -> int:
        try:
            target: Any = importlib.import_module(module)
        except ImportError as exc:
            if args.verbose:
                raise
            raise _unavailable(name, exc) from exc
        status: int = target.main(args)
        return status

    return handler


def _unavailable(name: str, exc: ImportError) -> CommandError:
    return CommandError(f"the {name} command is not available in this installation ({exc})")


def _groups(text: str) -> list[str]:
    return [group.strip() for group in text.split(",") if group.strip()]


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, like '{\"name\": \"Ada\"}'")
    return value


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be longer than zero")
    return seconds


def _print_problems(error: ConfigError) -> None:
    for problem in error.problems:
        print(problem, file=sys.stderr)


def describe(exc: BaseException) -> str:
    """An error as one line, for a message."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
