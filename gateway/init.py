"""``docs-gateway init``: a gateway for the docs project in a folder.

It finds the generator from its config file (MkDocs, Docusaurus, Sphinx, Hugo), writes a
commented ``gateway.yaml`` that serves the generator's build folder behind the chosen login
handshake, makes the keys that handshake needs, and prints the three next steps.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from gateway import keys
from gateway.config.load import load_config
from gateway.crypto import random_token

GENERATORS = ("mkdocs", "docusaurus", "sphinx", "hugo")
METHODS = ("jwt", "shared_session", "oauth")
LISTEN = "127.0.0.1:8080"
PUBLIC_URL = f"http://{LISTEN}"


class InitError(Exception):
    """init cannot go on; the message is one line for the user."""


@dataclass(frozen=True)
class Project:
    """A docs project: its generator, the file that told, the build command and folder."""

    generator: str
    #: The generator's own name, and the site's title in its config ("" when none).
    label: str
    title: str
    found: str
    build: str
    output: str
    #: Where the page metadata recipe goes (README, "Page metadata").
    recipe: str
    public: tuple[str, ...]
    #: The path the site is built for (Docusaurus' baseUrl, Hugo's baseURL, MkDocs'
    #: site_url): the gateway serves it there. "" at the root.
    base: str = ""

    @property
    def url(self) -> str:
        """Where readers open the docs through the gateway."""
        return PUBLIC_URL + self.base


_TITLES = {
    "mkdocs": r"^site_name:\s*['\"]?(.+?)['\"]?\s*$",
    "docusaurus": r"^\s*title:\s*['\"`](.+?)['\"`]\s*,?\s*$",
    "sphinx": r"^project\s*=\s*['\"](.+?)['\"]\s*$",
    "hugo": r"^\s*['\"]?title['\"]?\s*[:=]\s*['\"]?(.+?)['\"]?\s*,?\s*$",
}


_BASES = {
    "mkdocs": r"^site_url:\s*['\"]?([^'\"\s#]+)",
    "docusaurus": r"^\s*baseUrl:\s*['\"`]([^'\"`]+)['\"`]",
    "hugo": r"^\s*['\"]?baseurl['\"]?\s*[:=]\s*['\"]?([^'\"\s,]+)",
}


def _base(generator: str, config: Path) -> str:
    """The path the generator builds the site for, from its config file ("" at the root)."""
    if generator not in _BASES:
        return ""
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    match = re.search(_BASES[generator], text, re.M | (re.I if generator == "hugo" else 0))
    path = urlsplit(match.group(1)).path.rstrip("/") if match else ""
    return path if re.fullmatch(r"(/[A-Za-z0-9._~-]+)*", path) else ""


def _title(generator: str, config: Path) -> str:
    """The site's title as its config file gives it (brand.name), or ""."""
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    match = re.search(_TITLES[generator], text, re.M)
    return match.group(1).strip()[:100] if match else ""


def _mkdocs_output(config: Path) -> str:
    match = re.search(r"^site_dir:\s*['\"]?([^'\"#\n]+?)['\"]?\s*(?:#.*)?$",
                      config.read_text(encoding="utf-8", errors="replace"), re.M)
    return match.group(1).strip().removeprefix("./").rstrip("/") if match else "site"


def _sphinx_conf(folder: Path) -> Path | None:
    for conf in (folder / "conf.py", folder / "docs" / "conf.py",
                 folder / "docs" / "source" / "conf.py", folder / "source" / "conf.py"):
        if conf.is_file() and re.search(r"^\s*(project|extensions|html_theme)\s*=",
                                        conf.read_text(encoding="utf-8", errors="replace"),
                                        re.M):
            return conf
    return None


def _hugo_config(folder: Path) -> Path | None:
    for suffix in ("toml", "yaml", "json"):
        if (folder / f"hugo.{suffix}").is_file():
            return folder / f"hugo.{suffix}"
    if (folder / "content").is_dir():
        for suffix in ("toml", "yaml", "json"):
            if (folder / f"config.{suffix}").is_file():
                return folder / f"config.{suffix}"
    return None


def detect(folder: Path) -> list[Project]:
    """Every generator whose config file is in ``folder``."""
    found: list[Project] = []
    for name in ("mkdocs.yml", "mkdocs.yaml"):
        if (folder / name).is_file():
            found.append(Project(
                "mkdocs", "MkDocs", _title("mkdocs", folder / name), name, "mkdocs build",
                _mkdocs_output(folder / name),
                "overrides/main.html (with theme.custom_dir: overrides in mkdocs.yml)",
                ("/assets/**", "/favicon.ico")))
            break
    for suffix in ("js", "ts", "mjs"):
        if (folder / f"docusaurus.config.{suffix}").is_file():
            config = folder / f"docusaurus.config.{suffix}"
            found.append(Project(
                "docusaurus", "Docusaurus", _title("docusaurus", config), config.name,
                "npm run build", "build",
                "the <head> of each .md/.mdx page (it closes the page's HTML only: keep "
                "gated pages out of the public build)", ("/img/**", "/favicon.ico")))
            break
    conf = _sphinx_conf(folder)
    if conf is not None:
        source = conf.parent.relative_to(folder).as_posix()
        output = "_build/html" if source == "." else f"{source}/_build/html"
        found.append(Project(
            "sphinx", "Sphinx", _title("sphinx", conf), conf.relative_to(folder).as_posix(),
            f"sphinx-build -b html {source} {output}", output,
            f"{'' if source == '.' else source + '/'}_templates/layout.html (with "
            "templates_path = ['_templates'] in conf.py)", ("/_static/**", "/favicon.ico")))
    hugo = _hugo_config(folder)
    if hugo is not None:
        found.append(Project("hugo", "Hugo", _title("hugo", hugo), hugo.name, "hugo", "public",
                             "the <head> of layouts/_default/baseof.html",
                             ("/css/**", "/js/**", "/images/**", "/favicon.ico")))
    return [replace(project, base=_base(project.generator, folder / project.found))
            for project in found]


def choose(folder: Path, generator: str | None) -> Project:
    """The one project in ``folder`` (or the ``generator`` asked for); InitError otherwise."""
    found = detect(folder)
    if generator is not None:
        found = [project for project in found if project.generator == generator]
        if not found:
            raise InitError(f"no {generator} project in {folder}: "
                            f"{_LOOKED_FOR[generator]} not found")
    if not found:
        raise InitError(f"no docs project in {folder}: looked for "
                        + "; ".join(_LOOKED_FOR.values()))
    if len(found) > 1:
        raise InitError(f"{folder} holds more than one docs project ("
                        + ", ".join(f"{p.generator}: {p.found}" for p in found)
                        + "); choose one with --generator")
    return found[0]


_LOOKED_FOR = {
    "mkdocs": "mkdocs.yml",
    "docusaurus": "docusaurus.config.js, .ts or .mjs",
    "sphinx": "conf.py or docs/conf.py (Sphinx)",
    "hugo": "hugo.toml, .yaml or .json (or config.toml with content/)",
}


def _key(path: Path, algorithm: str) -> tuple[str, bool]:
    """A key pair at ``path`` (.pem and .pub.pem): kept when it is there, made otherwise.
    Returns its algorithm and whether it was made."""
    private, public = Path(f"{path}.pem"), Path(f"{path}.pub.pem")
    if private.exists():
        if not public.exists():
            raise InitError(f"{private} exists without {public}; move it away or make the "
                            "public half")
        try:
            return keys.alg_of(keys.load_private_key(private)), False
        except keys.KeyFileError as exc:
            raise InitError(str(exc)) from None
    keys.write_key_files(keys.generate_private_key(algorithm), path)
    return algorithm, True


def _handshake(method: str, keys_dir: str, login_alg: str, url: str) -> str:
    if method == "jwt":
        return f"""\
handshake:
  method: jwt
  jwt:
    # Where readers log in: your app's page that signs the reader's user object as a JWT
    # with {keys_dir}/login.pem and sends the browser to
    # {url}/_gateway/jwt-callback#<token>. Several show a chooser page.
    login_urls:
      - {{name: "Log in", url: "https://app.example.com/docs-login"}}
    public_keys: ["{keys_dir}/login.pub.pem"]     # verify tokens signed with login.pem
    algorithms: ["{login_alg}"]
"""
    if method == "shared_session":
        return """\
handshake:
  method: shared_session
  shared_session:
    # Your dashboard's endpoint that answers the reader's user object for its session
    # cookie (401 when logged out); only the cookies named here are sent to it.
    info_api_url: "https://app.example.com/api/docs-user"
    cookies: ["session"]
    login_url: "https://app.example.com/login"   # where anonymous readers are sent
    logout_url: null                             # your dashboard's logout, when it has one
"""
    return f"""\
handshake:
  method: oauth
  oauth:
    # Your OpenID provider: its discovery document fills in the endpoints. Register
    # {url}/_gateway/callback as the redirect URI of this client.
    issuer: "https://id.example.com"
    client_id: "docs"
    client_secret: null                          # null: a public client (PKCE only)
    scopes: ["openid", "email", "profile"]
"""


def config_text(project: Project, method: str, keys_dir: str, login_alg: str) -> str:
    """The commented ``gateway.yaml`` for ``project`` behind ``method``."""
    public = ", ".join(f'"{glob}"' for glob in project.public)
    name = json.dumps(project.title) if project.title else "null"
    return f"""\
# docs-gateway configuration for this {project.label} project (found {project.found}),
# written by docs-gateway init. Every key is described in the README's configuration
# reference; check this file with: docs-gateway check -c gateway.yaml
#
# This file holds the session secret: keep it out of version control, or replace the
# value below with "${{GATEWAY_SESSION_SECRET}}" and set that variable where the gateway
# runs. Relative paths are read from this file's folder.

server:
  listen: "{LISTEN}"
  # How readers reach the docs (https in production), with the path the site is built for.
  public_url: "{project.url}"

upstream:
  # The built site, served by the gateway itself: `{project.build}` writes it.
  root: "{project.output if project.output.startswith("/") else "./" + project.output}"

mode: authenticate                    # every page needs a login unless it is public

{_handshake(method, keys_dir, login_alg, project.url)}
session:
  secrets: ["{random_token(48)}"]

identity:
  assertion:                          # who is reading, signed, on every request to the docs
    private_key: "{keys_dir}/gateway.pem"
    algorithm: EdDSA

access:
  public: [{public}]
  rules: []                           # like {{path: "/admin/**", groups: ["admin"]}}
  denied: not_found                   # a closed page looks exactly like a missing one

brand:                                # the gateway's own pages (login chooser, errors)
  name: {name}{" " * max(1, 30 - len(name))}# your site's name
  logo: null                          # like "/assets/logo.svg"
"""


def next_steps(project: Project, method: str, keys_dir: str, config: str) -> list[str]:
    """Three steps from here to a gated site, for this generator and handshake."""
    build = (f"Build the site: `{project.build}` writes {project.output}/, which "
             f"{config} serves. To let a page choose its readers (`groups: [admin]` in its "
             f"metadata), add the README's {project.label} recipe (Page metadata) to "
             f"{project.recipe}.")
    if method == "jwt":
        login = (f"Connect your login: the page in handshake.jwt.login_urls signs the "
                 f"reader's user object with {keys_dir}/login.pem and sends the browser to "
                 f"{project.url}/_gateway/jwt-callback#<token>. Try one now: "
                 f"`docs-gateway token --key {keys_dir}/login.pem --sub you "
                 f"--host {LISTEN}`.")
    elif method == "shared_session":
        login = ("Connect your dashboard: set handshake.shared_session.info_api_url to the "
                 "endpoint that answers the reader's user object for its session cookie, "
                 "cookies to that cookie's name, and login_url to your login page.")
    else:
        login = ("Connect your provider: set handshake.oauth.issuer and client_id, and "
                 f"register {project.url}/_gateway/callback as the client's redirect URI.")
    run = (f"Check and start: `docs-gateway check -c {config}`, then "
           f"`docs-gateway run -c {config}` and open {project.url}/.")
    return [build, login, run]


def _write_config(path: Path, text: str, force: bool) -> None:
    # Mode 0600 from the start (it holds the session secret); never through a symlink.
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) \
        | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def init(folder: Path, *, method: str = "jwt", generator: str | None = None,
         keys_dir: str = "gateway-keys", force: bool = False) -> list[str]:
    """Write ``folder/gateway.yaml`` and the keys; return the lines to print."""
    if not folder.is_dir():
        raise InitError(f"{folder} is not a folder")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", keys_dir) or ".." in keys_dir.split("/"):
        raise InitError(f"--keys must be a folder inside the project, like gateway-keys, "
                        f"not {keys_dir!r}")
    project = choose(folder, generator)
    config_path = folder / "gateway.yaml"
    if (config_path.exists() or config_path.is_symlink()) and not force:
        raise InitError(f"{config_path} already exists; pass --force to replace it")
    key_folder = folder / keys_dir
    # The gateway serves every file of the built site: neither its config nor a key may be
    # among them (login.pem would let anyone sign in as anyone).
    served = (folder / project.output).resolve()
    if folder.resolve().is_relative_to(served):
        raise InitError(f"the site is built into {project.output}, which holds the project "
                        "folder: the gateway would serve its own config and keys; build it "
                        "into a folder of its own")
    if key_folder.resolve().is_relative_to(served):
        raise InitError(f"--keys must be outside {project.output}/, the folder the gateway "
                        f"serves, not {keys_dir!r}")
    names = ("login", "gateway") if method == "jwt" else ("gateway",)
    for name in names:
        # A public key alone (the dashboard's, which keeps its private half) or a link
        # where a key goes: a new pair would be written over it, or through it.
        private, public = key_folder / f"{name}.pem", key_folder / f"{name}.pub.pem"
        if (public.exists() or public.is_symlink()) and not private.exists():
            raise InitError(f"{public} exists without {private}; move it away, or keep "
                            "both halves there")
    try:
        key_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        made = []
        login_alg = "EdDSA"
        if method == "jwt":
            login_alg, fresh = _key(key_folder / "login", "EdDSA")
            made.append(("login", fresh))
        _, fresh = _key(key_folder / "gateway", "EdDSA")
        made.append(("gateway", fresh))
        ignore = key_folder / ".gitignore"
        if not ignore.exists() and not ignore.is_symlink():
            ignore.write_text("# Private keys stay out of version control.\n*.pem\n!*.pub.pem\n")
        output = folder / project.output
        created_output = not output.exists()
        output.mkdir(parents=True, exist_ok=True)
        _write_config(config_path, config_text(project, method, keys_dir, login_alg), force)
    except OSError as exc:
        raise InitError(f"cannot write {exc.filename or folder}: "
                        f"{exc.strerror or type(exc).__name__}") from None
    config = load_config(config_path)  # what was written must load; ConfigError otherwise
    lines = [f"Found a {project.label} project ({project.found}).",
             f"wrote {config_path} (mode 0600: it holds the session secret; "
             f"{method} login, serving {project.output}/)"]
    for name, fresh in made:
        lines.append(f"{'wrote' if fresh else 'kept'} {key_folder / name}.pem and "
                     f"{name}.pub.pem")
    if created_output:
        lines.append(f"made the empty folder {output} for the build")
    lines += [f"warning: {warning}" for warning in config.warnings]
    lines.append("Next:")
    name = "gateway.yaml" if folder.resolve() == Path.cwd().resolve() else str(config_path)
    lines += [f"  {index}. {step}"
              for index, step in enumerate(next_steps(project, method, keys_dir, name), 1)]
    return lines


def main(args: argparse.Namespace) -> int:
    """Run ``docs-gateway init``; a problem is one line, exit 1."""
    try:
        lines = init(Path(args.dir), method=args.method, generator=args.generator,
                     keys_dir=args.keys, force=args.force)
    except InitError as exc:
        from gateway.cli import CommandError

        raise CommandError(str(exc)) from None
    print("\n".join(lines))
    return 0
