"""The docs request, one direction: session, handshake, policy, identity, proxy, response."""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from aiohttp import web
from multidict import CIMultiDict

from gateway.bounded import keep_for_head
from gateway.docsport import KeptHead, WholeAnswer
from gateway.errors import Denied, NotFound, Unavailable, UpstreamError
from gateway.html.encoding import decode_body, is_html
from gateway.html.head import PageMeta
from gateway.html.navigation import Cuts, removals
from gateway.html.page import (
    Pages,
    Rendered,
    Scanned,
    content_encodings,
    content_type,
    enforce,
    links_fetcher,
    meta_fetcher,
    needs_whole,
    page_like,
    same_tag,
    shared_validator,
    unidentified,
)
from gateway.indexes.filter import (
    INDEX_LIMIT,
    FetchMeta,
    IndexFile,
    Learned,
    closed_linked,
    filter_index,
    text_fetcher,
)
from gateway.paths import (
    PAGE_SUFFIXES,
    LinkTargets,
    copy_of_pages,
    link_targets,
    packed_page,
    packing_of,
)
from gateway.policy import Decision, Outcome, opens_to_nobody
from gateway.proxy.origin import Answer, BrokenAnswer, Origin, asked_method, stream_body
from gateway.proxy.upstream import Upstream
from gateway.proxy.websocket import pipe_websocket
from gateway.scope import SCOPE, Scope
from gateway.services import GATEWAY, Gateway, Site
from gateway.sessions.base import CookieJar, Loaded, Session
from gateway.types import DocsAnswer
from gateway.user import User

# An HTML page that must be read (metadata, script, gating) may be at most this large;
# a larger one is refused with 502 rather than passed unchecked.
HTML_BUFFER_LIMIT: Final = 8 * 1024 * 1024


# init=False here and below: a compiled build runs the class's own __init__ natively, where
# the one dataclasses would write is interpreted (these are made once per request).
@dataclass(init=False)
class Visitor:
    """Who is asking, decided before the upstream is called."""

    session: Session | None
    user: User | None
    jar: CookieJar

    def __init__(self, session: Session | None, user: User | None, jar: CookieJar) -> None:
        self.session = session
        self.user = user
        self.jar = jar


@dataclass(init=False)
class Exchange:
    """One docs request on its way through the pipeline: what the first steps decided,
    read by every later one (instead of the same six parameters each)."""

    request: web.Request
    scope: Scope
    #: The path below the public base path.
    rel: str
    #: The config's decision for the visitor (the page's metadata may still refine it).
    decision: Decision
    visitor: Visitor
    #: Identity headers for the upstream (none unless the decision allows).
    extra: list[tuple[str, str]]
    #: The build of the docs that serves this reader.
    site: Site
    #: When the origin was last asked for this request's answer (the pages' clock).
    asked_at: float

    def __init__(self, request: web.Request, scope: Scope, rel: str, decision: Decision,
                 visitor: Visitor, extra: list[tuple[str, str]], site: Site) -> None:
        self.request = request
        self.scope = scope
        self.rel = rel
        self.decision = decision
        self.visitor = visitor
        self.extra = extra
        self.site = site
        self.asked_at = 0.0


async def identify(gw: Gateway, request: web.Request, scope: Scope, required: bool) -> Visitor:
    """Load the session and ask the handshake who the visitor is.

    A store that cannot be reached makes protected paths 503, and public ones anonymous.
    """
    jar = CookieJar()
    # The error boundary applies what is left in the jar to whatever response is sent.
    scope.jar = jar
    try:
        cookies = session_cookies(gw, request)
        loaded = await gw.store.load(cookies) if cookies else Loaded(None)
    except Unavailable:
        gw.metrics.store_errors.inc()
        if required:
            raise
        loaded = Loaded(None)
    for name in loaded.stale:
        jar.delete(name)
    try:
        user = await gw.handshake.identify(request, loaded.session, jar)
    except Unavailable:
        if required:
            raise
        user = None
    return Visitor(session=loaded.session, user=user, jar=jar)


def session_cookies(gw: Gateway, request: web.Request) -> dict[str, str] | None:
    """The store's own cookies, read straight from the Cookie headers (the rest are never
    parsed); None when one of them is given twice: cookie tossing (a sibling subdomain or a
    longer path planted its own), so which one is the reader's cannot be told."""
    stem = gw.config.session.cookie_name
    found: dict[str, str] = {}
    for header in request.headers.getall("Cookie", ()):
        if stem not in header:
            continue
        for name, value in gw.store.cookies_in(header):
            if name in found:
                return None
            found[name] = value
    return found


def personal(decision: Decision, visitor: Visitor) -> bool:
    """Whether the response depends on who the visitor is."""
    return visitor.user is not None or not decision.public


# Cache-Control directives that would let a shared cache keep a personal response, or the
# browser reuse it without asking (they are replaced by "private, no-cache").
_SHARED: Final = ("public", "s-maxage", "private", "no-cache", "immutable",
                  "stale-while-revalidate", "stale-if-error")


# Header name (as spelled) -> whether a CDN reads it as its own Cache-Control.
_CDN_CONTROL: Final[dict[str, bool]] = {}


def is_cdn_control(name: str) -> bool:
    """Surrogate-Control and the ``*CDN-Cache-Control`` family; remembered per spelling."""
    known = _CDN_CONTROL.get(name)
    if known is None:
        lname = name.lower()
        known = lname == "surrogate-control" or lname.endswith("cdn-cache-control")
        if len(_CDN_CONTROL) < 4096:  # names are the upstream's: keep the memo bounded
            _CDN_CONTROL[name] = known
    return known


def mark_private(headers: CIMultiDict[str]) -> None:
    """Keep shared caches from serving a visitor's response to anyone else, and the
    browser's own cache from reusing it unasked (after a logout, on a shared computer)."""
    control = headers.get("Cache-Control")
    if control is None:
        headers["Cache-Control"] = "private, no-cache"
    else:
        directives = [d.strip() for d in control.split(",") if d.strip()]
        kept = [d for d in directives if d.split("=")[0].strip().lower() not in _SHARED]
        headers["Cache-Control"] = ", ".join(["private", "no-cache", *kept])
    # CDNs obey these over Cache-Control, so a personal page must not carry them.
    names = [name for name in headers if is_cdn_control(name)]
    for name in names:
        headers.popall(name, None)
    add_vary(headers, "Cookie")


def add_vary(headers: CIMultiDict[str], name: str) -> None:
    """Name a request header the response varies on (unless it varies on everything)."""
    vary = headers.get("Vary")
    if not vary:
        headers["Vary"] = name
    elif name.lower() not in vary.lower() and vary.strip() != "*":
        headers["Vary"] = f"{vary}, {name}"


def require_allowed(scope: Scope) -> None:
    """Fail closed for a docs response about to start without an enforced decision."""
    if not scope.allowed:
        raise Denied(code="not_enforced")


async def start(request: web.Request, scope: Scope, response: web.StreamResponse) -> None:
    """Send a streamed docs response's head: the one place the pipeline writes headers,
    and only for a request whose decision was enforced."""
    require_allowed(scope)
    await response.prepare(request)


async def handle_docs(request: web.Request) -> DocsAnswer:
    """Serve a docs path: everything that is not one of the gateway's own routes."""
    gw = request.app[GATEWAY]
    scope: Scope = request[SCOPE]
    intercepted = await gw.handshake.intercept(request)
    if intercepted is not None:
        scope.allowed = True  # the handshake's own answer (a login), never docs content
        return intercepted
    rel = gw.relative_path(scope.path)
    if rel is None:
        raise NotFound("There is no page here.")
    decision = gw.policy.decide(rel, None)
    visitor = await identify(gw, request, scope, required=not decision.public)
    if visitor.user is not None:
        scope.sub = visitor.user.sub
        scope.user = visitor.user
        decision = gw.policy.decide(rel, visitor.user)
    site = gw.site_for(visitor.user)
    if site.pages.guards(decision) and packed_page(rel):
        # A page's precompressed copy (page.html.gz): served, it would be the page unread.
        raise Denied(code="precompressed_copy", expected="the page itself, read")
    if site.pages.guards(decision):
        await judge_page_copy(gw, site, packing_of(rel)[0], visitor.user)
    if not decision.meta_applies or request.method not in ("GET", "HEAD"):
        # Page metadata is read from a GET's page; any other method is judged on config.
        enforce(decision, scope)
    extra = gw.identity_headers(visitor.user, visitor.session) \
        if decision.outcome is Outcome.ALLOW else []
    exchange = Exchange(request, scope, rel, decision, visitor, extra, site)
    return await serve(gw, exchange)


def is_upgrade(request: web.Request) -> bool:
    """Whether the request asks for a WebSocket."""
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def serve_websocket(gw: Gateway, origin: Upstream, ex: Exchange) -> web.StreamResponse:
    """A WebSocket through to the upstream, once the decision allows it."""
    enforce(ex.decision, ex.scope)
    assert origin.session is not None
    headers = CIMultiDict(origin.request_headers(ex.request, ex.scope, ex.extra))
    require_allowed(ex.scope)
    return await pipe_websocket(ex.request, origin.session, origin.url_for(ex.scope), headers,
                                gw.config.server.public_origin)


async def serve(gw: Gateway, ex: Exchange) -> DocsAnswer:
    """Ask the origin; touch the body only for what the gateway must read (a page that
    may declare or gate its own access, an index)."""
    request, scope, rel, decision = ex.request, ex.scope, ex.rel, ex.decision
    origin = ex.site.origin
    if isinstance(origin, Upstream) and is_upgrade(request):
        return await serve_websocket(gw, origin, ex)
    index_file = ex.site.pages.index_file(rel)
    # A body the gateway may have to read (an index, or a page on a path that may hold
    # one) is asked for whole: no ranges, no 304 that would let a copy rewritten for an
    # earlier reader stand, and a GET for a HEAD (a page is judged by its body).
    reads = index_file is not None or (ex.site.pages.wants(decision) and page_like(rel))
    if decision.meta_applies and request.method not in ("GET", "HEAD") and page_like(rel):
        # Another method's answer (a 405, say) is not the page, yet tells that it exists:
        # the page's own metadata decides first, as for a GET.
        await judge_unread(gw, ex, rel, decision)
    # A page read before, as one copy for every reader: the docs server is asked whether
    # it changed, and a 304 (no body to carry or read again) stands for that copy.
    kept = ex.site.pages.kept_copy(rel, scope.host) \
        if reads and index_file is None and shares_copy(request, scope) else None
    upstream = await ask(gw, ex, whole=reads,
                         validator=kept.validator if kept is not None else None)
    if kept is not None and upstream.status == 304:
        fresh = origin.response_pairs(upstream)
        tag = upstream.headers.get("ETag")
        upstream.release()
        if tag is None or same_tag(kept.validator, tag):
            ex.site.pages.heard(kept.scanned, rel)
            return await serve_page(gw, ex, 200, updated(kept.pairs, fresh), kept.scanned,
                                    kept.scanned.retyped)
        # Not the copy asked about: the page is asked for again, whole.
        upstream = await ask(gw, ex, whole=True)
    try:
        if not reads and request.method in ("GET", "HEAD") and ex.site.pages.wants(decision) \
                and needs_whole(request.method, upstream):
            # An asset's path answered with a page, or with a partial or unchanged answer
            # that may be one: ask again for all of it (other assets keep ranges and 304s).
            upstream.release()
            upstream = await ask(gw, ex, whole=True)
            reads = True
        if reads and upstream.status == 206:
            raise UpstreamError("the docs server sent part of a page asked for whole")
        return await respond(gw, origin, ex, upstream, index_file,
                             asked_method(request.method, reads))
    except BaseException:
        # Whatever went wrong (the client left, a decision refused the page), the pooled
        # connection goes back or is dropped; release() is a no-op when already done.
        upstream.release()
        raise


def shares_copy(request: web.Request, scope: Scope) -> bool:
    """Whether the page a request asks for may be the one copy kept for every reader (kept
    from its answer, or answered from the kept copy): a GET or HEAD (another method's
    answer is no copy of the page), with no query (the copy is kept by path), and no
    credentials of its own (a shared cache neither keeps nor answers those)."""
    return request.method in ("GET", "HEAD") and not scope.query \
        and "Authorization" not in request.headers


async def ask(gw: Gateway, ex: Exchange, *, whole: bool, validator: str | None = None,
              ) -> Answer:
    """The origin's answer to the exchange's request, timed; when it was asked is noted."""
    ex.asked_at = ex.site.pages.clock()
    started = time.monotonic()
    answer = await ex.site.origin.open(ex.request, ex.scope, ex.extra, whole=whole,
                                       validator=validator)
    gw.observe_upstream(time.monotonic() - started)
    return answer


def followed(gw: Gateway) -> LinkTargets:
    """How links and redirects on the docs are followed, for this configuration."""
    server = gw.config.server
    return link_targets(server.public_url, server.route_base, server.base_path)


def redirect_targets(gw: Gateway, base: str, location: str) -> tuple[str, ...] | None:
    """The docs paths (relative to the base path) a redirect from the address ``base`` may
    lead to, every way it may be read (``LinkTargets.readings``): empty when it leaves the
    docs, None when it cannot be read with certainty."""
    follow = followed(gw)
    return follow.readings(follow.origin + base, location)


async def judge_unread(gw: Gateway, ex: Exchange, rel: str, decision: Decision) -> None:
    """Enforce ``decision`` for a page the gateway does not read itself here, refined by the
    page's metadata as the index filter learns it (a page that cannot be learned is
    closed to every reader its metadata could concern)."""
    if decision.meta_applies and decision.outcome is Outcome.ALLOW:
        fetch = page_learner(ex.site)
        if ex.site.pages.index is not None:
            learned = (await ex.site.pages.index.lookup([rel], fetch))[rel]
        else:
            found = await fetch(rel)
            learned = found if not isinstance(found, PageMeta) else Learned(found)
        if learned is None or learned.meta.unreadable:
            raise Denied(code="page_unreadable",
                         expected="a page whose metadata can be read")
        decision = gw.policy.decide_meta(decision, learned.meta, ex.visitor.user)
    enforce(decision, ex.scope)


async def closed_pages(gw: Gateway, site: Site, paths: Iterable[str],
                       user: User | None, *, unknown_closed: bool = True) -> set[str]:
    """The docs paths among ``paths`` that ``user`` may not open: by the config, then by
    the page's own metadata, learned as the index filter learns it (a page whose metadata
    cannot be learned counts as closed, unless ``unknown_closed`` is False)."""
    closed: set[str] = set()
    unsure: list[tuple[str, Decision]] = []
    for path in paths:
        decision = gw.policy.decide(path, user)
        if decision.outcome is not Outcome.ALLOW:
            closed.add(path)
        elif decision.meta_applies:
            unsure.append((path, decision))
    if unsure:
        assert site.pages.index is not None
        learned = await site.pages.index.lookup([path for path, _ in unsure], page_learner(site))
        for path, decision in unsure:
            found = learned.get(path)
            if found is None:
                if unknown_closed:
                    closed.add(path)
            elif gw.policy.decide_meta(decision, found.meta, user).outcome \
                    is not Outcome.ALLOW:
                closed.add(path)
    return closed


async def navigation_cuts(gw: Gateway, ex: Exchange, scanned: Scanned) -> Cuts | None:
    """What leaves a page for this reader: the navigation entries and links to pages
    they may not open (None: nothing)."""
    links = ex.site.pages.links(scanned)
    if not links:
        return None
    # Links are followed from the page's address in its one normalized spelling, the one
    # the docs server answered for: a client's own spelling (``/x/%2E%2E/guide/``, or
    # one too long to join) must not move where the links lead, and so what is cut.
    base = ex.scope.path
    targets = scanned.targets
    if targets is None or scanned.base != base:
        follow = followed(gw)
        # A folder's page may be answered at the address without its slash (try_files
        # $uri/index.html): its links are written to be followed from the folder.
        name = base[base.rfind("/") + 1:].lower()
        own = [follow.origin + base]
        if name and not name.endswith(PAGE_SUFFIXES):
            own.append(follow.origin + base + "/")
        # Under a <base href>, the browser follows every relative link from there, and the
        # page's own address is the second reading (any <base> tag counts: which one the
        # browser takes depends on how it builds the page).
        bases = follow.bases(base, scanned.written_bases)
        starts = bases + own
        targets = {link.href: tuple(follow.target_from(start, link.href) for start in starts)
                   for link in links}
        scanned.targets, scanned.base = targets, base
        scanned.first_readings = len(bases) or 1
        scanned.cuts.clear()  # decided for links followed from another address
    # What is closed depends on the reader's groups alone (logged in or not): kept per
    # page copy for a few seconds, so a page's readers do not decide every link again.
    user = ex.visitor.user
    audience = None if user is None else tuple(sorted(user.groups))
    now = time.monotonic()
    kept = scanned.cuts.get(audience)
    if kept is not None and now - kept[0] < CUTS_KEPT_FOR:
        return kept[1]
    first = scanned.first_readings
    paths = {path for found in targets.values() for path in found[:first] if path is not None}
    closed = await closed_pages(gw, ex.site, paths, user) if paths else set()
    # From the second reading (the folder, or the page's own address under a <base>),
    # only a page known to be closed counts: a file's links lead nowhere from its folder.
    second = {path for found in targets.values() for path in found[first:]
              if path is not None}
    if second:
        closed |= await closed_pages(gw, ex.site, second, user, unknown_closed=False)
    # A link goes when it leads to a closed page from either address.
    cuts = removals(links, closed, {href: next((path for path in found if path in closed),
                                               found[0])
                                    for href, found in targets.items()}) if closed else None
    if len(scanned.cuts) >= 64:
        scanned.cuts.clear()  # readers of many audiences: start over
    scanned.cuts[audience] = (now, cuts)
    return cuts


async def judge_page_copy(gw: Gateway, site: Site, rel: str, user: User | None) -> None:
    """A copy of a page's source (``gateway.paths.copy_of_pages``) holds the page's text,
    gated parts included, and cannot be read like a page: it opens only to a reader the
    page opens to, and not at all when the page has gated parts; with navigation
    filtered, not when the page loses a part that links a page closed to the reader, or
    keeps the words of a link to one (the copy holds the link).

    A rule that closes one of the page's spellings closes the copy, whether or not the
    page could be read; a page that is there and cannot be read (too large) is learned
    closed. A Markdown file no page was made from is decided as any file; Sphinx's copy of
    a page that is missing opens to nobody."""
    spellings = copy_of_pages(rel)
    if not spellings:
        return
    sphinx = "/_sources/" in rel.lower()
    code = "source_copy" if sphinx else "markdown_copy"
    assert site.pages.index is not None
    learned = await site.pages.index.lookup(spellings, page_learner(site))
    read = False
    for path in spellings:
        found = learned.get(path)
        decision = gw.policy.decide(path, user)
        if found is None:
            if decision.outcome is not Outcome.ALLOW and not decision.meta_applies:
                raise Denied(code=code, expected="a page the reader may open whole",
                             received=f"its page {path}, closed to them")
            continue  # no page at this spelling
        read = True
        if decision.meta_applies and decision.outcome is Outcome.ALLOW:
            decision = gw.policy.decide_meta(decision, found.meta, user)
        if decision.outcome is not Outcome.ALLOW or (found.fragments and site.pages.fragments):
            raise Denied(code=code, expected="a page the reader may open whole",
                         received=f"its page {path}")
        if site.pages.navigation and found.fragments is None:
            raise Denied(code=code, expected="a page the reader may open whole",
                         received=f"its page {path}, whose links could not be read")
        if site.pages.navigation and found.text is not None and await closed_linked(
                found.text, path, user, gw.policy, site.pages.index, page_learner(site)):
            # Its page loses an entry for a page closed to them (or may): the copy holds it.
            raise Denied(code=code, expected="a page the reader may open whole",
                         received=f"its page {path}, which lists a page closed to them")
        if not sphinx and site.pages.navigation \
                and await unwraps_closed(gw, site, path, user):
            # Its page keeps the words of a link to a page closed to them: the copy holds
            # the link, its address too.
            raise Denied(code=code, expected="a page the reader may open whole",
                         received=f"its page {path}, which links a page closed to them")
        if sphinx and site.pages.navigation and await names_closed(gw, site, path, rel, user):
            # A source names pages no link of its text shows (a hidden toctree, which
            # fills the sidebar): one that names a page closed to them stays closed.
            raise Denied(code=code, expected="a page the reader may open whole",
                         received=f"its page {path}, which names a page closed to them")
    if sphinx and not read:
        raise Denied(code=code, expected="a page the reader may open whole",
                     received="no page that could be read")


async def names_closed(gw: Gateway, site: Site, path: str, copy: str,
                       user: User | None) -> bool:
    """Whether the source ``copy`` of the page at docs path ``path`` names a page ``user``
    may not open: one the page links to anywhere (its navigation included), or one a rule
    or the metadata learned so far closes to them; true too when it cannot be read."""
    source = await text_fetcher(site.origin)(copy)
    if source is None or b"\x00" in source:
        return True  # not read, or in an encoding names are not found in (UTF-16)
    named, written = named_pages(path, source.decode("utf-8", "replace"))
    assert site.pages.index is not None
    for candidate in written:
        decision = gw.policy.decide(candidate, user)
        if decision.meta_applies:
            known, learned = site.pages.index.known(candidate)
            if known and learned is not None:
                decision = gw.policy.decide_meta(decision, learned.meta, user)
        if decision.groups is not None and not decision.allowed:
            return True  # groups the reader lacks, by a rule or the page's metadata
    targets = await link_targets_of(gw, site, path, unwrapped_only=False)
    if targets is None:
        return True
    linked = targets & named
    return bool(linked) and bool(await closed_pages(gw, site, linked, user))


async def unwraps_closed(gw: Gateway, site: Site, path: str, user: User | None) -> bool:
    """Whether the page at docs path ``path`` links, in its text, to a page ``user`` may
    not open: the page keeps the link's words and loses the link, but a Markdown copy
    holds the link whole (true too when its links cannot be read)."""
    targets = await link_targets_of(gw, site, path, unwrapped_only=True)
    if targets is None:
        return True
    # A page that is not there (a broken link) is no closed page's address.
    return bool(targets) and bool(await closed_pages(gw, site, targets, user,
                                                     unknown_closed=False))


async def link_targets_of(gw: Gateway, site: Site, path: str, *,
                          unwrapped_only: bool) -> set[str] | None:
    """The docs paths the links of the page at docs path ``path`` lead to, followed from
    its address and from its ``<base href>`` (``unwrapped_only``: only links whose words
    stay when they go); None when its links cannot be read."""
    scanned = site.pages.memo.latest(path)
    if scanned is not None:
        links, written = site.pages.links(scanned), scanned.written_bases
    else:
        read = await links_fetcher(site.origin)(path)
        if read is None:
            return None
        links, written = read
    follow = followed(gw)
    public = gw.config.server.base_path + path
    # (under a <base href>, links lead from there)
    starts = [follow.origin + public, *follow.bases(public, written)]
    return {target for link in links if not unwrapped_only or link.cut == -1
            for start in starts if (target := follow.target_from(start, link.href))}


_DOCNAME = re.compile(r"(?<![\w./-])(?:\.\.?/)*/?[\w-]+(?:[./][\w-]+)*")
_SOURCE_SUFFIXES = (".rst.txt", ".md.txt", ".txt", ".rst", ".md", ".ipynb")


def named_pages(path: str, source: str) -> tuple[set[str], set[str]]:
    """The docs paths of the pages a Sphinx source may name (a toctree entry, a ``:doc:``
    target): each run of names and slashes in it, read from the root (a leading slash)
    or from the document's folder, as the html and dirhtml builders place a page; and of
    those, the ones written as paths (with a slash: not a word of the text)."""
    folders = {path[:path.rfind("/") + 1]}
    if path.endswith("/") and path != "/":
        folders.add(path[:path.rstrip("/").rfind("/") + 1])  # dirhtml: a/b/ is a/b or a/b/index
    every: set[str] = set()
    written: set[str] = set()
    for found in _DOCNAME.finditer(source):
        name = found.group()
        for suffix in _SOURCE_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[:-len(suffix)]
                break
        starts = ("/",) if name.startswith("/") else folders
        for start in starts:
            doc = posixpath.normpath(start + name.lstrip("/"))
            if not doc.startswith("/") or doc.startswith("//"):
                continue
            spellings = {doc + ".html", doc.rstrip("/") + "/"}
            if doc.endswith("/index"):
                spellings.add(doc[:-len("index")])
            every |= spellings
            if "/" in name.lstrip("/"):
                written |= spellings
    return every, written


#: Seconds a page copy keeps what leaves it for an audience (pages learned meanwhile, or
#: rules of a reloaded config, count from then on).
CUTS_KEPT_FOR: Final = 5.0


def page_learner(site: Site) -> FetchMeta:
    """How pages are learned from a build's origin (for index filters and judging)."""
    return meta_fetcher(site.origin, navigation=site.pages.navigation,
                        fragments=site.pages.fragments)


async def respond(gw: Gateway, origin: Origin, ex: Exchange, upstream: Answer,
                  index_file: IndexFile | None, sent_method: str,
                  ) -> DocsAnswer:
    """Turn an upstream response into the reader's: streamed, or read and rewritten.

    Every body the upstream sends that is or may be a page is read before it goes out;
    one whose type cannot be told from a page's, where a page would be judged by what
    it holds, is refused.
    """
    request, scope, rel, decision, visitor = ex.request, ex.scope, ex.rel, ex.decision, ex.visitor
    pairs = origin.response_pairs(upstream)
    status = upstream.status
    if 300 <= status < 400 and decision.meta_applies:
        # A redirect to a page (/admin to /admin/) tells that the page exists: it goes
        # only to a reader who may open that page, whichever way it is read.
        for location in CIMultiDict(pairs).getall("Location", ()):
            targets = redirect_targets(gw, scope.path, location)
            if targets is None:
                # Where it leads cannot be told for sure: answered as a redirect to a
                # page closed to every reader (a missing page, or the login).
                enforce(opens_to_nobody(visitor.user), scope)
                continue
            for target in targets:
                await judge_unread(gw, ex, target, gw.policy.decide(target, visitor.user))
    has_body = sent_method != "HEAD" and status >= 200 and status not in (204, 304)
    if index_file is not None and has_body and 200 <= status < 300:
        scope.route = "index"
        return await serve_index_upstream(gw, ex, index_file, upstream, CIMultiDict(pairs))
    declared = content_type(upstream.headers)
    html_page = has_body and declared is not None and is_html(declared) \
        and ex.site.pages.wants(decision)
    if not html_page and has_body and 200 <= status < 300 and ex.site.pages.guards(decision) \
            and unidentified(declared, rel):
        # It may be a page that declares or gates its own access, sent as something else
        # (or as nothing): read it, and refuse it when it holds anything of the kind.
        return await serve_untyped(gw, ex, upstream, pairs, declared)
    if not html_page:
        # Not a page that can declare its own access: the config decision stands.
        enforce(decision, scope)
        scope.route = "asset"
        # All of the body that came with the head (a small file) goes out with it, whole.
        whole = upstream.arrived() if has_body else None
        response: web.StreamResponse
        if whole is not None:
            upstream.release()
            response = web.Response(status=status, reason=upstream.reason, body=whole,
                                    headers=pairs)
        else:
            response = web.StreamResponse(status=status, reason=upstream.reason,
                                          headers=pairs)
            if upstream.content_length is not None \
                    and "Transfer-Encoding" not in upstream.headers:
                response.content_length = upstream.content_length
        finish_headers(gw, decision, visitor, response)
        response.headers["X-Request-Id"] = scope.request_id  # started here, not at the edge
        if whole is not None:
            require_allowed(scope)
            return response
        await start(request, scope, response)
        if request.method == "HEAD" or not has_body:
            upstream.release()
            await response.write_eof()
            return response
        await stream_body(request, upstream, response)
        return response
    try:
        body = await read_limited(upstream, HTML_BUFFER_LIMIT)
    finally:
        upstream.release()
    known = rel if status == 200 else None  # only a 200 is the page at this path
    packing = content_encodings(upstream.headers)
    readable = ex.site.pages.decode(body, decision, packing, declared, known)
    if readable is None:
        # Unreadable, and only read to add the script: it goes out as it came.
        enforce(decision, scope)
        response = web.Response(status=status, body=body, headers=pairs)
    else:
        page, retyped = readable
        scanned = ex.site.pages.scan(page, known, (declared, retyped),
                                     (packing, body) if packing else None)
        if known is not None and shares_copy(request, scope):
            ex.site.pages.keep_validator(known, scope.host, scanned,
                                         shared_validator(upstream.headers), pairs, ex.asked_at)
        return await serve_page(gw, ex, status, pairs, scanned, retyped)
    finish_headers(gw, decision, visitor, response)
    return response


async def serve_page(gw: Gateway, ex: Exchange, status: int,
                     pairs: tuple[tuple[str, str], ...], scanned: Scanned, retyped: str,
                     ) -> DocsAnswer:
    """A page read here (or its kept copy, unchanged), judged by what it holds and
    rendered for the reader, with the upstream's headers ``pairs``, as ``retyped``."""
    visitor = ex.visitor
    pages = ex.site.pages
    decision = pages.judge(scanned, ex.decision, visitor.user, ex.scope)
    cuts = await navigation_cuts(gw, ex, scanned) if pages.navigation else None
    decision, result = pages.deliver(scanned, decision, visitor.user, cuts)
    # The page holds the reader's playground keys: no cache, not even the browser's own
    # on disk, may keep it (as /_gateway/user is never kept).
    no_store = result.reader and pages.carries_keys(visitor.user)
    rendered = page_answer(pages, ex.request, status, result, PageHead(
        pairs, retyped, no_store, personal(decision, visitor), gw.varies))
    if not visitor.jar:
        return rendered
    # The session changed: the cookies go on aiohttp's response (a rare view).
    response = rendered.response()
    finish_cookies(gw, visitor, response)
    return response


# Fields of a kept page that a 304 does not change: what its body was read as, and where it
# is (a 304 sends nobody elsewhere).
_KEPT_FIELDS: Final = frozenset({"content-type", "content-encoding", "content-length", "etag",
                                 "location", "content-location", "refresh"})


# The kept pages' headers lately updated, by the kept and the 304's (the same for every
# view of an unchanged page within a second).
_UPDATED: Final[dict[tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]],
                     tuple[tuple[str, str], ...]]] = {}


def updated(kept: tuple[tuple[str, str], ...], fresh: tuple[tuple[str, str], ...],
            ) -> tuple[tuple[str, str], ...]:
    """A kept page's headers updated by a 304's (RFC 9111 4.3.4): each field the 304
    sends replaces the kept one where it stood, but for those that describe the body or
    send the reader elsewhere; remembered for the heads lately seen."""
    key = (kept, fresh)
    made = _UPDATED.get(key)
    if made is None:
        made = make_updated(kept, fresh)
        keep_for_head(_UPDATED, key, made, kept + fresh, PAGE_HEAD_MEMO)
    return made


def make_updated(kept: tuple[tuple[str, str], ...], fresh: tuple[tuple[str, str], ...],
                 ) -> tuple[tuple[str, str], ...]:
    """``updated`` made anew."""
    sent: dict[str, list[tuple[str, str]]] = {}
    for name, value in fresh:
        lname = name.lower()
        if lname not in _KEPT_FIELDS:
            sent.setdefault(lname, []).append((name, value))
    if not sent:
        return kept
    out: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name, value in kept:
        lname = name.lower()
        lines = sent.get(lname)
        if lines is None:
            out.append((name, value))
        elif lname not in placed:
            placed.add(lname)
            out += lines
    for lname, lines in sent.items():
        if lname not in placed:
            out += lines
    return tuple(out)


@dataclass(init=False)
class PageHead:
    """What the head of a page read and rendered here is made of, but for the reader's
    validator and cookies: the upstream's headers as a reader may get them, the type the
    page goes out with, and whether it may be stored, is personal, or varies by build."""

    pairs: tuple[tuple[str, str], ...]
    retyped: str
    no_store: bool
    private: bool
    varies: bool

    def __init__(self, pairs: tuple[tuple[str, str], ...], retyped: str, no_store: bool,
                 private: bool, varies: bool) -> None:
        self.pairs = pairs
        self.retyped = retyped
        self.no_store = no_store
        self.private = private
        self.varies = varies


def page_answer(pages: Pages, request: web.Request, status: int, result: Rendered,
                head: PageHead) -> WholeAnswer:
    """A page read and rendered here: with its validator (a 304 when the reader's copy is
    this one), gzip-compressed for a reader that accepts it; its head the kept one of the
    page and the way it goes out, with its ``ETag`` (a 200's only)."""
    etag = result.etag if status == 200 else None
    if etag is not None:
        asked = request.headers.get("If-None-Match")
        if asked is not None and etag_listed(asked, etag):
            return WholeAnswer(304, b"", page_head(head, status, result.reader, NOT_MODIFIED),
                               etag)
    if len(result.body) >= GZIP_FROM and accepts_gzip(request.headers.get("Accept-Encoding", "")):
        return WholeAnswer(status, pages.gzip(result),
                           page_head(head, status, result.reader, GZIPPED), etag)
    return WholeAnswer(status, result.body, page_head(head, status, result.reader, AS_IS), etag)


# How a rendered page goes out: as it is, gzip-compressed, or as a 304.
AS_IS: Final = 0
GZIPPED: Final = 1
NOT_MODIFIED: Final = 2

# The heads of rendered pages lately made.
_PAGE_HEADS: Final[dict[tuple[tuple[tuple[str, str], ...], int, str, bool, bool, bool, bool,
                              int], KeptHead]] = {}
PAGE_HEAD_MEMO: Final = 256


def page_head(head: PageHead, status: int, reader: bool, variant: int) -> KeptHead:
    """The head of a rendered page (its ETag left empty for a 200: it is the reader's own),
    encoded and remembered: the same upstream head and reading make the same one."""
    key = (head.pairs, status, head.retyped, head.no_store, reader, head.private, head.varies,
           variant)
    made = _PAGE_HEADS.get(key)
    if made is None:
        made = KeptHead(make_page_head(head, status, reader, variant))
        keep_for_head(_PAGE_HEADS, key, made, head.pairs, PAGE_HEAD_MEMO)
    return made


def make_page_head(head: PageHead, status: int, reader: bool, variant: int,
                   ) -> tuple[tuple[str, str], ...]:
    """``page_head`` made anew."""
    headers = CIMultiDict(head.pairs)
    # The rewritten page is this reader's: no validators that would let a later
    # conditional request revalidate it against the upstream's copy; its own validator
    # is a digest of the bytes this reader gets.
    for name in ("Content-Encoding", "ETag", "Last-Modified", "Content-MD5", "Digest"):
        headers.popall(name, None)
    headers["Content-Type"] = head.retyped
    if head.no_store:
        headers["Cache-Control"] = "no-store"
    if reader:
        # It carries the reader's user object (null for nobody): no cache may give one
        # reader's copy to another, the anonymous one included.
        add_vary(headers, "Cookie")
    if status == 200:
        headers["ETag"] = ""
    if variant == NOT_MODIFIED:
        headers.popall("Content-Type", None)
    else:
        add_vary(headers, "Accept-Encoding")
        if variant == GZIPPED:
            headers["Content-Encoding"] = "gzip"
    private_or_varied(headers, head.private, head.varies)
    return tuple(headers.items())


# Smaller bodies gain nothing from compression.
GZIP_FROM: Final = 1024


def etag_listed(value: str, etag: str) -> bool:
    """Whether an If-None-Match list names ``etag`` (weak comparison)."""
    return any(tag.strip() in (etag, "W/" + etag, "*") for tag in value.split(","))


@lru_cache(maxsize=256)
def accepts_gzip(value: str) -> bool:
    """Whether an Accept-Encoding admits gzip (by name, or by ``*``, with a q above 0)."""
    named = star = None
    for part in value.split(","):
        coding, _, params = part.strip().partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            named = quality > 0
        elif coding == "*":
            star = quality > 0
    return named if named is not None else bool(star)


async def serve_untyped(gw: Gateway, ex: Exchange, upstream: Answer,
                        headers: tuple[tuple[str, str], ...],
                        declared: str | None) -> web.StreamResponse:
    """A body whose type does not say it is not a page: checked whole before it is sent.

    One larger than a page may be (a download) is sent on when its first bytes do not
    begin markup; a large one that does, or one packed in a way that cannot be read from
    its start, is refused.
    """
    request, scope, decision, visitor = ex.request, ex.scope, ex.decision, ex.visitor
    try:
        body, complete = await read_upto(upstream, HTML_BUFFER_LIMIT)
    except BaseException:
        upstream.release()
        raise
    if complete:
        upstream.release()
        ex.site.pages.untyped(body, decision, content_encodings(upstream.headers), declared)
        enforce(decision, scope)
        checked = web.Response(status=upstream.status, body=body, headers=headers)
        finish_headers(gw, decision, visitor, checked)
        return checked
    if content_encodings(upstream.headers) or body.lstrip(MARKUP_LEAD)[:1] == b"<":
        upstream.release()
        raise UpstreamError("the docs server sent a page too large to check")
    enforce(decision, scope)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                  headers=headers)
    if upstream.content_length is not None and "Transfer-Encoding" not in upstream.headers:
        response.content_length = upstream.content_length
    finish_headers(gw, decision, visitor, response)
    response.headers["X-Request-Id"] = scope.request_id  # started here, not at the edge
    await start(request, scope, response)
    await response.write(body)
    await stream_body(request, upstream, response)
    return response


# Bytes a page may start with before its first "<": a byte-order mark, white space, NULs.
MARKUP_LEAD: Final = b"\xef\xbb\xbf\xff\xfe\x00\t\n\x0c\r "


async def read_upto(upstream: Answer, limit: int) -> tuple[bytes, bool]:
    """At least ``limit`` bytes of an upstream body, or all of it: (bytes, whether that is
    all of it)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = await upstream.read()
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
    except BrokenAnswer:
        raise UpstreamError("the docs server broke off the response") from None
    return b"".join(chunks), False


async def serve_index_upstream(gw: Gateway, ex: Exchange, index_file: IndexFile,
                               upstream: Answer, headers: CIMultiDict[str]) -> web.StreamResponse:
    """A sitemap or search index from the upstream, filtered to the reader's pages."""
    assert ex.site.pages.index is not None
    scope, decision, visitor = ex.scope, ex.decision, ex.visitor
    try:
        enforce(decision, scope)
        body = await read_limited(upstream, INDEX_LIMIT)
    finally:
        upstream.release()
    raw = decode_body(body, content_encodings(upstream.headers), limit=INDEX_LIMIT)
    if raw is None:
        raise UpstreamError("the docs server sent an index the gateway cannot read")
    filtered = await filter_index(index_file, raw, visitor.user, gw.policy, ex.site.pages.index,
                                  page_learner(ex.site), text_fetcher(ex.site.origin))
    for name in ("Content-Encoding", "ETag", "Last-Modified", "Content-MD5", "Digest"):
        headers.popall(name, None)
    add_vary(headers, "Accept-Encoding")
    response = web.Response(status=upstream.status, body=filtered, headers=headers)
    if not index_file.packing and len(filtered) >= GZIP_FROM \
            and accepts_gzip(ex.request.headers.get("Accept-Encoding", "")):
        # Compressed on the way out (off the event loop when large), as it came in.
        response.enable_compression(web.ContentCoding.gzip)
    finish_headers(gw, decision, visitor, response)
    mark_private(response.headers)  # the list depends on the reader, anonymous ones too
    return response


async def read_limited(upstream: Answer, limit: int) -> bytes:
    """Read an upstream body of at most ``limit`` bytes (the rest is refused)."""
    try:
        return await upstream.read_all(limit)
    except ValueError:
        raise UpstreamError("the docs page is too large to check") from None
    except BrokenAnswer:
        raise UpstreamError("the docs server broke off the response") from None


def finish_headers(gw: Gateway, decision: Decision, visitor: Visitor,
                   response: web.StreamResponse) -> None:
    """Cookies and cache headers, decided before the response starts (the error boundary
    adds the request id to every response not already started)."""
    finish_cookies(gw, visitor, response)
    private_or_varied(response.headers, personal(decision, visitor), gw.varies)


def finish_cookies(gw: Gateway, visitor: Visitor, response: web.StreamResponse) -> None:
    """The cookies the visitor's session changed."""
    if visitor.jar:
        gw.store.cookies.apply(visitor.jar, response)
        visitor.jar.clear()


def private_or_varied(headers: CIMultiDict[str], private: bool, varies: bool) -> None:
    """A personal response marked private; another one varying by the reader's cookie
    when the build that answers depends on it (no cache may give one reader's build to
    another)."""
    if private:
        mark_private(headers)
    elif varies:
        add_vary(headers, "Cookie")
