"""What the benchmark serves and how each server is configured: files, nginx, Caddy, gateway.

Every server gets the same treatment: one serving process (nginx ``worker_processes 1``,
Caddy ``GOMAXPROCS=1``, the gateway ``workers: 1``) except row i, no access logs,
keep-alive to the origin, and keep-alive connections that are never recycled mid-run.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Paths on every server; the gateway's public copy of the page lives under /public/.
PAGE = "/page.html"
PUBLIC_PAGE = "/public/page.html"
ASSET = "/static/app.js"
# The asset's public copy: what a CDN in front may keep for everyone.
PUBLIC_ASSET = "/public/app.js"
DOWNLOAD = "/files/download.bin"
PAGE_BYTES = 10 * 1024
ASSET_BYTES = 200 * 1024
DOWNLOAD_BYTES = 50 * 1024 * 1024
COOKIE_NAME = "docs_session"
HS_SECRET = "bench-login-secret-" + "x" * 24


@dataclass(frozen=True)
class SiteFiles:
    """The generated docs folder and the sizes of what it holds."""

    root: Path
    page_bytes: int
    asset_bytes: int
    download_bytes: int


def html_page(size: int) -> bytes:
    """A well-formed HTML page of exactly ``size`` bytes (head, paragraphs, closing body)."""
    head = (b'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            b"<title>Getting started</title></head>\n<body><main><h1>Getting started</h1>\n")
    tail = b"</main></body></html>\n"
    para = (b"<p>The quick brown fox jumps over the lazy dog while the docs explain how "
            b"to configure, deploy and operate the service step by step.</p>\n")
    body = bytearray(head)
    while len(body) + len(para) + len(tail) <= size:
        body += para
    body += b" " * (size - len(body) - len(tail)) + tail
    return bytes(body)


def write_site(root: Path, download_bytes: int = DOWNLOAD_BYTES) -> SiteFiles:
    """The three files: a 10 KB page and a 200 KB asset (each with a public copy), a large
    download."""
    for folder in ("public", "static", "files"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    page = html_page(PAGE_BYTES)
    (root / PAGE.lstrip("/")).write_bytes(page)
    (root / PUBLIC_PAGE.lstrip("/")).write_bytes(page)
    line = b"export function f(x) { return x * 2 + 1; } // docs asset filler text\n"
    asset = (line * (ASSET_BYTES // len(line) + 1))[:ASSET_BYTES]
    (root / ASSET.lstrip("/")).write_bytes(asset)
    (root / PUBLIC_ASSET.lstrip("/")).write_bytes(asset)
    # Random bytes, so nothing on the way can shortcut the transfer by compressing it.
    with (root / DOWNLOAD.lstrip("/")).open("wb") as handle:
        left = download_bytes
        block = os.urandom(1024 * 1024)
        while left > 0:
            handle.write(block[:left])
            left -= len(block)
    # nginx workers may run as another user: everything world-readable.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return SiteFiles(root, len(page), ASSET_BYTES, download_bytes)


def nginx_conf(work: Path, port: int, *, root: Path | None = None,
               proxy_to: int | None = None, gzip_port: int | None = None) -> str:
    """An nginx.conf that either serves ``root`` or proxies to ``proxy_to`` with keep-alive.

    ``gzip_port``: a second server for ``root``, with gzip on (text/html at nginx's default
    level), for the bytes-on-the-wire comparison. The loaded port never compresses: proxies
    that ask the origin for gzip on their own (Caddy, aiohttp's client) would otherwise pay
    for compressing and decompressing every page.
    """
    temp = work / "nginx-temp"
    temp.mkdir(parents=True, exist_ok=True)
    temp.chmod(0o777)
    # As root, nginx would switch its worker to "nobody"; the temp folders are ours.
    user = "user root;\n" if os.geteuid() == 0 else ""
    if root is not None:
        location = f"root {root};"
        upstream = ""
    else:
        location = ("location / { proxy_pass http://origin; proxy_http_version 1.1; "
                    'proxy_set_header Connection ""; }')
        upstream = f"upstream origin {{ server 127.0.0.1:{proxy_to}; keepalive 64; }}"
    compressed = ""
    if gzip_port is not None and root is not None:
        compressed = f"server {{ listen 127.0.0.1:{gzip_port}; root {root}; gzip on; }}"
    return f"""{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  types {{ text/html html; text/javascript js; application/octet-stream bin; }}
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  {upstream}
  server {{
    listen 127.0.0.1:{port};
    {location}
  }}
  {compressed}
}}
"""


def caddyfile(port: int, origin: int, forward_auth: int | None = None,
              assertion_header: str = "X-Gateway-Assertion") -> str:
    """A Caddyfile: ``reverse_proxy`` to the origin, optionally behind the gateway's auth route."""
    auth = ""
    if forward_auth is not None:
        auth = (f"  forward_auth 127.0.0.1:{forward_auth} {{\n"
                f"    uri /_gateway/auth\n    copy_headers {assertion_header}\n  }}\n")
    return ("{\n  admin off\n  auto_https off\n}\n"
            f"http://127.0.0.1:{port} {{\n{auth}  reverse_proxy 127.0.0.1:{origin}\n}}\n")


@dataclass(frozen=True)
class GatewaySetup:
    """One gateway configuration: the store, workers, and whether it sits behind a proxy."""

    store: str = "cookie"
    workers: int = 1
    behind_proxy: bool = False
    # access.rules, as (path glob, groups) pairs, and access.navigation.
    rules: tuple[tuple[str, tuple[str, ...]], ...] = ()
    navigation: bool = True


def gateway_config(port: int, origin: int, setup: GatewaySetup, *,
                   session_secret: str, key_file: Path, redis_url: str | None) -> dict[str, Any]:
    """The YAML data for one gateway (jwt handshake, authenticate mode, assertion on)."""
    session: dict[str, Any] = {"store": setup.store, "secrets": [session_secret],
                               "cookie_name": COOKIE_NAME}
    if setup.store == "redis":
        assert redis_url is not None, "the redis store needs a Redis"
        session["redis_url"] = redis_url
    access: dict[str, Any] = {"public": ["/public/**", "/favicon.ico"]}
    if setup.rules:
        access["rules"] = [{"path": path, "groups": list(groups)} for path, groups in setup.rules]
    if not setup.navigation:
        access["navigation"] = False
    return {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}",
                   "workers": setup.workers,
                   "trusted_proxies": ["127.0.0.1/32"] if setup.behind_proxy else [],
                   # Behind Caddy's forward_auth, which names the page in X-Forwarded-Uri.
                   "forward_auth": "caddy" if setup.behind_proxy else None},
        "upstream": {"url": f"http://127.0.0.1:{origin}"},
        "mode": "authenticate",
        "handshake": {"method": "jwt", "jwt": {
            "secret": HS_SECRET, "algorithms": ["HS256"], "require_host": False,
            "login_urls": [{"name": "Dashboard", "url": "http://127.0.0.1:9/login"}]}},
        "session": session,
        "identity": {"assertion": {"header": "X-Gateway-Assertion",
                                   "private_key": str(key_file), "algorithm": "EdDSA"}},
        "access": access,
        # Same as the other servers: no per-request access log line.
        "logging": {"level": "warning", "format": "json"},
    }


def write_gateway_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write a config file (JSON is valid YAML, and needs no quoting rules)."""
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_signing_key(prefix: Path) -> Path:
    """An Ed25519 assertion key, written the way ``docs-gateway keys generate`` does."""
    from gateway import keys

    key = keys.generate_private_key("EdDSA")
    path = prefix.with_suffix(".pem")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(keys.private_pem(key))
    return path


def new_session_secret() -> str:
    """A fresh session secret for this run (never printed)."""
    return secrets.token_urlsafe(48)
