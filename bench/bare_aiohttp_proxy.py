"""A bare aiohttp pass-through proxy, built the obvious way: the benchmark's row e.

An aiohttp server with one catch-all handler and one pooled ``ClientSession``; it
forwards the method, path, headers and body, and streams the answer back. No login, no
header hygiene beyond hop-by-hop headers: the floor a Python proxy starts from.

    python bench/bare_aiohttp_proxy.py --port 8081 --upstream http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "host",
                        "content-length"})
CLIENT = web.AppKey("client", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.StreamResponse:
    """Send the request on and stream the upstream's answer back."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    body = request.content if request.body_exists else None
    async with request.app[CLIENT].request(
            request.method, request.app[UPSTREAM] + request.path_qs, headers=headers,
            data=body, allow_redirects=False) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response


async def client_context(app: web.Application) -> AsyncIterator[None]:
    """One pooled client for the process, closed at shutdown."""
    app[CLIENT] = aiohttp.ClientSession(auto_decompress=False,
                                        connector=aiohttp.TCPConnector(limit=100))
    yield
    await app[CLIENT].close()


def make_app(upstream: str) -> web.Application:
    """The proxy application for one upstream origin."""
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(client_context)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="origin URL, like http://127.0.0.1:8080")
    args = parser.parse_args()
    web.run_app(make_app(args.upstream), host=args.host, port=args.port, access_log=None,
                print=None)


if __name__ == "__main__":
    main()
