"""The pages the gateway draws itself (login chooser, login callback, errors), in the
site's own brand: Jinja2 templates, HTML-autoescaped, with the configured name, logo and
colours, and a folder of templates (``brand.templates``) that replaces them.

Templates are read and tried with sample values when the configuration is loaded, so a
broken one is a problem ``docs-gateway check`` lists, never an error at request time. Pages
run under a strict Content-Security-Policy: their ``<style>`` elements are allowed by
hash, no script runs but the callback's own (by nonce).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import string
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from gateway.config.model import BrandColors, BrandConfig

log = logging.getLogger("gateway")

#: The pages the gateway draws; ``layout.html`` is the frame the default ones extend.
PAGES = ("error.html", "login.html", "callback.html")
TEMPLATE_NAMES = ("layout.html", *PAGES)
#: The largest template file read from ``brand.templates``.
MAX_TEMPLATE_BYTES = 256 * 1024
_HEX = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


def _defaults() -> dict[str, str]:
    folder = resources.files("gateway").joinpath("templates")
    return {name: folder.joinpath(name).read_text(encoding="utf-8") for name in TEMPLATE_NAMES}


DEFAULT_TEMPLATES = _defaults()


def stylesheet(colors: BrandColors) -> str:
    """The default pages' small stylesheet in the configured colours."""
    accent, text, background = colors.accent, colors.text, colors.background
    return (
        f"body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;"
        f"padding:0 1rem;color:{text};background:{background}}}"
        f"header{{margin-bottom:2rem}}.site{{display:inline-flex;align-items:center;gap:.6rem;"
        f"color:inherit;font-weight:600;font-size:1.1rem;text-decoration:none}}"
        f".site img{{max-height:2.5rem;max-width:12rem}}h1{{font-size:1.4rem}}"
        f"a{{color:{accent}}}a:focus-visible{{outline:3px solid {accent};outline-offset:2px}}"
        f".choices{{list-style:none;padding:0}}.choices a,.button{{display:block;"
        f"padding:.7rem 1rem;margin:.5rem 0;border:2px solid {accent};border-radius:.4rem;"
        f"text-decoration:none;font-weight:600}}.button{{display:inline-block}}"
        f".choices a:hover,.choices a:focus,.button:hover,.button:focus{{background:{accent};"
        f"color:{background}}}.meta{{opacity:.75;font-size:.85rem}}"
    )


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def style_bodies(text: str) -> list[str]:
    """The text of each ``<style>`` element of a page, as a browser hashes it."""
    # ASCII only, as HTML matches tag names: str.lower() makes some letters two ("İ"),
    # which would move every later offset.
    lower = text.translate(_ASCII_LOWER)
    bodies: list[str] = []
    at = 0
    while (start := lower.find("<style", at)) >= 0:
        opened = lower.find(">", start)
        closed = lower.find("</style", opened)
        if opened < 0 or closed < 0:
            break
        if lower[start + 6] in " \t\n\r\f/>":
            bodies.append(text[opened + 1:closed])
        at = closed + 7
    return bodies


def is_hex_colour(value: str) -> bool:
    """``#rgb`` or ``#rrggbb``."""
    return _HEX.fullmatch(value) is not None


def contrast(first: str, second: str) -> float:
    """The WCAG contrast ratio of two hex colours (1 to 21)."""

    def luminance(colour: str) -> float:
        digits = colour[1:]
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        channels = [int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
                  for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


class _Folder(jinja2.BaseLoader):
    """Templates held in memory, each named by its file so errors can point at it."""

    def __init__(self, sources: Mapping[str, str], where: str) -> None:
        self.sources = dict(sources)
        self.where = where

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template not in self.sources:
            raise jinja2.TemplateNotFound(template)
        return self.sources[template], f"{self.where}/{template}", lambda: True

    def list_templates(self) -> list[str]:
        return sorted(self.sources)


def _environment(sources: Mapping[str, str], where: str) -> jinja2.Environment:
    defaults = _Folder(DEFAULT_TEMPLATES, "<default>")
    loader = jinja2.ChoiceLoader([_Folder(sources, where), defaults,
                                  jinja2.PrefixLoader({"default": defaults})])
    # Every value is HTML-escaped; a name the template does not get is an error, found
    # when the templates are tried at load; the sandbox keeps a template from reaching
    # into the process (``''.__class__``) for anything it was not given.
    return SandboxedEnvironment(loader=loader, autoescape=True, auto_reload=False,
                                undefined=jinja2.StrictUndefined)


class Brand:
    """Draws the gateway's own pages for one configuration."""

    def __init__(self, config: BrandConfig, home: str = "/") -> None:
        where = str(config.templates) if config.templates else "<templates>"
        self.env = _environment(dict(config.sources), where)
        self.fallback = _environment({}, "<default>") if config.sources else self.env
        logo = config.logo
        self.site = {"name": config.name or "", "logo": logo or "",
                     "colors": {"accent": config.colors.accent, "text": config.colors.text,
                                "background": config.colors.background}}
        self.style = Markup(stylesheet(config.colors))  # noqa: S704 - colours are checked hex
        self.home = home
        images = ["'self'", "data:"]
        if logo and urlsplit(logo).netloc:
            parts = urlsplit(logo)
            images.append(f"{parts.scheme}://{parts.netloc}")
        self.img_src = " ".join(images)
        self._hashes: dict[str, str] = {}

    def context(self, values: Mapping[str, Any], form: str = "") -> dict[str, Any]:
        """What a template sees: the site, the default stylesheet and the page's values;
        every name is always there (empty where a page has none)."""
        return {"site": self.site, "style": self.style, "home": self.home, "title": "",
                "status": 200, "message": "", "code": "", "request_id": "", "links": [],
                "choices": [], **values,
                "form": Markup(form)}  # noqa: S704 - built by the gateway, values escaped

    def render(self, name: str, values: Mapping[str, Any], *, form: str = "",
               script: str = "", nonce: str = "") -> tuple[str, str]:
        """The page ``name`` and the Content-Security-Policy it is sent with.

        ``form`` is markup the gateway built (the callback's form); ``script`` runs under
        ``nonce``. A template failing now (it passed at load) falls back to the default.
        """
        context = self.context(values, form)
        try:
            text = self.env.get_template(name).render(context)
        except Exception as exc:
            log.warning("a page template failed; the default page is drawn",
                        extra={"template": name, "reason": type(exc).__name__})
            text = self.fallback.get_template(name).render(context)
        if script:
            tag = f'<script nonce="{nonce}">{script}</script>'
            at = text.lower().rfind("</body>")
            text = text[:at] + tag + text[at:] if at >= 0 else text + tag
        return text, self.policy(text, nonce if script else "")

    def policy(self, text: str, nonce: str) -> str:
        """Nothing loads but images (the site's, the logo's), the page's own ``<style>``
        elements (by hash) and stylesheets of the site; a script only by ``nonce`` (it may
        reach the site itself: ``connect-src`` grants nothing where no script runs)."""
        styles = "".join(dict.fromkeys(" " + self._hash(body) for body in style_bodies(text)))
        script = f"script-src 'nonce-{nonce}'; " if nonce else ""
        return (f"default-src 'none'; {script}style-src 'self'{styles}; "
                f"img-src {self.img_src}; font-src 'self'; connect-src 'self'; "
                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

    def _hash(self, body: str) -> str:
        found = self._hashes.get(body)
        if found is None:
            digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()
            found = f"'sha256-{digest}'"
            if len(self._hashes) < 64:
                self._hashes[body] = found
        return found


# -- reading and checking a template folder ----------------------------------------------

#: Sample values every page is tried with at load.
SAMPLE_CHOICE = "https://login.example/sample-choice"
SAMPLE_FORM = '<form id="login" data-sample-form></form>'
_SAMPLES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("error.html", {"title": "Page not found", "status": 404, "code": "not_found",
                    "message": "There is no page here.", "request_id": "0123456789abcdef"}),
    ("error.html", {"title": "Bad request", "status": 400, "code": "login_failed",
                    "message": "The login failed.", "request_id": "0123456789abcdef",
                    "links": [{"url": "/_gateway/login", "text": "Log in again"}]}),
    ("login.html", {"title": "Log in",
                    "choices": [{"name": "Sample", "url": SAMPLE_CHOICE}]}),
    ("callback.html", {"title": "Logging in"}),
)


def read_templates(folder: Path) -> tuple[dict[str, str], list[str]]:
    """The ``.html`` files of ``folder`` (and its subfolders) by relative name, and the
    problems found reading them."""
    sources: dict[str, str] = {}
    problems: list[str] = []
    for path in sorted(folder.rglob("*.html")):
        name = path.relative_to(folder).as_posix()
        try:
            if path.stat().st_size > MAX_TEMPLATE_BYTES:
                problems.append(f"{name} is larger than {MAX_TEMPLATE_BYTES // 1024} KiB")
                continue
            sources[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            problems.append(f"{name} is not UTF-8 text")
        except OSError as exc:
            problems.append(f"{name} cannot be read ({exc.strerror or type(exc).__name__})")
    return sources, problems


def check_templates(config: BrandConfig) -> list[str]:
    """Every problem of the configured templates, one line each: each must parse, and each
    page must draw with sample values, the login chooser showing its choices and the
    callback page its form."""
    where = str(config.templates)
    env = _environment(dict(config.sources), where)
    problems: list[str] = []
    for name, source in config.sources:
        try:
            env.parse(source, name, f"{where}/{name}")
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{name} line {exc.lineno}: {exc.message}")
    if problems:
        return problems
    brand = Brand(config)
    for page, values in _SAMPLES:
        try:
            text = env.get_template(page).render(brand.context(
                values, SAMPLE_FORM if page == "callback.html" else ""))
        except Exception as exc:
            problems.append(f"{_origin(exc, where, page)}: {_reason(exc)}")
            continue
        if page == "login.html" and SAMPLE_CHOICE not in text:
            problems.append("login.html must show each of {{ choices }} as a link to "
                            "{{ choice.url }} (where readers log in)")
        if page == "callback.html" and "data-sample-form" not in text:
            problems.append("callback.html must output {{ form }} (the form that completes "
                            "the login)")
    return list(dict.fromkeys(problems))


def _origin(exc: BaseException, where: str, page: str) -> str:
    """``name line N`` of the innermost template frame of a rendering error."""
    found = page
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        for folder in (where, "<default>"):
            if filename.startswith(folder + "/"):
                found = f"{filename[len(folder) + 1:]} line {tb.tb_lineno}"
        tb = tb.tb_next
    return found


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"includes {exc.name!r}, which is neither in the folder nor a default template"
    if isinstance(exc, jinja2.TemplateError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def link_list(links: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """``(url, text)`` pairs as the ``links`` templates get."""
    return [{"url": url, "text": text} for url, text in links]
