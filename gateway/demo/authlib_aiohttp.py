"""Authlib's synchronous authorization server, spoken over aiohttp.

Authlib's server classes are framework-neutral: they read an ``OAuth2Request`` and answer
``(status, body, headers)``. Here an aiohttp request is read once (query and form) into
such a request, and the answers become ``Reply`` objects that turn into aiohttp responses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from authlib.oauth2.rfc6749 import AuthorizationServer, OAuth2Payload, OAuth2Request
from multidict import CIMultiDict, MultiDict, MultiMapping


@dataclass
class Reply:
    """Authlib's answer before it becomes an aiohttp response (its hooks edit ``location``)."""

    status: int
    body: Any
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        return next((value for name, value in self.headers if name.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(n, v) for n, v in self.headers if n.lower() != "location"]
        self.headers.append(("Location", value))

    def response(self) -> web.Response:
        """The aiohttp response."""
        body = self.body
        if isinstance(body, dict | list):
            body = json.dumps(body)
        headers = CIMultiDict(self.headers)
        headers.setdefault("Cache-Control", "no-store")
        return web.Response(status=self.status, text=body or "", headers=headers)


class Payload(OAuth2Payload):  # type: ignore[misc]
    """The query and form parameters of one request, as Authlib reads them."""

    def __init__(self, values: MultiMapping[str]) -> None:
        self._list: dict[str, list[str]] = {}
        for key, value in values.items():
            self._list.setdefault(key, []).append(value)
        self._data = {key: items[0] for key, items in self._list.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._list


class Request(OAuth2Request):  # type: ignore[misc]
    """An aiohttp request, already read, in Authlib's terms."""

    def __init__(self, method: str, url: str, headers: Mapping[str, str],
                 query: MultiMapping[str], form: MultiMapping[str]) -> None:
        super().__init__(method, url, headers=headers)
        self._query = query
        self._form = form
        self.payload = Payload(MultiDict([*query.items(), *form.items()]))

    @property
    def args(self) -> MultiMapping[str]:
        return self._query

    @property
    def form(self) -> MultiMapping[str]:
        return self._form


async def read_request(request: web.Request) -> Request:
    """Read an aiohttp request (its form too) into Authlib's terms."""
    form = await request.post() if request.method == "POST" else MultiDict[str]()
    text_form = MultiDict((k, v) for k, v in form.items() if isinstance(v, str))
    return Request(request.method, str(request.url), request.headers, request.query, text_form)


class AiohttpServer(AuthorizationServer):  # type: ignore[misc]
    """An authorization server that reads ``Request`` objects and answers with ``Reply``."""

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no JSON requests")

    def handle_response(self, status: int, body: Any, headers: Any) -> Reply:
        return Reply(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass
