"""Pages whose markup a browser reads in surprising ways, with gated elements in them, and
the script that asks a browser which marked text it puts inside a gated element; random
pages made of such markup."""

from __future__ import annotations

import random
import re

# "~" stands for a gating attribute that excludes the reader.
TRICKY = [
    '<div~><div~></div><a~></div> S1Z',
    '<div~><td ><div~></td><div><div></div></div></div> S2Z',
    '<div~><select></div> S3Z',
    '<div~><svg><div~></div><xmp></div> S4Z',
    '<math data-gateway-authenticated><div~></math> S5Z',
    '<div~><p><div~></p><div></div></div> S6Z',
    '<div~><font~></div><template/></font></template> S7Z',
    '<div~><noscript></div> S8Z',
    '<div~><svg><![CDATA[</section></div> S9Z',
    ' S10Z <h2 title="a><iframe / title=a"b><body data-gateway-authenticated>',
    '<div~><script><!--<script></script></div> S11Z',
    '<table><tr><td~>S12Z<td>open</table>',
    '<ul><li~>S13Z<li>open</ul>',
    '<select><option~>S14Z<option>open</select>',
    '<p>x<span~>S15Z<div>block</div>',
]
TRICKY = [page.replace("~", " data-gateway-groups=admin") for page in TRICKY]

DOM_GATED = """(doc) => {
  const root = doc === null ? document : new DOMParser().parseFromString(doc, "text/html");
  const found = new Set();
  const walk = (node) => {
    for (const el of node.querySelectorAll("*")) {
      if (el.tagName === "TEMPLATE") walk(el.content);
      if (el.hasAttribute("data-gateway-groups") || el.hasAttribute("data-gateway-authenticated"))
        for (const m of (el.textContent + el.outerHTML).matchAll(/S\\d+Z/g)) found.add(m[0]);
    }
  };
  walk(root);
  return [...found];
}"""


MARK = re.compile(r"S\d+Z")
GATE = " data-gateway-groups=admin"
# Pieces of the random pages: "~" stands for the gating attribute.
PIECES = (
    "<div~>", "<span~>", "<p~>", "<td~>", "<li~>", "<option~>", "<table~>", "<a~>", "<b~>",
    "<font~>", "<svg~>", "<math~>", "<template~>", "<section~>", "<tr~>", "<select~>",
    "<div>", "</div>", "<p>", "</p>", "<table>", "<tr>", "<td>", "</td>", "</tr>", "</table>",
    "<select>", "</select>", "<option>", "<svg>", "</svg>", "<math>", "</math>", "<mi>",
    "<template>", "</template>", "<noscript>", "</noscript>", "<script>", "</script>",
    "<style>", "</style>", "<xmp>", "</xmp>", "<textarea>", "</textarea>", "<!--", "-->",
    "<![CDATA[", "]]>", "<b>", "</b>", "<i>", "</i>", "<a href=x>", "</a>", "<ul>", "<li>",
    "</ul>", "<h2 title=\"", "\">", "<title>", "</title>", "<iframe>", "</iframe>",
    "<form>", "</form>", "<foreignObject>", "</foreignObject>", "<desc>", "<br/>", "<img>",
    "</span>", "</section>", "</li>", "</option>", "</font>", "<body~>", "<frameset>",
)
VISIBLE = """(doc) => {
  const root = new DOMParser().parseFromString(doc, "text/html");
  return [...new Set(root.documentElement.outerHTML.match(/S\\d+Z/g) || [])];
}"""


def random_pages(count: int, seed: int = 21) -> list[str]:
    """Pages of random pieces, each with gated elements and marked text."""
    rng = random.Random(seed)
    pages: list[str] = []
    while len(pages) < count:
        parts: list[str] = []
        mark = 0
        for _ in range(rng.randint(4, 24)):
            if rng.random() < 0.35:
                mark += 1
                parts.append(f" S{mark}Z ")
            else:
                parts.append(rng.choice(PIECES).replace("~", GATE))
        page = "".join(parts)
        if GATE in page and MARK.search(page):
            pages.append(page)
    return pages
