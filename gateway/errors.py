"""Error kinds that travel back to the one error boundary in boundary.py."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway turns into a response.

    ``code`` is a short machine-readable word for JSON bodies and logs;
    ``message`` is a sentence a reader can act on.
    """

    status = 500
    code = "internal"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or "")
        self.message = message
        if code is not None:
            self.code = code


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

    def __init__(self, message: str = "", *, return_to: str = "/", code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.return_to = return_to


class Denied(GatewayError):
    """The visitor is known but lacks a group the path needs."""

    status = 403
    code = "forbidden"


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
