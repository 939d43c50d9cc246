"""Authentication as Dify does it: the app key, then whether the app's mode fits the route."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._apps import SimulatedApp
from ._http import APP_KEY, ROUTE, error_answer
from ._versions import Quirks

NO_BEARER = "Authorization header must be provided and start with 'Bearer'"
WRONG_SCHEME = "Authorization scheme must be 'Bearer'"
INVALID_TOKEN = "Access token is invalid"  # noqa: S105 - a message, not a secret

_WORKFLOW = frozenset({"workflow"})
_WORKFLOW_AND_CHATFLOW = frozenset({"workflow", "advanced-chat"})


def allowed_modes(quirks: Quirks) -> dict[str, frozenset[str]]:
    """The app modes each route serves, by route name (routes not listed serve every mode)."""
    return {
        "get_run": _WORKFLOW_AND_CHATFLOW if quirks.chatflow_reads_runs else _WORKFLOW,
        "start_run": _WORKFLOW,
        "stop": _WORKFLOW,
        "events": _WORKFLOW_AND_CHATFLOW,
    }


def token_problem(header: str | None) -> tuple[str | None, str | None]:
    """Read an ``Authorization`` header: (token, None) or (None, Dify's 401 message)."""
    # Servers strip trailing spaces, so "Bearer " arrives as "Bearer": no token at all.
    header = None if header is None else header.strip()
    if not header or " " not in header:
        return None, NO_BEARER
    scheme, token = header.split(None, 1)
    if scheme.lower() != "bearer":
        return None, WRONG_SCHEME
    return token.strip(), None


def auth_middleware(apps: Mapping[str, SimulatedApp], quirks: Quirks) -> Middleware:
    """The aiohttp middleware that admits known keys to the routes their app's mode serves.

    Args:
        apps: The apps, by key (read at each request, so apps added later count).
        quirks: The version's record.
    """
    modes_of = allowed_modes(quirks)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request[ROUTE] == "other":
            return await handler(request)
        token, problem = token_problem(request.headers.get("Authorization"))
        app = apps.get(token) if token is not None else None
        if app is None:
            return error_answer(quirks, 401, "unauthorized", problem or INVALID_TOKEN)
        modes = modes_of.get(request[ROUTE])
        if modes is not None and app.mode not in modes:
            return error_answer(quirks, 400, "not_workflow_app", quirks.not_workflow_app_message)
        request[APP_KEY] = app.key
        return await handler(request)

    return authenticate
