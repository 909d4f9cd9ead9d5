"""WebSockets through the gateway: both ways until either side closes."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import CrossSite, UpstreamError
from gateway.redirects import post_from_this_site


def check_origin(request: web.Request, public_origin: str) -> None:
    """Refuse a cross-site upgrade (cross-site WebSocket hijacking): the login callback's rule.

    A browser opens a WebSocket to any site with that site's cookies and no CORS check, so
    only ``Sec-Fetch-Site`` and ``Origin`` tell the docs' own pages from another site's. A
    request with neither is not from a browser, and carries no one's cookies by accident.
    """
    if post_from_this_site(request.headers.get("Sec-Fetch-Site"), request.headers.get("Origin"),
                           public_origin) is not True:
        # An opaque origin ("null") has nothing else to prove it here: refused as well.
        raise CrossSite("A WebSocket to these docs can only be opened from a page of "
                        "this site.")


async def pipe_websocket(request: web.Request, session: aiohttp.ClientSession, url: URL,
                         headers: CIMultiDict[str], public_origin: str) -> web.WebSocketResponse:
    """Proxy a WebSocket both ways until either side closes; cross-site upgrades (from
    anywhere but ``public_origin``) get 403."""
    check_origin(request, public_origin)
    for name in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
                 "Host", "Content-Length"):
        headers.popall(name, None)
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                 if p.strip()]
    headers.popall("Sec-WebSocket-Protocol", None)
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    try:
        upstream_ws = await session.ws_connect(ws_url, headers=headers, protocols=protocols,
                                               autoping=True)
    except (TimeoutError, aiohttp.ClientError, OSError):
        raise UpstreamError("the docs server refused the WebSocket") from None
    client_ws = web.WebSocketResponse(protocols=protocols)
    await client_ws.prepare(request)

    async def pump(src: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
                   dst: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            else:
                break
        await dst.close()

    async with upstream_ws:
        tasks = [asyncio.create_task(pump(client_ws, upstream_ws)),
                 asyncio.create_task(pump(upstream_ws, client_ws))]
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return client_ws
