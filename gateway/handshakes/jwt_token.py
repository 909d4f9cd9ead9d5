"""``docs-gateway token``: print a signed login token, for testing a ``jwt`` setup."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import jwt

from gateway.config.model import JwtConfig, format_duration
from gateway.crypto import random_token
from gateway.keys import KeyFileError, alg_of, kid_of, load_private_key


class TokenCommandError(Exception):
    """A problem with the command's arguments; printed as one line."""


def build_payload(*, sub: str | None, host: str | None, groups: list[str],
                  content: dict[str, Any], ttl: float, now: float | None = None,
                  state: str | None = None) -> dict[str, Any]:
    """The user object plus ``iat``, ``exp``, ``jti`` and (when given) ``host`` and ``state``."""
    now = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"iat": now, "exp": now + max(1, round(ttl)), "jti": random_token(12)}
    if sub is not None:
        payload["sub"] = sub
    if host is not None:
        payload["host"] = host
    if state is not None:
        payload["state"] = state
    payload["groups"] = list(groups)
    payload["content"] = dict(content)
    return payload


def sign(payload: dict[str, Any], *, key_path: str | None, secret: str | None = None,
         alg: str | None = None) -> str:
    """Sign with a PEM private key (its algorithm, kid = thumbprint) or an HS secret."""
    if secret is not None:
        alg = alg or "HS256"
        if not alg.startswith("HS"):
            raise TokenCommandError(f"a secret signs HS256, HS384 or HS512, not {alg}")
        return jwt.encode(payload, secret, algorithm=alg)
    if key_path is None:
        raise TokenCommandError("give --key PEM (a private key) to sign with")
    try:
        key = load_private_key(key_path)
    except KeyFileError as exc:
        raise TokenCommandError(str(exc)) from None
    natural = alg_of(key)
    alg = alg or natural
    if alg != natural and not (natural == "RS256" and alg in ("RS384", "RS512", "PS256")):
        raise TokenCommandError(f"{key_path}: a {natural} key cannot sign {alg}")
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid_of(key)})


def main(args: argparse.Namespace) -> int:
    """Print one token to stdout; a one-line error on stderr (exit 1) otherwise."""
    payload = build_payload(sub=args.sub, host=args.host, groups=list(args.groups or []),
                            content=dict(args.content or {}), ttl=float(args.ttl),
                            state=getattr(args, "state", None))
    try:
        token = sign(payload, key_path=getattr(args, "key", None),
                     secret=getattr(args, "secret", None), alg=getattr(args, "alg", None))
    except TokenCommandError as exc:
        print(f"docs-gateway: {exc}", file=sys.stderr)
        return 1
    content = payload["content"]
    if args.sub is None and not content.get("id") and not content.get("email"):
        print("docs-gateway: warning: no --sub and no content id or email: the gateway will "
              "find no subject unless user.subject names another field", file=sys.stderr)
    if args.ttl > JwtConfig.max_age:
        print("docs-gateway: warning: the token lives longer than the default "
              f"handshake.jwt.max_age ({format_duration(JwtConfig.max_age)}); such a gateway "
              "refuses it as too old", file=sys.stderr)
    print(token)
    return 0
