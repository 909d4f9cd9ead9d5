"""A real Material for MkDocs site for the personalised-page rows (j to m).

Built once per run with ``python3 -m mkdocs build`` into ``material/`` inside the folder
the origin nginx serves. Eight pages in the navigation, two of them under ``/admin/``
(closed to the benchmark's reader by a rule, so the gateway's navigation filtering takes
their entries out of every page). One page comes twice, alike but for the gateway's
markers: ``WORKSPACE`` holds one element gated to ``admin`` and one field filled from the
reader's user object; ``WORKSPACE_PLAIN`` holds the same text with neither.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError

PREFIX = "/material/"
WORKSPACE = PREFIX + "guide/workspace/"
WORKSPACE_PLAIN = PREFIX + "guide/workspace-plain/"
# The rule that closes the admin pages to every reader outside the admin group.
ADMIN_RULE = (PREFIX + "admin/**", ("admin",))
# What the reader sees in place of the field, and what only admins see.
FIELD_PLACEHOLDER = "reader"
GATED_TEXT = "Rotate the signing keys of every environment"

MKDOCS_YML = """\
site_name: Product docs
site_url: http://docs.example/material/
theme:
  name: material
  features:
    - navigation.footer
    - navigation.path
    - navigation.sections
    - content.code.copy
markdown_extensions:
  - admonition
  - attr_list
  - md_in_html
  - tables
  - toc:
      permalink: true
  - pymdownx.highlight
  - pymdownx.superfences
plugins:
  - search
nav:
  - Home: index.md
  - Guide:
      - Install: guide/install.md
      - Configure: guide/configure.md
      - Your workspace: guide/workspace.md
      - Your workspace (unmarked): guide/workspace-plain.md
  - Reference:
      - API: reference/api.md
  - Admin:
      - Users: admin/users.md
      - Audit log: admin/audit.md
"""

_FILLER = ("The workspace keeps your projects, their environments and the people who work "
           "on them in one place. Each project has its own settings, its own deploy keys and "
           "its own history of changes, and every change is recorded with who made it and "
           "when, so that a team can always tell how a setting came to be what it is.\n\n")

# {field} and {gated_open} are the only differences between the two versions.
WORKSPACE_MD = """\
# Your workspace

Welcome back, {field}. This page walks through the workspace: projects, environments,
members and the settings that tie them together.

{filler}
## Projects

{filler}
| Setting | Default | Meaning |
|---|---|---|
| `name` | (required) | the project's name, shown in the dashboard |
| `region` | `eu-west` | where its environments run |
| `retention` | `30d` | how long deploy logs are kept |
| `members` | the creator | who may change the project |

{gated_open}
!!! warning "Operators"

    {gated_text} once a quarter, and after anyone with access leaves the team.
    The rotation is described step by step in the operators' handbook.

</div>

## Environments

{filler}
```yaml
project: shop
environments:
  - name: staging
    region: eu-west
  - name: production
    region: eu-west
    approval: required
```

{filler}
## Members

{filler}
!!! tip

    Invite members by e-mail from the dashboard; they join with the role you choose.

{filler}
"""

OTHER_PAGES = {
    "index.md": "# Product docs\n\nStart with the [install guide](guide/install.md).\n\n"
                + _FILLER,
    "guide/install.md": "# Install\n\n" + _FILLER + "```sh\npip install product\n```\n",
    "guide/configure.md": "# Configure\n\n" + _FILLER * 2,
    "reference/api.md": "# API\n\n" + _FILLER + "## Endpoints\n\n" + _FILLER,
    "admin/users.md": "# Users\n\nManaging every account. " + _FILLER,
    "admin/audit.md": "# Audit log\n\nWho changed what. " + _FILLER,
}


@dataclass(frozen=True)
class Expect:
    """A row's page in the Material part: its path, and what a right answer holds."""

    path: str
    min_bytes: int
    has: tuple[bytes, ...] = ()
    lacks: tuple[bytes, ...] = ()

    def problem(self, body: bytes) -> str | None:
        """What is wrong with an answer's body, or None."""
        if len(body) < self.min_bytes:
            return f"{len(body)} bytes, expected at least {self.min_bytes}"
        for text in self.has:
            if text not in body:
                return f"{text.decode()!r} missing"
        for text in self.lacks:
            if text in body:
                return f"{text.decode()!r} present"
        return None


@dataclass(frozen=True)
class MaterialSite:
    """The built site: where it lies and the sizes of the two versions of the page."""

    root: Path
    workspace_bytes: int
    plain_bytes: int


def rewritten(site: MaterialSite, first_name: str) -> Expect:
    """The marked page as the reader gets it: the field filled, the gated element and the
    admin pages' navigation entries gone (the gateway also adds its script)."""
    return Expect(WORKSPACE, site.workspace_bytes // 2, has=(f">{first_name}<".encode(),),
                  lacks=(GATED_TEXT.encode(), b"admin/users/", b"admin/audit/"))


def unmarked(site: MaterialSite) -> Expect:
    """The unmarked page, whole: its navigation and the once-gated text all there."""
    return Expect(WORKSPACE_PLAIN, site.plain_bytes,
                  has=(GATED_TEXT.encode(), b"admin/users/", b"admin/audit/"))


def workspace_markdown(marked: bool) -> str:
    """The page with the gateway's markers (a gated element, a field) or without them."""
    if marked:
        field = f'<span data-gateway-field="content.firstName">{FIELD_PLACEHOLDER}</span>'
        gated_open = '<div data-gateway-groups="admin" markdown>'
    else:
        field = f"<span>{FIELD_PLACEHOLDER}</span>"
        gated_open = "<div markdown>"
    return WORKSPACE_MD.format(field=field, gated_open=gated_open, gated_text=GATED_TEXT,
                               filler=_FILLER)


def build(source: Path, site_root: Path) -> MaterialSite:
    """Write the MkDocs project under ``source`` and build it into ``site_root/material``."""
    files = {**OTHER_PAGES, "guide/workspace.md": workspace_markdown(True),
             "guide/workspace-plain.md": workspace_markdown(False)}
    source.mkdir(parents=True, exist_ok=True)
    (source / "mkdocs.yml").write_text(MKDOCS_YML)
    for name, text in files.items():
        path = source / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    out = site_root / PREFIX.strip("/")
    try:
        done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-f",
                               str(source / "mkdocs.yml"), "-d", str(out)], cwd=source,
                              capture_output=True, text=True, timeout=180, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError("mkdocs build did not finish in 180 s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchError("building the Material for MkDocs site failed (mkdocs and "
                         "mkdocs-material come with the test extra: pip install -e '.[test]'):"
                         "\n  " + "\n  ".join(tail))
    for path in [out, *out.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return MaterialSite(out, _size(site_root, WORKSPACE), _size(site_root, WORKSPACE_PLAIN))


def _size(site_root: Path, page: str) -> int:
    return (site_root / page.strip("/") / "index.html").stat().st_size
