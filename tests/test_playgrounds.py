"""API playgrounds prefilled for the reader, in a real headless Chromium: Swagger UI 5 and
Scalar's API reference as the npm registry ships them, behind the gateway, trying a local
echo API.

The packages are the registry's own tarballs (``npm pack``: the browser bundles need none of
their build dependencies), unpacked once into the cache folder the other npm-based tests use
(``DOCS_GATEWAY_TEST_CACHE``, default ``~/.cache/docs-gateway-tests``). Chromium reaches
nothing but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from gateway.app import build_app
from gateway.demo import start_demo
from gateway.demo.api import API_PATH
from gateway.user import User
from tests.helpers import Served, bound_socket, chromium, make_config, session_cookies
from tests.test_docusaurus import cache_root, npm

ROOT = Path(__file__).resolve().parent.parent

# One event loop, and one Chromium, for the module.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PACKAGES = {"swagger-ui-dist": "5.36.0", "@scalar/api-reference": "1.76.4"}
KEY = "k-ada-7f3a9c"
TOKEN = "tok-ada-51be0d"
QUERY_KEY = "q-ada-93c1e7"
COOKIE_KEY = "c-ada-0d4f2b"
#: What a page's own markup claims; never used.
MARKUP_KEY = "k-from-the-markup"


def packages() -> dict[str, Path]:
    """Each package unpacked from its registry tarball, made once per set of versions."""
    key = hashlib.sha256(json.dumps(PACKAGES, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root() / f"playgrounds-{key}"
    unpacked = {name: folder / name.replace("/", "+") for name in PACKAGES}
    if all((path / "package.json").exists() for path in unpacked.values()):
        return unpacked
    folder.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    done = subprocess.run([npm(), "pack", "--silent", *specs], cwd=folder, check=True,
                          timeout=600, capture_output=True, text=True)
    for (name, path), tarball in zip(unpacked.items(), done.stdout.split(), strict=True):
        staging = folder / f".{path.name}"
        with tarfile.open(folder / tarball) as archive:
            archive.extractall(staging, filter="data")
        (staging / "package").rename(path)
        staging.rmdir()
        (folder / tarball).unlink()
    return unpacked


SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
    "QueryKey": {"type": "apiKey", "in": "query", "name": "api_key"},
    "CookieKey": {"type": "apiKey", "in": "cookie", "name": "session_key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
    "Basic": {"type": "http", "scheme": "basic"},
}


def spec(api: str) -> dict[str, Any]:
    """The API's OpenAPI document: a key in a header, a path and a query parameter, and a
    server whose port is a variable (a reader could point it anywhere)."""
    port = api.rsplit(":", 1)[1]
    return {
        "openapi": "3.0.3",
        "info": {"title": "Acme API", "version": "1"},
        "servers": [{"url": "http://127.0.0.1:{port}/v1",
                     "variables": {"port": {"default": port}}}],
        "components": {"securitySchemes": SCHEMES},
        "security": [{"ApiKey": []}],
        "paths": {"/orgs/{org}/projects": {"get": {
            "operationId": "listProjects", "summary": "List projects",
            "parameters": [
                {"name": "org", "in": "path", "required": True, "example": "demo-org",
                 "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The projects"}}}}},
    }


CDN = "https://cdn.jsdelivr.net/npm/"


def readme_pages() -> tuple[str, str]:
    """The README's Swagger UI and Scalar pages, as it gives them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n### API playgrounds\n", 1)[1].split("\n### ", 1)[0]
    swagger, scalar = re.findall(r"```html\n(.*?)```", section, re.S)
    return swagger, scalar


HEAD = """<!doctype html><html><head><meta charset="utf-8"><title>API</title>
<script>
window.filled = [];
document.addEventListener("docs:playground", e => window.filled.push(e.detail.playground));
</script></head><body>
<script>
// The page's own claims about the reader: a playground must never take them.
const fake = {sub: "mallory", apiPlaygroundInputs: {header: {"X-Api-Key": "MARKUP_KEY"},
              server: {url: "http://127.0.0.1:9/v1"}}};
window.docsUser = fake;
document.dispatchEvent(new CustomEvent("docs:user", {detail: fake}));
</script>
""".replace("MARKUP_KEY", MARKUP_KEY)
README_SWAGGER, README_SCALAR = readme_pages()
PAGES = {
    # The README's pages: each playground made by an inline script, before the gateway's
    # (deferred) script runs.
    "/api/swagger/": HEAD + README_SWAGGER + "</body></html>",
    "/api/scalar/": HEAD + README_SCALAR + "</body></html>",
    # A playground whose document comes from another origin (ELSEWHERE: filled in per run).
    "/api/swagger-foreign/": HEAD + README_SWAGGER.replace(
        'url: "/openapi.json"', 'url: "ELSEWHERE/openapi.json"') + "</body></html>",
    # A playground that keeps authorisation in the browser's storage.
    "/api/swagger-kept/": HEAD + README_SWAGGER.replace(
        'dom_id: "#swagger-ui"', 'dom_id: "#swagger-ui", persistAuthorization: true')
    + "</body></html>",
    # Made after a client-side navigation, held by nothing global.
    "/api/": HEAD + f"""<link rel="stylesheet" href="{CDN}swagger-ui-dist@5/swagger-ui.css">
<button id="open">API reference</button><main></main>
<script src="{CDN}swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script src="{CDN}@scalar/api-reference"></script>
""" + """<script>
document.getElementById("open").addEventListener("click", () => {
  history.pushState({}, "", "/api/reference/");
  document.querySelector("main").innerHTML =
    '<div id="late-swagger"></div><div id="late-scalar"></div>';
  setTimeout(() => {
    const ui = new SwaggerUIBundle({url: "/openapi.json", dom_id: "#late-swagger"});
    Scalar.createApiReference("#late-scalar", {url: "/openapi.json"});
  }, 50);
});
</script></body></html>""",
}


def cdn_file(url: str, folders: dict[str, Path]) -> Path | None:
    """The package file a jsDelivr address names ("<name>[@<version>][/<file>]")."""
    rest = url.removeprefix(CDN).split("?", 1)[0]
    for name, folder in folders.items():
        if rest != name and not rest.startswith((name + "@", name + "/")):
            continue
        tail = rest[len(name):]
        tail = tail.partition("/")[2] if tail.startswith("@") else tail.lstrip("/")
        if not tail:
            tail = json.loads((folder / "package.json").read_text())["browser"]
        found = (folder / tail).resolve()
        return found if found.is_file() and found.is_relative_to(folder.resolve()) else None
    return None


class Echo:
    """A local API that records what reaches it, on two ports: the API, and elsewhere."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.answer)

    async def answer(self, request: web.Request) -> web.Response:
        cors = {"Access-Control-Allow-Origin": request.headers.get("Origin", "*"),
                "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE",
                "Access-Control-Allow-Headers":
                    request.headers.get("Access-Control-Request-Headers", "")}
        if request.method == "OPTIONS":
            return web.Response(headers=cors)
        if request.path == "/openapi.json":
            # A document from another origin that names this server as the API's.
            return web.json_response(spec(f"http://127.0.0.1:{request.url.port}"),
                                     headers=cors)
        self.seen.append({"port": request.url.port, "path": request.path_qs,
                          "headers": {k.lower(): v for k, v in request.headers.items()},
                          "cookies": dict(request.cookies)})
        return web.json_response({"projects": []}, headers=cors)

    async def wait(self, count: int) -> list[dict[str, Any]]:
        """The requests once there are ``count`` of them."""
        deadline = time.monotonic() + 15
        while len(self.seen) < count:
            assert time.monotonic() < deadline, f"the API saw {self.seen}, not {count} requests"
            await asyncio.sleep(0.05)
        return self.seen


class Site:
    """The gateway in front of the docs, and the API the docs describe."""

    def __init__(self, base: str, app: web.Application, api: str, elsewhere: str,
                 echo: Echo, packages: dict[str, Path]) -> None:
        self.base, self.app, self.api, self.elsewhere, self.echo = base, app, api, elsewhere, echo
        self.packages = packages
        self.contexts: list[Any] = []

    def reader(self, **inputs: Any) -> User:
        """Ada, with a key for each kind of scheme but basic, and her own server."""
        return User(sub="ada", expires_at=time.time() + 3600, content={"firstName": "Ada"},
                    api_playground_inputs=inputs or {
                        "header": {"x-api-key": KEY, "Authorization": f"Bearer {TOKEN}"},
                        "query": {"limit": "7", "api_key": QUERY_KEY},
                        "cookie": {"session_key": COOKIE_KEY}, "path": {"org": "acme"},
                        "server": {"url": self.api + "/reader"}})


Start = Callable[..., Awaitable[Site]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """One Chromium for the module's tests (each opens its own context)."""
    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def start() -> AsyncIterator[Start]:
    folders = packages()
    served = Served()
    serve = served.serve
    sites: list[Site] = []

    async def run(**identity: Any) -> Site:
        echo = Echo()
        api, elsewhere = await serve(echo.app), await serve(echo.app)
        document = json.dumps(spec(api))

        async def page(request: web.Request) -> web.Response:
            text = PAGES.get(request.path)
            if text is None:
                raise web.HTTPNotFound()
            # jsDelivr's files from the packages, through the gateway, at a local speed.
            text = text.replace("ELSEWHERE", elsewhere)
            return web.Response(text=text.replace(CDN, "/cdn/"), content_type="text/html")

        async def openapi(request: web.Request) -> web.Response:
            return web.Response(text=document, content_type="application/json")

        docs = web.Application()
        async def package_file(request: web.Request) -> web.StreamResponse:
            found = cdn_file(CDN + request.match_info["tail"], folders)
            if found is None:
                raise web.HTTPNotFound()
            return web.FileResponse(found, headers={"Content-Type": content_type(found)})

        docs.router.add_get("/openapi.json", openapi)
        docs.router.add_get("/cdn/{tail:.*}", package_file)
        docs.router.add_get("/{tail:.*}", page)
        upstream = await serve(docs)
        sock, base = bound_socket()
        config = make_config(upstream, server={"listen": "127.0.0.1:0", "public_url": base},
                             access={"public": ["/**"]}, identity=identity)
        app = await build_app(config)
        await served.on(sock, app)
        sites.append(Site(base, app, api, elsewhere, echo, folders))
        return sites[-1]

    yield run
    for site in sites:
        for context in site.contexts:
            await context.close()
    await served.close()


def content_type(path: Path) -> str:
    return ("text/css" if path.suffix == ".css" else "text/javascript") + "; charset=utf-8"


async def offline(context: Any, folders: dict[str, Path]) -> None:
    """Answer jsDelivr from the packages, 127.0.0.1 as it is, and nothing else."""

    async def local_only(route: Any) -> None:
        url = route.request.url
        found = cdn_file(url, folders) if url.startswith(CDN) else None
        if found is not None:
            await route.fulfill(path=str(found), content_type=content_type(found),
                                headers={"Access-Control-Allow-Origin": "*"})
        elif url.startswith("http://127.0.0.1:"):
            await route.continue_()
        else:
            await route.abort()

    await context.route("**/*", local_only)


async def open_page(browser: Any, site: Site, path: str, user: User | None) -> Any:
    """A page in a fresh context that reaches nothing but 127.0.0.1 (the CDN's files come
    from the installed packages)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    site.contexts.append(context)
    await offline(context, site.packages)
    if user is not None:
        cookies = await session_cookies(site.app, user)
        await context.add_cookies([{"name": name, "value": value, "url": site.base}
                                   for name, value in cookies.items()])
    page = await context.new_page()
    await page.goto(site.base + path)
    return page


async def swagger_execute(page: Any, within: str = "",
                          operation_id: str = "operations-default-listProjects") -> None:
    """Open the operation, press "Try it out", then "Execute"."""
    operation = page.locator(f"{within} #{operation_id}")
    await operation.locator(".opblock-summary").click()
    await operation.locator("button.try-out__btn").click()
    await operation.locator("button.execute").click()


async def scalar_send(page: Any) -> str:
    """Open the operation's "Test Request" client and press Send; the button's label."""
    await page.get_by_role("button", name="Test Request").first.click()
    send = page.locator("button", has_text="Send get request").locator("visible=true").first
    label = str(await send.inner_text())
    await send.click()
    return label


def carried(request: dict[str, Any]) -> list[str]:
    """The reader's or the markup's key anywhere in a request."""
    text = json.dumps(request)
    return [key for key in (KEY, TOKEN, QUERY_KEY, MARKUP_KEY) if key in text]


async def test_swagger_ui_sends_the_readers_key_to_the_readers_server_only(
        start: Start, browser: Any) -> None:
    site = await start()
    page = await open_page(browser, site, "/api/swagger/", site.reader())
    reader_server = site.api + "/reader"
    await page.wait_for_function(
        """server => window.ui.oas3Selectors.selectedServer() === server
                     && window.ui.authSelectors.authorized().size > 0""", arg=reader_server)
    assert await page.evaluate("window.filled") == ["swagger-ui"]
    # Each scheme the reader has a value for, by its kind; the header's name in any case.
    authorized = await page.evaluate("window.ui.authSelectors.authorized().toJS()")
    assert {name: auth["value"] for name, auth in authorized.items()} == {
        "ApiKey": KEY, "QueryKey": QUERY_KEY, "CookieKey": COOKIE_KEY, "Bearer": TOKEN}
    # "Try it" is authorised, its parameters hold the reader's values.
    await swagger_execute(page)
    first = (await site.echo.wait(1))[0]
    assert first["port"] == int(site.api.rsplit(":", 1)[1])
    assert first["path"] == "/reader/orgs/acme/projects?limit=7"
    assert first["headers"]["x-api-key"] == KEY

    # The document's own server is one of the reader's destinations too.
    servers = page.locator(".servers select")
    await servers.select_option("http://127.0.0.1:{port}/v1")
    await page.locator("button.execute").click()
    second = (await site.echo.wait(2))[1]
    assert second["path"] == "/v1/orgs/acme/projects?limit=7"
    assert second["headers"]["x-api-key"] == KEY

    # Pointed elsewhere (a server variable the reader edits), it goes without the values.
    port = page.locator(".servers input[type=text]")
    await port.fill(site.elsewhere.rsplit(":", 1)[1])
    await page.locator("button.execute").click()
    third = (await site.echo.wait(3))[2]
    assert third["port"] == int(site.elsewhere.rsplit(":", 1)[1])
    assert third["path"] == "/v1/orgs/acme/projects"
    assert carried(third) == [] and "x-api-key" not in third["headers"]

    # Whatever sends it, fetch or XMLHttpRequest, the key does not leave for elsewhere.
    await page.evaluate("""([url, key]) => {
      const headers = {"X-Api-Key": key, "Authorization": "Bearer " + key};
      fetch(url + "/fetch?api_key=" + key, {headers});
      const xhr = new XMLHttpRequest();
      xhr.open("GET", url + "/xhr?api_key=" + key);
      xhr.setRequestHeader("X-Api-Key", key);
      xhr.send();
    }""", [site.elsewhere, KEY])
    rest = (await site.echo.wait(5))[3:]
    assert sorted(r["path"].split("?")[0] for r in rest) == ["/fetch", "/xhr"]
    assert all(carried(r) == [] for r in rest), rest

    # A reader whose Authorization header is basic: the basic scheme, and nothing else.
    basic = base64.b64encode(b"ada:s3cret pass").decode()
    page = await open_page(browser, site, "/api/swagger/",
                           site.reader(header={"Authorization": f"Basic {basic}"}))
    await page.wait_for_function("window.filled.length > 0")
    authorized = await page.evaluate("window.ui.authSelectors.authorized().toJS()")
    assert {name: auth["value"] for name, auth in authorized.items()} == {
        "Basic": {"username": "ada", "password": "s3cret pass"}}

    # Mintlify's form of `server`: a value for the document's server variable is the
    # reader's own server, and the key goes there.
    port = site.elsewhere.rsplit(":", 1)[1]
    page = await open_page(browser, site, "/api/swagger/",
                           site.reader(header={"X-Api-Key": KEY}, server={"port": port}))
    await page.wait_for_function("window.filled.length > 0")
    await swagger_execute(page)
    mine = (await site.echo.wait(6))[5]
    assert (mine["port"], mine["path"]) == (int(port), "/v1/orgs/demo-org/projects")
    assert mine["headers"]["x-api-key"] == KEY

    # A document from another origin names no server the reader's values may go to.
    page = await open_page(browser, site, "/api/swagger-foreign/",
                           site.reader(header={"X-Api-Key": KEY}))
    await page.wait_for_function("window.filled.length > 0")
    await swagger_execute(page)
    foreign = (await site.echo.wait(7))[6]
    assert foreign["port"] == int(site.elsewhere.rsplit(":", 1)[1])
    assert carried(foreign) == [] and "x-api-key" not in foreign["headers"]

    # One that would keep the key in the browser's storage gets the server, not the key.
    page = await open_page(browser, site, "/api/swagger-kept/", site.reader())
    await page.wait_for_function("window.filled.length > 0")
    assert await page.evaluate("window.ui.oas3Selectors.selectedServer()") == reader_server
    assert await page.evaluate("window.ui.authSelectors.authorized().size") == 0
    assert await page.evaluate("JSON.stringify(localStorage)") == "{}"


async def test_scalar_sends_the_readers_key_to_the_readers_server(
        start: Start, browser: Any) -> None:
    site = await start()
    page = await open_page(browser, site, "/api/scalar/", site.reader())
    await page.wait_for_function("window.filled.includes('scalar')")
    label = await scalar_send(page)
    assert site.api + "/reader/orgs/" in label
    request = (await site.echo.wait(1))[0]
    assert request["path"] == "/reader/orgs/acme/projects?limit=7"
    assert request["headers"]["x-api-key"] == KEY


async def test_an_anonymous_reader_gets_nothing_whatever_the_markup_says(
        start: Start, browser: Any) -> None:
    site = await start()
    page = await open_page(browser, site, "/api/swagger/", None)
    assert await page.evaluate("window.docsGateway.ready") is None
    await page.wait_for_function("window.ui.specSelectors.specJson().size > 0")
    await swagger_execute(page)
    swagger = (await site.echo.wait(1))[0]
    assert swagger["path"] == "/v1/orgs/demo-org/projects"
    assert carried(swagger) == [] and "x-api-key" not in swagger["headers"]
    assert await page.evaluate("window.ui.authSelectors.authorized().size") == 0

    await page.goto(site.base + "/api/scalar/")
    assert await page.evaluate("window.docsGateway.ready") is None
    label = await scalar_send(page)
    assert "/v1/orgs/" in label and "/reader" not in label
    scalar = (await site.echo.wait(2))[1]
    assert scalar["path"] == "/v1/orgs/demo-org/projects"
    # Scalar sends the scheme's header empty.
    assert carried(scalar) == [] and scalar["headers"].get("x-api-key", "") == ""
    assert await page.evaluate("window.filled") == []


async def test_playgrounds_made_after_a_client_side_navigation_are_filled(
        start: Start, browser: Any) -> None:
    site = await start()
    page = await open_page(browser, site, "/api/", site.reader())
    await page.evaluate("window.docsGateway.ready")
    await page.click("#open")
    await page.wait_for_function("window.filled.length === 2")
    assert sorted(await page.evaluate("window.filled")) == ["scalar", "swagger-ui"]
    await swagger_execute(page, "#late-swagger")
    swagger = (await site.echo.wait(1))[0]
    assert swagger["path"] == "/reader/orgs/acme/projects?limit=7"
    assert swagger["headers"]["x-api-key"] == KEY
    await scalar_send(page)
    scalar = (await site.echo.wait(2))[1]
    assert scalar["path"] == "/reader/orgs/acme/projects?limit=7"
    assert scalar["headers"]["x-api-key"] == KEY


async def test_only_the_configured_playgrounds_are_filled(start: Start, browser: Any) -> None:
    site = await start(playgrounds=["scalar"])
    page = await open_page(browser, site, "/api/swagger/", site.reader())
    assert (await page.evaluate("window.docsGateway.ready"))["sub"] == "ada"
    await page.wait_for_function("window.ui.specSelectors.specJson().size > 0")
    await swagger_execute(page)
    request = (await site.echo.wait(1))[0]
    assert request["path"] == "/v1/orgs/demo-org/projects"
    assert carried(request) == []
    assert await page.evaluate("window.filled") == []


async def test_the_demo_api_page_tries_the_demo_api_with_the_readers_key(browser: Any) -> None:
    running = await start_demo(0, "jwt")
    try:
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        # Swagger UI's files as jsDelivr serves them (checked against the page's hashes).
        await offline(context, packages())
        page = await context.new_page()
        await page.goto(running.url + "/api/")
        await page.click("text=Log in as grace")
        await page.wait_for_url(running.url + "/api/")
        await page.wait_for_function(
            """server => window.ui.oas3Selectors.selectedServer() === server
                         && window.ui.authSelectors.authorized().size > 0""",
            arg=running.login_url + API_PATH)
        await swagger_execute(page, operation_id="operations-projects-listProjects")
        answer = page.locator(".live-responses-table .response-col_description",
                              has_text="flow-matic")
        await answer.wait_for()
        assert '"owner": "grace"' in await answer.inner_text()
        await context.close()
    finally:
        await running.stop()
