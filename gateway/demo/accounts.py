"""The demo's two readers, and the page where a visitor picks which one to be."""

from __future__ import annotations

import copy
import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Account:
    """A demo reader: who they are, and the Mintlify user object every login hands over."""

    username: str
    name: str
    role: str
    user: Mapping[str, Any] = field(repr=False)

    def user_object(self, api_url: str | None = None) -> dict[str, Any]:
        """A fresh copy of the user object (callers add claims to it); ``api_url`` is the
        reader's API server, for the docs' API playground."""
        user = copy.deepcopy(dict(self.user))
        if api_url is not None:
            user["apiPlaygroundInputs"]["server"] = {"url": api_url}
        return user


ACCOUNTS: dict[str, Account] = {
    "ada": Account("ada", "Ada Lovelace", "admin", {
        "sub": "ada",
        "groups": ["admin"],
        "content": {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com",
                    "plan": "Enterprise"},
        "apiPlaygroundInputs": {"header": {"Authorization": "Bearer demo-key-ada"}},
    }),
    "grace": Account("grace", "Grace Hopper", "reader", {
        "sub": "grace",
        "groups": ["reader"],
        "content": {"firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com",
                    "plan": "Team"},
        "apiPlaygroundInputs": {"header": {"Authorization": "Bearer demo-key-grace"}},
    }),
}


def find_account(username: object) -> Account | None:
    """The account a form field names, or None."""
    return ACCOUNTS.get(username) if isinstance(username, str) else None


_STYLE = """body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#1d2330;background:#f2f4f8}
main{max-width:26rem;margin:5rem auto;background:#fff;border:1px solid #e3e6ee;border-radius:12px;
padding:2rem}h1{font-size:1.4rem;margin:0 0 .25rem}p{color:#5b6477}form{margin:0}
button{display:block;width:100%;text-align:left;margin:.75rem 0;padding:.8rem 1rem;border:1px
solid #d5dae6;border-radius:8px;background:#fff;font:inherit;cursor:pointer}
button:hover{border-color:#3b5bdb}button small{display:block;color:#5b6477}
.tag{float:right;font-size:.75rem;background:#eef2ff;color:#3b5bdb;padding:.1rem .5rem;
border-radius:999px}"""


def picker_page(title: str, intro: str, action: str, hidden: Mapping[str, str]) -> str:
    """A page with one button per account; a click POSTs ``username`` plus ``hidden`` fields."""
    fields = "".join(
        f'<input type="hidden" name="{html.escape(name, quote=True)}" '
        f'value="{html.escape(value, quote=True)}">' for name, value in hidden.items())
    buttons = "".join(
        f'<button type="submit" name="username" value="{html.escape(account.username)}">'
        f'<span class="tag">{html.escape(account.role)}</span>'
        f"Log in as {html.escape(account.username)}"
        f"<small>{html.escape(account.name)}, groups: "
        f"{html.escape(', '.join(account.user['groups']))}</small></button>"
        for account in ACCOUNTS.values())
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body><main>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"
            f'<form method="post" action="{html.escape(action, quote=True)}">{fields}{buttons}'
            f"</form><p><small>Demo accounts: no password needed.</small></p></main></body></html>")
