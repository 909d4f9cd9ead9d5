"""Pass-through proxies with the gateway's own upstream client and nothing else: rows n and o.

They show what serving costs before the gateway does any of its work (sessions, policy,
header hygiene, pages): the same keep-alive client to the origin
(``gateway.proxy.http1.Pool``, compiled in the compiled build), behind

- ``--server lean``: an ``asyncio.Protocol`` that parses requests with llhttp (httptools)
  and writes each response in one call (row n);
- ``--server aiohttp``: aiohttp's low-level server (``web.Server``) and ``web.Response``,
  which the gateway's docs port runs on (row o).

Both read the answer whole and send it back with the origin's headers, minus hop-by-hop
ones. GET and HEAD only, no request bodies: the floor under a page view, not a proxy to
deploy.

    python bench/floor_proxy.py --server lean --port 8081 --upstream 127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

import httptools
import uvloop
from aiohttp import web

from gateway.proxy.http1 import Pool, Response

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "content-length"})
LIMIT = 8 * 1024 * 1024


def answer_headers(upstream: Response) -> list[tuple[str, str]]:
    """The origin's headers minus hop-by-hop ones."""
    return [(name, value) for name, value in upstream.headers.items()
            if name.lower() not in HOP_BY_HOP]


async def fetch(pool: Pool, upstream_host: str, method: str, target: str,
                headers: list[tuple[str, str]]) -> tuple[Response, bytes]:
    """One exchange with the origin: its response head and whole body."""
    sent = [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP and n.lower() != "host"]
    sent.append(("Host", upstream_host))
    upstream = await pool.request(method, target, sent, None, None)
    try:
        body = await upstream.read_all(LIMIT)
    finally:
        upstream.release()
    return upstream, body


class LeanProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive connections, one request at a time, parsed by llhttp."""

    def __init__(self, pool: Pool, upstream_host: str) -> None:
        self.pool = pool
        self.upstream_host = upstream_host
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.queue: asyncio.Queue[tuple[str, str, list[tuple[str, str]], bool]] = \
            asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.worker = asyncio.get_running_loop().create_task(self.serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("ascii")
        self.queue.put_nowait((method, self.url.decode("latin-1"), self.headers,
                               self.parser.should_keep_alive()))
        self.url, self.headers = b"", []

    async def serve(self) -> None:
        """Answer the connection's requests in order."""
        while self.transport is not None:
            method, target, headers, keep_alive = await self.queue.get()
            if method not in ("GET", "HEAD"):
                head, body = b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0", b""
            else:
                upstream, body = await fetch(self.pool, self.upstream_host, method, target,
                                             headers)
                lines = [f"HTTP/1.1 {upstream.status} {upstream.reason}"]
                lines.extend(f"{name}: {value}" for name, value in answer_headers(upstream))
                lines.append(f"Content-Length: {len(body)}")
                head = "\r\n".join(lines).encode("latin-1")
            if self.transport is None:
                return
            if not keep_alive:
                head += b"\r\nConnection: close"
            self.transport.write(head + b"\r\n\r\n" + (b"" if method == "HEAD" else body))
            if not keep_alive:
                self.transport.close()
                return


def aiohttp_handler(pool: Pool, upstream_host: str
                    ) -> Callable[[web.BaseRequest], asyncio.Future[web.StreamResponse]]:
    """aiohttp's low-level handler around the same exchange."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405)
        upstream, body = await fetch(pool, upstream_host, request.method, request.raw_path,
                                     list(request.headers.items()))
        return web.Response(status=upstream.status, reason=upstream.reason, body=body,
                            headers=answer_headers(upstream))

    return handle  # type: ignore[return-value]


async def serve(kind: str, port: int, upstream: str) -> None:
    """Listen on 127.0.0.1:``port`` until cancelled."""
    host, _, upstream_port = upstream.rpartition(":")
    pool = Pool(host, int(upstream_port), limit=100, connect_timeout=5, read_timeout=30)
    loop = asyncio.get_running_loop()
    if kind == "lean":
        server = await loop.create_server(lambda: LeanProtocol(pool, upstream), "127.0.0.1",
                                          port)
    else:
        low_level = web.Server(aiohttp_handler(pool, upstream), access_log=None)
        server = await loop.create_server(low_level, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", choices=("lean", "aiohttp"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the origin's host:port")
    args = parser.parse_args()
    uvloop.run(serve(args.server, args.port, args.upstream))


if __name__ == "__main__":
    main()
