"""Who may open which path: the access rules compiled once, and a pure ``decide``."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Final

from gateway.config.model import Config
from gateway.html.head import PageMeta
from gateway.paths import GlobSet, packing_of
from gateway.user import User


class Outcome(enum.Enum):
    """What happens to a request."""

    ALLOW = "allow"
    NEEDS_LOGIN = "needs_login"
    DENIED = "denied"


@dataclass(frozen=True)
class Decision:
    """The outcome for one path and visitor, and why.

    ``public``: no user is needed. ``groups``: the groups required (any one of them),
    None for any logged-in user. ``meta_applies``: nothing in the config spoke for the
    path, so the page's own metadata may still make it public or require groups.
    """

    outcome: Outcome
    public: bool = False
    groups: tuple[str, ...] | None = None
    meta_applies: bool = False

    @property
    def allowed(self) -> bool:
        """Whether the request goes through."""
        return self.outcome is Outcome.ALLOW


_PUBLIC = Decision(Outcome.ALLOW, public=True)


# The personal variant of each decision a page rendered per audience turns into.
_PRIVATE: dict[Decision, Decision] = {}


def private(decision: Decision) -> Decision:
    """``decision`` with ``public`` off: what a page rendered for its reader's audience
    goes out on (decisions are few and shared, so each variant is made once)."""
    if not decision.public:
        return decision
    found = _PRIVATE.get(decision)
    if found is None:
        found = replace(decision, public=False)
        if len(_PRIVATE) < 1024:  # page metadata adds group sets: keep the memo bounded
            _PRIVATE[decision] = found
    return found


@dataclass(frozen=True)
class _GroupDecisions:
    """The three decisions a path that needs any one of ``groups`` can get, made once."""

    groups: tuple[str, ...]
    needs_login: Decision
    allow: Decision
    denied: Decision

    def decide(self, user: User | None) -> Decision:
        """An empty tuple of groups admits nobody."""
        if user is None:
            # Logging in may bring a group that opens it, so anonymous visitors are asked to.
            return self.needs_login
        if any(group in user.groups for group in self.groups):
            return self.allow
        return self.denied


@lru_cache(maxsize=256)
def _group_decisions(groups: tuple[str, ...]) -> _GroupDecisions:
    """The decisions for a rule's groups, or a page's (pages declare few distinct sets)."""
    return _GroupDecisions(groups, Decision(Outcome.NEEDS_LOGIN, groups=groups),
                           Decision(Outcome.ALLOW, groups=groups),
                           Decision(Outcome.DENIED, groups=groups))


def opens_to_nobody(user: User | None) -> Decision:
    """The decision for a page no reader may open (an anonymous one is asked to log in,
    as for any page that needs a group)."""
    return _group_decisions(()).decide(user)


#: What decides for a path is remembered for this many paths, of at most this length.
_REMEMBERED_PATHS: Final = 2048
_REMEMBERED_LENGTH: Final = 1024
#: What ``Policy._covering`` says of a path a public glob matches (no rule does).
_PUBLIC_GLOB: Final = -1


class Policy:
    """The ``mode`` and ``access`` sections compiled once; deciding is pure and cheap."""

    def __init__(self, config: Config) -> None:
        access = config.access
        self.personalize = config.mode == "personalize"
        self.page_meta = access.page_meta and not self.personalize
        self._rules = GlobSet(rule.path for rule in access.rules)
        self._rule_groups = tuple(_group_decisions(rule.groups) for rule in access.rules)
        # The same few paths are decided again and again: what covers one is remembered
        # (the rules and globs never change).
        self._remembered: Callable[[str], int | None] = \
            lru_cache(maxsize=_REMEMBERED_PATHS)(self._covering)
        self._public = GlobSet(access.public)
        # Decisions are immutable, so the ones that depend on nothing but login are shared.
        self._anonymous = Decision(Outcome.NEEDS_LOGIN, meta_applies=self.page_meta)
        self._reader = Decision(Outcome.ALLOW, meta_applies=self.page_meta)
        self._denied_status = 403 if access.denied == "forbidden" else 404

    @property
    def denied_status(self) -> int:
        """The status a visitor who lacks a group gets: 404 (``not_found``) or 403."""
        return self._denied_status

    def decide(self, path: str, user: User | None) -> Decision:
        """Decide for a decoded, normalized path relative to the docs base path."""
        if self.personalize:
            return _PUBLIC
        covered = self._remembered(path) if len(path) <= _REMEMBERED_LENGTH \
            else self._covering(path)
        if covered is None:
            return self._anonymous if user is None else self._reader
        if covered == _PUBLIC_GLOB:
            return _PUBLIC
        return self._rule_groups[covered].decide(user)

    def _covering(self, path: str) -> int | None:
        """What decides for the path: the index of its rule (``_find_rule``), else
        ``_PUBLIC_GLOB`` when a public glob matches it, else None (login alone)."""
        index = self._find_rule(path)
        if index is not None:
            return index
        return _PUBLIC_GLOB if self._public.match(path) else None

    def _find_rule(self, path: str) -> int | None:
        """The first rule for the path or, failing that, for a spelling of the same page.

        Static hosts serve ``/team``, ``/team/``, ``/team.html`` and ``/team/index.html``
        alike, and may hold ``/team.html.gz`` beside them, so a rule written for one
        spelling covers them all (public globs do not: widening those would open pages,
        not close them).
        """
        index = self._rules.first(path)
        if index is not None or not self._rules:
            return index
        for alias in _aliases(path):
            index = self._rules.first(alias)
            if index is not None:
                return index
        # A precompressed copy (/team.html.gz) is the page it holds.
        stem, packing = packing_of(path)
        return self._find_rule(stem) if packing else None

    def decide_meta(self, decision: Decision, meta: PageMeta, user: User | None) -> Decision:
        """Refine ``decision`` with the page's metadata when no config rule spoke.

        Groups win over ``public`` when a page declares both, so a mistake stays closed.
        """
        if not decision.meta_applies:
            return decision
        if meta.unreadable:
            # What the page declares is not known: it opens to nobody.
            return _group_decisions(()).decide(user)
        if meta.groups is not None:
            return _group_decisions(meta.groups).decide(user)
        if meta.public:
            return _PUBLIC
        return decision

    def may_view(self, path: str, user: User | None, meta: PageMeta | None = None) -> bool:
        """Whether ``user`` may open ``path`` (for filtering search indexes and sitemaps)."""
        decision = self.decide(path, user)
        if meta is not None:
            decision = self.decide_meta(decision, meta, user)
        return decision.allowed



def _aliases(path: str) -> list[str]:
    """Other spellings static hosts answer with the same page as ``path``."""
    if path == "/":
        return ["/index.html"]
    out: list[str] = []
    stem = path
    for suffix in ("/index.html", "/index.htm"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)] or "/"
            out += [stem, stem.rstrip("/") + "/"]
            break
    else:
        for suffix in (".html", ".htm"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                out += [stem, stem + "/"]
                break
    if len(path) > 1 and path.endswith("/"):
        out += [path.rstrip("/"), path + "index.html"]
    elif not out:
        out += [path + "/", path + "/index.html", path + ".html"]
        if path.endswith("/index"):
            # Clean URLs (nginx's $uri.html, the built-folder origin) serve /team/index
            # from /team/index.html: the folder's own page.
            folder = path[: -len("index")]
            out += [folder.rstrip("/") or "/", folder]
    return [alias for alias in out if alias and alias != path]
