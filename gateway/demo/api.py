"""The demo's API, Acme Cloud's: what the docs' API page tries with each reader's own key.

It answers on the login side's server, under ``/api/v1``, and only the docs' origin may call
it from a browser (CORS).
"""

from __future__ import annotations

from aiohttp import web

from gateway.demo.accounts import ACCOUNTS

API_PATH = "/api/v1"
PROJECTS = {
    "ada": ["analytical-engine", "bernoulli-numbers"],
    "grace": ["cobol", "harvard-mark-i", "flow-matic"],
}


def api_key(username: str) -> str:
    """The reader's demo API key, as their user object's playground header holds it."""
    header = ACCOUNTS[username].user["apiPlaygroundInputs"]["header"]["Authorization"]
    return str(header).removeprefix("Bearer ")


class Api:
    """``GET /api/v1/projects``: the projects of the reader whose key it is, or 401."""

    def __init__(self, docs_origin: str) -> None:
        self.docs_origin = docs_origin.rstrip("/")
        self.keys = {api_key(name): name for name in ACCOUNTS}

    def add_to(self, app: web.Application) -> None:
        """Answer on ``app`` (the login side's own application)."""
        app.router.add_route("OPTIONS", API_PATH + "/projects", self.preflight)
        app.router.add_get(API_PATH + "/projects", self.projects)

    def cors(self, request: web.Request) -> dict[str, str]:
        if request.headers.get("Origin") != self.docs_origin:
            return {"Vary": "Origin"}
        return {"Access-Control-Allow-Origin": self.docs_origin, "Vary": "Origin",
                "Access-Control-Allow-Headers": "Authorization",
                "Access-Control-Allow-Methods": "GET"}

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=self.cors(request))

    async def projects(self, request: web.Request) -> web.Response:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        owner = self.keys.get(key) if scheme.lower() == "bearer" else None
        if owner is None:
            return web.json_response({"error": "a valid API key is required"}, status=401,
                                     headers=self.cors(request))
        return web.json_response({"owner": owner, "projects": PROJECTS[owner]},
                                 headers={"Cache-Control": "no-store", **self.cors(request)})
