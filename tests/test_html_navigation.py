"""A page's links, and what leaves with a closed one: read by ``find_links``, removed by
the gating rewriter, and served per reader by a gateway over a built folder whose admin
pages close themselves with page metadata."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import build_app
from gateway.html.gating import rewrite
from gateway.html.navigation import (
    Cuts,
    document_bases,
    find_links,
    leftovers,
    linked_parts,
    removals,
)
from gateway.html.page import Pages
from gateway.policy import Decision, Outcome, Policy
from gateway.services import GATEWAY
from tests.attack import exchange, raw_request
from tests.helpers import make_config, make_user, session_cookies
from tests.nginx import nginx_serving

CLOSED = {"/admin/", "/admin/runbook/"}


def filtered(page: bytes, closed: set[str] = CLOSED) -> bytes:
    links = find_links(page)
    cuts = removals(links, closed, {link.href: link.href for link in links})
    return rewrite(page, None, cuts.cut, cuts.unwrap)


def test_a_navigation_entry_goes_whole_with_its_title() -> None:
    page = (b'<nav><ul><li><a href="/">Home</a></li><li class="x"><a href="/admin/">'
            b'<span>Admin handbook</span></a></li><li><a href="/faq/">FAQ</a></li></ul></nav>')
    assert filtered(page) == (b'<nav><ul><li><a href="/">Home</a></li>'
                              b'<li><a href="/faq/">FAQ</a></li></ul></nav>')


def test_a_section_whose_pages_are_all_closed_goes_too() -> None:
    page = (b'<nav><ul><li><label>Ops</label><ul><li><a href="/admin/">A</a></li>'
            b'<li><a href="/admin/runbook/">B</a></li></ul></li><li><a href="/">Home</a></li>'
            b'</ul></nav>')
    assert filtered(page) == b'<nav><ul><li><a href="/">Home</a></li></ul></nav>'


def test_a_section_with_an_open_page_stays_with_that_page() -> None:
    page = (b'<nav><ul><li><label>Ops</label><ul><li><a href="/admin/">A</a></li>'
            b'<li><a href="/ops/">B</a></li></ul></li></ul></nav>')
    assert filtered(page) == (b'<nav><ul><li><label>Ops</label><ul>'
                              b'<li><a href="/ops/">B</a></li></ul></li></ul></nav>')


def test_list_items_a_browser_closes_itself_are_read_as_it_does() -> None:
    page = b'<nav><ul><li><a href="/">Home</a><li><a href="/admin/">Admin</a><li>Last</ul></nav>'
    out = filtered(page)
    # Where the model cannot be sure an entry ended, it removes more, never less.
    assert b"Admin" not in out and b"Home" in out


def test_a_link_in_the_text_keeps_its_words_and_loses_the_link() -> None:
    page = b'<main><p>Read <a href="/admin/" title="Admin handbook">the handbook</a>.</p></main>'
    assert filtered(page) == b"<main><p>Read the handbook.</p></main>"


def test_a_list_item_in_the_text_that_is_only_the_link_goes() -> None:
    page = (b'<article><ul><li><a href="/admin/">Admin handbook</a></li>'
            b'<li>See <a href="/admin/">this</a> too</li></ul></article>')
    assert filtered(page) == b"<article><ul><li>See this too</li></ul></article>"


def test_previous_and_next_links_and_head_links_go() -> None:
    page = (b'<head><link rel="next" href="/admin/" title="Admin handbook"></head>'
            b'<body><main>x</main><footer><a href="/admin/">Next: Admin handbook</a></footer>'
            b'</body>')
    assert filtered(page) == b"<head></head><body><main>x</main><footer></footer></body>"


def test_open_targets_leave_the_page_as_it_is() -> None:
    page = b'<nav><ul><li><a href="/admin/">Admin</a></li></ul></nav>'
    assert filtered(page, set()) == page


@pytest.mark.parametrize("page", [
    # an entry ending in text the list model must follow
    b'<nav><ul><li><a href="/admin/">Admin<li>x</ul></nav>',
    # a link inside a table inside an entry
    b'<nav><ul><li><table><tr><td><a href="/admin/">Admin</a></td></tr></table></li></ul></nav>',
    # an unclosed link
    b'<nav><a href="/admin/">Admin <a href="/">Home</a></nav>',
    # a link in a comment-looking attribute
    b'<nav><a title="-->" href="/admin/">Admin</a></nav>',
])
def test_no_closed_link_survives_odd_markup(page: bytes) -> None:
    out = filtered(page)
    assert b"/admin/" not in out, out
    assert b"Admin" not in out, out


PAGE = """<!doctype html><html><head><title>{title}</title>{meta}</head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/handbook/">Operator handbook</a></li>
<li><a href="/guide/">Guide</a></li></ul></nav><main><p>{text}</p></main></body></html>"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    pages = {
        "index.html": PAGE.format(title="Home", meta="", text="Welcome"),
        "guide/index.html": PAGE.format(title="Guide", meta="", text="Use it"),
        "handbook/index.html": PAGE.format(
            title="Operator handbook", meta='<meta name="gateway:groups" content="ops">',
            text="KEYS-ARE-ROTATED"),
    }
    for name, text in pages.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


async def test_a_page_closed_by_its_own_metadata_leaves_the_navigation(
        site: Path, aiohttp_client: Any) -> None:
    config = make_config(None, upstream={"root": str(site)})
    client = await aiohttp_client(await build_app(config))
    reader = await session_cookies(client.app, make_user("r", groups=("staff",)))
    page = await (await client.get("/", cookies=reader)).text()
    assert "Guide" in page and "Operator handbook" not in page
    ops = await session_cookies(client.app, make_user("o", groups=("ops",)))
    assert "Operator handbook" in await (await client.get("/", cookies=ops)).text()
    # The page's metadata was learned from the folder: the page itself stays closed.
    assert (await client.get("/handbook/", cookies=reader)).status == 404


async def test_navigation_filtering_can_be_turned_off(site: Path, aiohttp_client: Any) -> None:
    config = make_config(None, upstream={"root": str(site)}, access={"navigation": False})
    client = await aiohttp_client(await build_app(config))
    reader = await session_cookies(client.app, make_user("r", groups=("staff",)))
    assert "Operator handbook" in await (await client.get("/", cookies=reader)).text()


async def test_a_pages_markdown_copy_opens_only_where_the_page_does(
        site: Path, aiohttp_client: Any) -> None:
    (site / "handbook" / "index.md").write_text("# Operator handbook\n\nKEYS-ARE-ROTATED\n")
    (site / "guide" / "index.md").write_text("# Guide\n\nUse it\n")
    (site / "gated").mkdir()
    (site / "gated" / "index.html").write_text(
        PAGE.format(title="Gated", meta="", text='<b data-gateway-groups="ops">x</b>'))
    (site / "gated" / "index.md").write_text("# Gated\n\n<b data-gateway-groups='ops'>x</b>\n")
    (site / "notes.md").write_text("# Notes\n")
    config = make_config(None, upstream={"root": str(site)})
    client = await aiohttp_client(await build_app(config))
    reader = await session_cookies(client.app, make_user("r", groups=("staff",)))
    ops = await session_cookies(client.app, make_user("o", groups=("ops",)))
    closed = await client.get("/handbook/index.md", cookies=reader)
    assert closed.status == 404 and "KEYS" not in await closed.text()
    assert (await client.get("/handbook/index.md", cookies=ops)).status == 200
    assert (await client.get("/guide/index.md", cookies=reader)).status == 200
    # Markdown cannot be gated: the copy of a page with gated parts opens to nobody.
    assert (await client.get("/gated/index.md", cookies=ops)).status == 404
    # A Markdown file no page was made from is decided as any file is.
    assert (await client.get("/notes.md", cookies=reader)).status == 200
    # Its precompressed copy is the same text: it follows the page too.
    (site / "handbook" / "index.md.gz").write_bytes(gzip.compress(b"KEYS-ARE-ROTATED"))
    packed = await client.get("/handbook/index.md.gz", cookies=reader, auto_decompress=False)
    assert packed.status == 404 and b"\x1f\x8b" not in await packed.read()
    assert (await client.get("/handbook/index.md.gz", cookies=ops)).status == 200


def test_a_closed_link_the_entries_missed_is_taken_out_by_itself() -> None:
    page = b'<nav><a href="/">Home</a><p><a href="/admin/">Admin</a></p></nav>'
    missed = Cuts(frozenset(), frozenset(), frozenset({"/admin/"}), frozenset({b"/admin/"}))
    assert leftovers(page, missed) == frozenset({page.index(b'<a href="/admin/"')})
    assert leftovers(b'<nav><a href="/">Home</a></nav>', missed) == frozenset()
    config = make_config(None, upstream={"root": "."})
    pages = Pages(config, Policy(config))
    scanned = pages.scan(page, None)
    _decision, out = pages.render(scanned, Decision(Outcome.ALLOW), None, missed)
    assert b"/admin/" not in out and b"Admin" not in out and b'href="/"' in out


async def test_what_leaves_a_page_is_decided_once_per_audience_for_a_while(
        site: Path, aiohttp_client: Any) -> None:
    config = make_config(None, upstream={"root": str(site)})
    client = await aiohttp_client(await build_app(config))
    for name in ("r1", "r2"):
        reader = await session_cookies(client.app, make_user(name, groups=("staff",)))
        assert "Operator handbook" not in await (await client.get("/", cookies=reader)).text()
    ops = await session_cookies(client.app, make_user("o", groups=("ops",)))
    assert "Operator handbook" in await (await client.get("/", cookies=ops)).text()
    pages = client.app[GATEWAY].sites[0].pages
    kept = pages.memo.get("/", (site / "index.html").read_bytes())
    assert kept is not None and set(kept.cuts) == {("staff",), ("ops",)}
    assert kept.cuts[("ops",)][1] is None and kept.cuts[("staff",)][1] is not None


async def test_a_page_whose_navigation_cannot_be_read_is_refused(
        aiohttp_server: Any, aiohttp_client: Any) -> None:
    async def page(request: web.Request) -> web.Response:
        # Brotli, which the gateway cannot undo: its links cannot be read.
        return web.Response(body=b"\x8b\x03\x80<nav><a href='/admin/'>Admin</a></nav>\x03",
                            headers={"Content-Type": "text/html", "Content-Encoding": "br"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    upstream = await aiohttp_server(app)
    config = make_config(str(upstream.make_url("")).rstrip("/"), access={
        "public": ["/**"], "rules": [{"path": "/admin/**", "groups": ["admin"]}],
        "page_meta": False, "fragments": False})
    client = await aiohttp_client(await build_app(config))
    assert (await client.get("/guide/", auto_decompress=False)).status == 502
    assert (await client.get("/guide/index.html.br", auto_decompress=False)).status == 404


@pytest.mark.parametrize("spelling", [
    "/guide/",
    "/_gateway/%2E%2E/guide/",
    "/x/%2e%2e/guide/",
    "/guide/./",
    "//guide/",
    "/x/%2E%2E" * 900 + "/guide/",  # joined, too long to read as a path
])
async def test_a_pages_links_lead_where_they_do_from_its_own_address(
        site: Path, aiohttp_client: Any, spelling: str) -> None:
    # Relative navigation, as MkDocs writes it: what it leads to is decided from the page's
    # normalized address, whatever spelling of it the client sent.
    (site / "guide" / "index.html").write_text(PAGE.format(title="Guide", meta="", text="Use it")
                                               .replace('"/handbook/"', '"../handbook/"'))
    config = make_config(None, upstream={"root": str(site)})
    client = await aiohttp_client(await build_app(config))
    reader = await session_cookies(client.app, make_user("r", groups=("staff",)))
    cookie = "; ".join(f"{name}={value}" for name, value in reader.items())
    assert client.port is not None
    reply = await exchange(client.port, raw_request(spelling, headers=[("Cookie", cookie)]))
    assert reply.status in (200, 400, 404), reply.status
    assert b"Operator handbook" not in reply.body and b"../handbook/" not in reply.body
    if spelling == "/guide/":
        assert reply.status == 200 and b"Use it" in reply.body


def test_an_article_whose_title_links_a_closed_page_goes_whole() -> None:
    # Material for MkDocs' blog index: each post's excerpt is an article titled with a link.
    excerpt = (b'<article class="md-post md-post--excerpt"><header><time>Jan 5</time></header>'
               b'<div><h2 id="a"><a class="toclink" href="/admin/">Acquisition</a></h2>'
               b'<p>EXCERPT-SECRET</p><nav><a href="/admin/">Continue reading</a></nav></div>'
               b'</article>')
    other = (b'<article class="md-post"><h2><a href="/news/">News</a></h2><p>open</p>'
             b'</article>')
    page = b"<main><h1>Blog</h1>" + excerpt + other + b"</main>"
    assert filtered(page) == b"<main><h1>Blog</h1>" + other + b"</main>"
    # Other cards: a link around the title, a card given by its role.
    for card in (b'<article><a href="/admin/"><h2>Acquisition</h2></a><p>EXCERPT</p></article>',
                 b'<div role="article"><h3><a href="/admin/">Acquisition</a></h3><p>EXCERPT</p>'
                 b'</div>',
                 # a card in a list entry, its link around the heading
                 b'<ul><li><article class="card"><a href="/admin/"><h2>Acquisition</h2></a>'
                 b'<p>EXCERPT</p></article></li></ul>',
                 # an <h1> a browser does not show does not make it the page's own
                 b'<article><template><h1>t</h1></template><h2><a href="/admin/">Acquisition'
                 b'</a></h2><p>EXCERPT</p></article>',
                 # a list entry headed by the link (Docsy's blog list)
                 b'<ul><li><div><h5><a href="/admin/">Acquisition</a></h5><p>EXCERPT</p>'
                 b'</div></li></ul>'):
        out = filtered(b"<main>" + card + other + b"</main>")
        assert b"Acquisition" not in out and b"EXCERPT" not in out, card
        assert out.endswith(other + b"</main>"), card
    # A page's own article without an <h1> (Hugo Book titles it otherwise), and list
    # entries with more than the link, lose the link only: its picture, its words stay.
    own = (b'<main><article class="markdown"><strong>Guide</strong><h2>Overview</h2>'
           b'<p>KEEP-INTRO <a href="/admin/"><img alt="Architecture"></a></p>'
           b'<h2><a href="/admin/">Admin</a></h2><p>KEEP-REST</p>'
           b'<ul><li>Run KEEP-ME, see <a href="/admin/"><img alt=""></a></li></ul>'
           b'</article></main>')
    out = filtered(own)
    assert b"KEEP-INTRO" in out and b"KEEP-REST" in out and b"KEEP-ME" in out
    assert b"/admin/" not in out
    # A page's own article, titled without a link, only loses the link in its text.
    own = (b'<main><article><h1>Guide</h1><h2><a href="/admin/">Admin</a></h2>'
           b'<p>See <a href="/admin/">it</a>.</p></article></main>')
    assert filtered(own) == b"<main><article><h1>Guide</h1><h2>Admin</h2><p>See it.</p>" \
                            b"</article></main>"


async def test_sphinxs_copy_of_a_page_opens_only_where_the_page_is_known_to(
        site: Path, aiohttp_client: Any) -> None:
    from gateway.html.page import PAGE_READ_LIMIT

    sources = site / "_sources"
    (sources / "admin").mkdir(parents=True)
    big = "<p>" + "x" * PAGE_READ_LIMIT + "</p>"
    pages = {
        # closed by a rule, and too large to read: the rule closes its copy all the same
        "admin/keys.html": PAGE.format(title="Keys", meta="", text=big),
        # closed by its own metadata, and too large to read: its copy opens to nobody
        "vault.html": PAGE.format(title="Vault", meta='<meta name="gateway:groups" '
                                  'content="ops">', text=big),
        "guide.html": PAGE.format(title="Guide", meta="", text="Use it"),
    }
    for name, text in pages.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
        stem = name.removesuffix(".html")
        (sources / f"{stem}.rst.txt").write_text(f"{stem}\n====\n\nSOURCE-OF-{stem}\n")
        (sources / f"{stem}.rst").write_text(f"SOURCE-OF-{stem}\n")  # no suffix added
    config = make_config(None, upstream={"root": str(site)},
                         access={"rules": [{"path": "/admin/**", "groups": ["admin"]}]})
    client = await aiohttp_client(await build_app(config))
    reader = await session_cookies(client.app, make_user("r", groups=("staff",)))
    for copy in ("/_sources/admin/keys.rst.txt", "/_sources/admin/keys.rst",
                 "/_sources/vault.rst.txt", "/_sources/vault.rst"):
        reply = await client.get(copy, cookies=reader)
        assert reply.status == 404 and "SOURCE-OF" not in await reply.text(), copy
    for copy in ("/_sources/guide.rst.txt", "/_sources/guide.rst"):
        reply = await client.get(copy, cookies=reader)
        assert reply.status == 200 and "SOURCE-OF-guide" in await reply.text(), copy
    # A hidden toctree names the handbook, which only the sidebar shows: the copy of a
    # page that loses its link to the handbook, and names it, is closed to the reader.
    (sources / "guide.rst.txt").write_text("Guide\n=====\n\n.. toctree::\n   :hidden:\n\n"
                                           "   handbook/index\n")
    reply = await client.get("/_sources/guide.rst.txt", cookies=reader)
    assert reply.status == 404 and "handbook" not in await reply.text()
    ops = await session_cookies(client.app, make_user("o", groups=("ops",)))
    reply = await client.get("/_sources/guide.rst.txt", cookies=ops)
    assert reply.status == 200 and "handbook/index" in await reply.text()
    # One the page does not link to at all, closed by a rule; and a word that names no
    # closed page leaves the source open.
    (sources / "guide.rst.txt").write_text("Guide\n=====\n\n.. toctree::\n   :hidden:\n\n"
                                           "   admin/keys\n")
    reply = await client.get("/_sources/guide.rst.txt", cookies=reader)
    assert reply.status == 404 and "admin/keys" not in await reply.text()
    (sources / "guide.rst.txt").write_text("Guide\n=====\n\nAsk an admin for the keys.\n")
    reply = await client.get("/_sources/guide.rst.txt", cookies=reader)
    assert reply.status == 200
    # A name read from the document's folder, climbing out of it.
    (site / "sub").mkdir()
    (site / "sub" / "intro.html").write_text(PAGE.format(title="Intro", meta="", text="Hi"))
    (sources / "sub").mkdir()
    (sources / "sub" / "intro.rst.txt").write_text(
        "Intro\n=====\n\n.. toctree::\n   :hidden:\n\n   Secret ops <../admin/keys>\n")
    reply = await client.get("/_sources/sub/intro.rst.txt", cookies=reader)
    assert reply.status == 404 and "admin/keys" not in await reply.text()


async def test_a_copy_naming_a_page_linked_under_a_base_is_closed(
        site: Path, aiohttp_client: Any) -> None:
    # Under a <base href="/">, the page's "handbook/" is the closed /handbook/ its source
    # names, not /sub/handbook/; the gateway has not learned the handbook's metadata yet.
    (site / "sub").mkdir()
    (site / "sub" / "notes.html").write_text(
        PAGE.format(title="Notes", meta='<base href="/">', text="Hi")
        .replace('"/handbook/"', '"handbook/"'))
    (site / "_sources" / "sub").mkdir(parents=True)
    (site / "_sources" / "sub" / "notes.rst.txt").write_text(
        "Notes\n=====\n\n.. toctree::\n   :hidden:\n\n   ../handbook/index\n")
    config = make_config(None, upstream={"root": str(site)})
    client = await aiohttp_client(await build_app(config))
    reader = await session_cookies(client.app, make_user("r", groups=("staff",)))
    reply = await client.get("/_sources/sub/notes.rst.txt", cookies=reader)
    assert reply.status == 404 and "handbook" not in await reply.text()
    ops = await session_cookies(client.app, make_user("o", groups=("ops",)))
    reply = await client.get("/_sources/sub/notes.rst.txt", cookies=ops)
    assert reply.status == 200 and "handbook/index" in await reply.text()


async def test_a_markdown_copy_of_a_page_linking_a_closed_page_in_its_text_is_closed(
        site: Path, aiohttp_client: Any) -> None:
    # The page keeps the words "the handbook" and loses the link; its Markdown copy holds
    # the link whole, the closed page's address with it.
    (site / "notes.html").write_text(PAGE.format(
        title="Notes", meta="", text='Read <a href="handbook/">the handbook</a> first.'))
    (site / "notes.html.md").write_text("NOTES-MD: read [the handbook](handbook/) first.")
    # Its sidebar's entry for the handbook is not in a copy: a page linking only open
    # pages in its text keeps its copy open.
    (site / "faq.html").write_text(PAGE.format(
        title="FAQ", meta="", text='See <a href="guide/">the guide</a>.'))
    (site / "faq.html.md").write_text("FAQ-MD: see [the guide](guide/).")
    config = make_config(None, upstream={"root": str(site)})
    client = await aiohttp_client(await build_app(config))
    reader = await session_cookies(client.app, make_user("r", groups=("staff",)))
    page = await (await client.get("/notes.html", cookies=reader)).text()
    assert "the handbook" in page and 'href="handbook/"' not in page
    reply = await client.get("/notes.html.md", cookies=reader)
    assert reply.status == 404 and "NOTES-MD" not in await reply.text()
    reply = await client.get("/faq.html.md", cookies=reader)
    assert reply.status == 200 and "FAQ-MD" in await reply.text()
    ops = await session_cookies(client.app, make_user("o", groups=("ops",)))
    reply = await client.get("/notes.html.md", cookies=ops)
    assert reply.status == 200 and "NOTES-MD" in await reply.text()


async def folder_gateway(site: Path, aiohttp_client: Any, files: dict[str, str],
                         closed: str = "/admin/**") -> tuple[Any, dict[str, str]]:
    """A gateway over the built folder ``site`` with ``files`` added, whose ``closed``
    pages are for ops, and a reader's cookies (staff)."""
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    config = make_config(None, upstream={"root": str(site)},
                         access={"rules": [{"path": closed, "groups": ["ops"]}]})
    client = await aiohttp_client(await build_app(config))
    return client, await session_cookies(client.app, make_user("r", groups=("staff",)))


@pytest.mark.parametrize("base", [
    '<svg><foreignObject><base href="/admin/"></foreignObject></svg>',
    '<base href="\\admin\\">',
    '<base href="http://docs.test:80/admin/">',
    '<base href="/_gateway/%2e%2e/admin/">',
], ids=["in SVG", "backslashes", "the default port", "through the gateway's own path"])
async def test_a_base_spelled_as_a_browser_reads_it_moves_the_links(
        tmp_path: Path, aiohttp_client: Any, base: str) -> None:
    # Chromium follows "install.html" to /admin/install.html under each of these.
    client, reader = await folder_gateway(tmp_path / "site", aiohttp_client, {
        "guide/page.html": f"<head>{base}</head>"
                           '<nav><ul><li><a href="install.html">Secret runbook</a></li></ul></nav>'
                           '<main>Read <a href="install.html">the ops install</a>.</main>',
        "guide/page.html.md": "PAGE-MD [the ops install](install.html)",
        "guide/install.html": "<main>open</main>",
        "admin/install.html": "<main>SECRET</main>",
    })
    page = await (await client.get("/guide/page.html", cookies=reader)).text()
    assert "Secret runbook" not in page and 'href="install.html"' not in page
    assert "the ops install" in page
    assert (await client.get("/guide/page.html.md", cookies=reader)).status == 404


async def test_a_markdown_copy_stays_open_for_open_and_broken_links(
        tmp_path: Path, aiohttp_client: Any) -> None:
    client, reader = await folder_gateway(tmp_path / "site", aiohttp_client, {
        # Under <base href="/">, "guide/other.html" is the open /guide/other.html (from
        # the page's own address it would be a page that is not there).
        "guide/page.html": '<head><base href="/"></head>'
                           '<main>See <a href="guide/other.html">other</a>.</main>',
        "guide/page.html.md": "PAGE-MD [other](guide/other.html)",
        "guide/other.html": "<main>open</main>",
        # A link to a page that is not there names no closed page.
        "guide/dead.html": '<main>See <a href="gone.html">gone</a>.</main>',
        "guide/dead.html.md": "DEAD-MD [gone](gone.html)",
    })
    for copy, mark in (("/guide/page.html.md", "PAGE-MD"), ("/guide/dead.html.md", "DEAD-MD")):
        reply = await client.get(copy, cookies=reader)
        assert reply.status == 200 and mark in await reply.text(), copy


def test_a_step_of_prose_keeps_its_list_when_its_one_link_goes() -> None:
    page = (b'<main><ol><li><p>Install the tool (operators: see <a href="/admin/">the '
            b"runbook</a>).</p><ul><li>run pip install</li><li>OPEN-STEP configure it</li>"
            b"</ul></li><li><p>Use it</p></li></ol></main>")
    out = filtered(page)
    assert b"OPEN-STEP" in out and b"Install the tool" in out and b"the runbook" in out
    assert b'href="/admin/"' not in out


async def test_a_folders_page_answered_without_its_slash_loses_its_closed_links(
        tmp_path: Path, aiohttp_client: Any) -> None:
    # nginx answers /guide with /guide/index.html (try_files): the page's relative links
    # are written for /guide/, where secret/ is /guide/secret/, a closed page.
    root = tmp_path / "site"
    for name, text in {
        "guide/index.html": '<nav><ul><li><a href="secret/">Secret runbook</a></li>'
                            '<li><a href="../faq/">FAQ</a></li></ul></nav><main>Guide</main>',
        "guide/secret/index.html": "<main>SECRET</main>",
        # a folder whose name holds a dot, as versioned docs do
        "v1.2/index.html": '<nav><ul><li><a href="secret/">Secret runbook</a></li>'
                           '<li><a href="../faq/">FAQ</a></li></ul></nav><main>Guide</main>',
        "v1.2/secret/index.html": "<main>SECRET</main>",
        "secret/index.html": "<main>open</main>",
        "faq/index.html": "<main>faq</main>",
        "api/pkg.mod": '<nav><ul><li><a href="pkg.other">Other</a></li><li><a href='
                       '"../faq/">FAQ</a></li></ul></nav><main>See <a href="pkg.other">it'
                       '</a></main>',
        "api/pkg.other": "<main>other</main>",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    server = (f"        root {root};\n"
              "        location / { try_files $uri $uri/index.html =404; }\n"
              "        location /api/ { default_type text/html; }\n")
    async with nginx_serving(tmp_path, server) as origin:
        config = make_config(origin, access={
            "rules": [{"path": "/guide/secret/**", "groups": ["ops"]},
                      {"path": "/v1.2/secret/**", "groups": ["ops"]}]})
        client = await aiohttp_client(await build_app(config))
        reader = await session_cookies(client.app, make_user("r", groups=("staff",)))
        for path in ("/guide/", "/guide", "/v1.2/", "/v1.2"):
            page = await (await client.get(path, cookies=reader)).text()
            assert "Guide" in page and "FAQ" in page, path
            assert "Secret runbook" not in page, path
        # A page that is a file at an address without a suffix keeps its links: from the
        # folder they would lead nowhere, which closes nothing.
        page = await (await client.get("/api/pkg.mod", cookies=reader)).text()
        assert page.count("<a ") == 3, page


async def test_a_markdown_copy_opens_only_where_its_page_is_known_to(
        site: Path, aiohttp_client: Any) -> None:
    from gateway.html.page import PAGE_READ_LIMIT

    gated = '<meta name="gateway:groups" content="ops">'
    big = "<p>" + "x" * PAGE_READ_LIMIT + "</p>"
    files = {
        # closed by its metadata, and too large to read
        "big.html": PAGE.format(title="Big", meta=gated, text=big), "big.md": "BIG-MD",
        # llmstxt.org's spelling of a page's copy: the page's address and .md
        "other.html": PAGE.format(title="Other", meta=gated, text="x"),
        "other.html.md": "OTHER-MD",
        # closed by an exact rule on the folder
        "team/index.html": PAGE.format(title="Team", meta="", text="x"),
        "team/index.html.md": "TEAM-MD",
        "notes.md": "NOTES-MD",  # no page was made from it
        "llms.txt": "# Docs\n\n- [Big](/big.md): BIG-DESC\n- [Notes](/notes.md): NOTES-DESC\n",
    }
    client, reader = await folder_gateway(site, aiohttp_client, files, closed="/team")
    ops = await session_cookies(client.app, make_user("o", groups=("ops",)))
    for copy in ("/big.md", "/other.html.md", "/team/index.html.md", "/big.md"):
        reply = await client.get(copy, cookies=reader)
        assert reply.status == 404 and "-MD" not in await reply.text(), copy
    assert (await client.get("/other.html.md", cookies=ops)).status == 200
    assert (await client.get("/team/index.html.md", cookies=ops)).status == 200
    assert (await client.get("/notes.md", cookies=reader)).status == 200
    # A listing names the copies as they are served.
    listing = await (await client.get("/llms.txt", cookies=reader)).text()
    assert "BIG-DESC" not in listing and "NOTES-DESC" in listing, listing


def test_the_parts_of_a_page_s_text_that_leave_with_a_link() -> None:
    page = (b'<header><ul><li><a href="/a/">A</a></li></ul></header><main>'
            b'<p>See <a href="/b/">b</a>.</p><ul><li><a href="/c/">C</a></li></ul>'
            b'<article><h2><a href="/d/">D</a></h2><p>Excerpt</p></article></main>')
    assert sorted(linked_parts(find_links(page)).values()) == [("/c/",), ("/d/",)]
    # A page that marks no text region: all but its navigation is text (a link in a
    # sentence there goes whole, its words with it).
    page = (b'<nav><ul><li><a href="/a/">A</a></li></ul></nav><div>'
            b'<ul><li><a href="/c/">C</a></li></ul><p>See <a href="/b/">b</a></p></div>')
    assert sorted(linked_parts(find_links(page)).values()) == [("/b/",), ("/c/",)]


def test_a_table_row_whose_cell_is_nothing_but_a_link_goes_with_it() -> None:
    # Sphinx's autosummary ("name()" and a summary) and module index (an indent written
    # as &#160;): the row names the page, and goes whole; a cell with words keeps them.
    page = (b'<div class="body" role="main"><table class="autosummary"><tr><td><p>'
            b'<a href="keys.rotate.html"><code>keys.rotate</code></a>()</p></td>'
            b'<td><p>Rotate the keys.</p></td></tr>'
            b'<tr><td></td><td>&#160;&#160;<a href="keys.html"><code>keys</code></a> <em></em>'
            b'</td></tr>'
            b'<tr><td>See <a href="keys.wipe.html">wipe</a></td><td>Wipe.</td></tr></table>'
            b'<table><tr><td><a href="nav.html">Nav</a><td>x</table>'
            b'<table><thead><tr><th></th><th><a href="head.html">Head</a></th></tr></thead>'
            b'<tr><td>1</td><td><a href="numbered.html">Numbered</a></td><td>x</td></tr>'
            b'</table></div>')
    links = {link.href: link for link in find_links(page)}
    assert links["keys.rotate.html"].cut == page.index(b"<tr>")
    assert links["keys.html"].cut == page.index(b"<tr><td></td>")
    assert links["keys.wipe.html"].cut == -1
    assert links["nav.html"].cut == page.index(b"<tr><td><a href=\"nav")  # left open
    # A header cell titles a column; a column of numbers holds no words of the row.
    assert links["head.html"].cut == -1
    assert links["numbered.html"].cut == page.rindex(b"<tr>")
    cuts = removals(list(links.values()), {"/keys.rotate.html"},
                    {href: "/" + href for href in links})
    out = rewrite(page, None, cuts.cut, cuts.unwrap)
    assert b"Rotate" not in out and b"keys.rotate" not in out and b"Wipe." in out


def test_an_empty_overlay_link_takes_its_article_card() -> None:
    # Hugo PaperMod's list: the entry's title is no link; an empty link lies over the card.
    page = (b'<main><article class="post-entry"><header><h2>Secret post</h2></header>'
            b'<div class="entry-content"><p>The excerpt.</p></div>'
            b'<a class="entry-link" aria-label="post link to Secret post" href="/secret/"></a>'
            b'</article><article><h2>Open</h2><a href="/img/"><img src="i.png"></a>'
            b'<a href="/empty/"> </a></article></main>')
    links = {link.href: link for link in find_links(page)}
    assert links["/secret/"].cut == page.index(b"<article")
    # A link around an image leaves the card (only the link goes); one holding nothing
    # but white space is an overlay too.
    assert links["/img/"].cut == -1
    assert links["/empty/"].cut == page.rindex(b"<article")


@pytest.mark.parametrize(("name", "page"), [
    # A table laid out as the page, a row whose link is not its first cell's words, the
    # page's own article (its <h1> after an icon link), an article with no title.
    ("layout", b'<main><table><tr><td><a href="/admin/">Admin</a></td><td><h1>Layout</h1>'
               b'<p>All the real content</p></td></tr></table></main>'),
    ("second cell", b'<main><table><tr><td>timeout</td><td><a href="/admin/">Config</a></td>'
                    b'<td>How long to wait</td></tr></table></main>'),
    ("own article", b'<main><article><a class="fa fa-lock" href="/admin/"></a><h1>Own</h1>'
                    b'<p>Own content stays.</p></article></main>'),
    ("untitled", b'<main><article><p>Text <a href="/admin/"></a> more</p></article></main>'),
])
def test_a_page_s_own_table_or_article_keeps_its_content(name: str, page: bytes) -> None:
    assert [link.cut for link in find_links(page)] == [-1], name


def test_what_counts_as_the_page_s_text() -> None:
    def texts(page: bytes) -> list[bool]:
        return [link.text for link in find_links(page)]

    # Material's sidebar stands inside <main>: navigation, not text.
    assert texts(b'<main><div class="md-sidebar"><nav><ul><li><a href="/a/">A</a></li></ul>'
                 b'</nav></div><article><ul><li><a href="/b/">B</a></li></ul></article>'
                 b'</main>') == [False, True]
    # Furo's <article role="main">: a main region; a <link> in the head is never text.
    assert texts(b'<head><link rel="next" href="/a/"></head><div><ul><li>'
                 b'<a href="/b/">B</a></li></ul></div><article role="main"><p>x</p>'
                 b'</article>') == [False, False]
    # A <main role="main"> may hold a theme's previous/next footer and its page contents
    # (pydata-sphinx-theme): navigation; the article in it is text, breadcrumbs too.
    assert texts(b'<main role="main"><article><nav><ul><li><a href="/c/">C</a></li></ul>'
                 b'</nav><ul><li><a href="/a/">A</a></li></ul></article>'
                 b'<footer><a href="/p/">Prev</a></footer><nav><ul><li><a href="/t/">T</a>'
                 b'</li></ul></nav></main>') == [True, True, False, False]
    # Navigation written in the page's content (Markdown's own <nav>) is its text.
    assert texts(b'<main><article><nav><ul><li><a href="/a/">A</a></li></ul></nav>'
                 b'</article></main>') == [True]
    # A main region inside <noscript> or <template> is no main region of the page.
    assert texts(b'<noscript><div role="main">Enable JavaScript.</div></noscript><div>'
                 b'<ul><li><a href="/b/">B</a></li></ul></div>') == [True]


def test_a_card_titled_by_an_h1_that_is_a_link_goes_with_it() -> None:
    # Hugo Ananke's list: each card's <h1> is a link to its post (several such articles);
    # an overlay link after a card's title takes it too.
    page = (b'<main><article><div><h1><a href="/secret/">Secret</a></h1><div>Summary</div>'
            b'<a href="/secret/">read more</a></div></article>'
            b'<article><h1><a href="/open/">Open</a></h1></article>'
            b'<article><h2>Post</h2><p>x</p><a class="stretched-link" href="/closed/"></a>'
            b'</article></main>')
    starts = [at for at in range(len(page)) if page.startswith(b"<article", at)]
    # (The card's "read more" goes with the card its title's link takes.)
    assert [(link.href, link.cut) for link in find_links(page)] == [
        ("/secret/", starts[0]), ("/secret/", -1), ("/open/", starts[1]),
        ("/closed/", starts[2])]


@pytest.mark.parametrize("page", [
    # The page's own article: its <h1> a link (to a page closed to the reader, say),
    # or words beside a heading's link; an empty link before any title.
    b'<main><article><h1><a href="/admin/">Guide</a></h1><p>Body</p></article></main>',
    b'<main><article><h1>Own<a class="headerlink" href="/admin/">#</a></h1><p>Body</p>'
    b'</article></main>',
    b'<main><article><a href="/admin/"></a><h2>Section</h2><p>Body</p></article></main>',
])
def test_the_page_s_own_article_is_no_card(page: bytes) -> None:
    assert [link.cut for link in find_links(page)] == [-1]


@pytest.mark.parametrize(("page", "bases"), [
    (b'<head><base href="/guide/"></head><a href="x">x</a>', ("/guide/",)),
    (b'<HEAD><BASE HREF=" ../v2/ " target=_top></HEAD>', ("../v2/",)),
    (b'<base target="_top"><base href="/first/"><base href="/second/">',
     ("/first/", "/second/")),
    (b'<body><p>late <base href="/late/"></p></body>', ("/late/",)),
    (b'<base href="/a/&amp;b/">', ("/a/&b/",)),
    # Where a browser's tree may or may not make it the document's: a candidate all the same.
    (b'<template><base href="/t/"></template><base href="/real/">', ("/t/", "/real/")),
    (b'<noscript><base href="/n/"></noscript>', ("/n/",)),
    (b'<svg><foreignObject><base href="/s/"></foreignObject></svg>', ("/s/",)),
    (b'<!-- <base href="/c/"> --><script>"<base href=/j/>"</script>', ()),
    (b'<textarea><base href="/x/"></textarea><title><base href="/y/"></title>', ()),
    (b'<p>no base here</p>', ()),
], ids=["head", "spelled in capitals", "every one with an href", "in the body",
        "a character reference", "a template's", "noscript's", "in SVG",
        "not in a comment or a script", "not in text", "none"])
def test_every_base_a_browser_may_use_is_read(page: bytes, bases: tuple[str, ...]) -> None:
    assert document_bases(page) == bases


async def test_links_under_a_base_are_followed_from_it(tmp_path: Path,
                                                       aiohttp_client: Any) -> None:
    # A <base href> moves where every relative link leads: the closed page the navigation
    # names is /guide/secret/, not the /secret/ the page's own address would give.
    nav = ('<nav><ul><li><a href="secret/">Secret runbook</a></li>'
           '<li><a href="faq/">FAQ</a></li></ul></nav><main>{text}</main>')
    root = tmp_path / "site"
    for name, text in {
        "index.html": '<head><base href="/guide/"></head>' + nav.format(text="Home"),
        "other/index.html": '<head><base href="../guide/"></head>' + nav.format(text="Other"),
        "t/index.html": '<template><base href="/guide/"></template>'
                        + nav.format(text="Templated"),
        "t/secret/index.html": "<main>open</main>",
        "t/faq/index.html": "<main>faq</main>",
        "guide/secret/index.html": "<main>SECRET</main>",
        "guide/faq/index.html": "<main>faq</main>",
        "secret/index.html": "<main>open</main>",
        "other/secret/index.html": "<main>open</main>",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    server = (f"        root {root};\n"
              "        location / { try_files $uri $uri/index.html =404; }\n")
    async with nginx_serving(tmp_path, server) as origin:
        config = make_config(origin, access={
            "rules": [{"path": "/guide/secret/**", "groups": ["ops"]}]})
        client = await aiohttp_client(await build_app(config))
        reader = await session_cookies(client.app, make_user("r", groups=("staff",)))
        for path, text in (("/", "Home"), ("/other/", "Other")):
            page = await (await client.get(path, cookies=reader)).text()
            assert text in page and "FAQ" in page, path
            assert "Secret runbook" not in page and "secret/" not in page, path
        # A base a browser may not take (in a template) is followed all the same: the
        # entry goes rather than stay on a reading that may be wrong.
        page = await (await client.get("/t/", cookies=reader)).text()
        assert "Templated" in page and "Secret runbook" not in page
        # The operator sees the entry where it is theirs to see.
        ops = await session_cookies(client.app, make_user("o", groups=("ops",)))
        page = await (await client.get("/", cookies=ops)).text()
        assert "Secret runbook" in page
