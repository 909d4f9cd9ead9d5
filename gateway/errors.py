"""Error kinds that travel back to the one error boundary in boundary.py."""

from __future__ import annotations

#: Items and characters a value in a log line is cut to.
SHOWN_ITEMS = 10
SHOWN_CHARS = 100


def shown(value: object) -> str:
    """A value received from outside (a claim, a header) as a log line shows it: its Python
    form (quotes tell a string from a list), cut short. Never pass a secret or a token."""
    if isinstance(value, list | tuple) and len(value) > SHOWN_ITEMS:
        value = [*value[:SHOWN_ITEMS], "..."]
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def listed(items: tuple[str, ...] | list[str] | frozenset[str], empty: str = "none") -> str:
    """Names (groups) as a log line shows them: comma-separated, the first few."""
    names = sorted(items) if isinstance(items, frozenset) else list(items)
    if not names:
        return empty
    more = f", ... ({len(names)} in all)" if len(names) > SHOWN_ITEMS else ""
    return ", ".join(names[:SHOWN_ITEMS]) + more


class GatewayError(Exception):
    """Base of every error the gateway turns into a response.

    ``code`` is a short machine-readable word for JSON bodies and logs;
    ``message`` is a sentence a reader can act on. ``expected`` and ``received`` say, for
    the log line only, what a check wanted and what it got (never a secret, a token or a
    cookie): an audience, a group list, a header's presence.
    """

    status = 500
    code = "internal"
    expected: str | None = None
    received: str | None = None

    def __init__(self, message: str = "", *, code: str | None = None,
                 expected: str | None = None, received: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or "")
        self.message = message
        if code is not None:
            self.code = code
        if expected is not None:
            self.expected = expected
        if received is not None:
            self.received = received

    def log_fields(self) -> dict[str, str]:
        """``reason``, and ``expected`` and ``received`` when known, for a log line."""
        fields = {"reason": self.code}
        if self.expected is not None:
            fields["expected"] = self.expected
        if self.received is not None:
            fields["received"] = self.received
        return fields


class BadRequest(GatewayError):
    """The request cannot be served as sent."""

    status = 400
    code = "bad_request"


class CrossSite(GatewayError):
    """A state-changing request from another site's page (a logout POST, a WebSocket
    upgrade): refused, as cross-site request forgery or WebSocket hijacking."""

    status = 403
    code = "cross_site"


class NeedsLogin(GatewayError):
    """The path needs a logged-in visitor and there is none."""

    status = 401
    code = "unauthenticated"

    def __init__(self, message: str = "", *, return_to: str = "/", code: str | None = None,
                 expected: str | None = None, received: str | None = None) -> None:
        super().__init__(message, code=code, expected=expected, received=received)
        self.return_to = return_to


class Denied(GatewayError):
    """The visitor is known but lacks a group the path needs (``code``: why, for the log
    and the metric; the reader's answer is the same whatever it is)."""

    status = 403
    code = "groups"


class NotFound(GatewayError):
    """Nothing is here (the gateway's own page; a denial with ``access.denied: not_found``
    shows the site's own missing page where it has one)."""

    status = 404
    code = "not_found"


class TooManyRequests(GatewayError):
    """A client sent more requests than its limit allows."""

    status = 429
    code = "rate_limited"


class HandshakeFailed(GatewayError):
    """A login could not be completed (bad token, state, code, user object...)."""

    status = 400
    code = "login_failed"


class UpstreamError(GatewayError):
    """The docs upstream could not be reached."""

    status = 502
    code = "bad_gateway"


class UpstreamTimeout(UpstreamError):
    """The docs upstream did not answer in time."""

    status = 504
    code = "gateway_timeout"


class Unavailable(GatewayError):
    """A dependency (session store, Info API, IdP) is down; try again shortly."""

    status = 503
    code = "unavailable"


class ConfigError(Exception):
    """One or more problems in the configuration, one ``key.path: message`` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
