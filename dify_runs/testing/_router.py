"""Dify's router as the fake has it: the routes a version serves, their names, its own errors."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractRoute

from ._http import ROUTE, error_answer, router_not_found
from ._versions import Quirks

_METHOD_NOT_ALLOWED = "The method is not allowed for the requested URL."
_FORM_ROUTE = "/v1/form/human_input/{form_token}"


def routes(quirks: Quirks) -> list[tuple[str, str, str]]:
    """The ``(method, path, name)`` of each route the version serves, in matching order."""
    table = [
        ("GET", "/v1/workflows/run/{run_id:[^/]+}", "get_run"),
        ("POST", "/v1/workflows/run", "start_run"),
        ("POST", "/v1/workflows/{workflow_id}/run", "start_run"),
        ("POST", "/v1/workflows/tasks/{task_id}/stop", "stop"),
        ("GET", "/v1/parameters", "parameters"),
        ("GET", "/v1/workflows/logs", "logs"),
    ]
    if quirks.events_route:
        table.append(("GET", "/v1/workflow/{run_id}/events", "events"))
    if quirks.form_route:
        table += [("GET", _FORM_ROUTE, "form"), ("POST", _FORM_ROUTE, "form")]
    return table


class Router:
    """Names the routes (``get_run``, ``start_run``...) and answers what Dify's router refuses.

    Args:
        quirks: The version's record: which routes exist, how errors look.
    """

    def __init__(self, quirks: Quirks) -> None:
        self._quirks = quirks
        self._names: dict[AbstractRoute, str] = {}

    def add_routes(self, app: web.Application, handlers: Mapping[str, Handler]) -> None:
        """Add the version's routes to ``app``, each to the handler of its name."""
        for method, path, name in routes(self._quirks):
            self._names[app.router.add_route(method, path, handlers[name])] = name

    def name_of(self, request: web.Request) -> str:
        """The route's name; ``other`` for what Dify's router would not match."""
        match = request.match_info
        if match.http_exception is not None:
            return "other"
        # Dify's WSGI server decodes %2F before routing: such an id is no route at all.
        if any("/" in value for value in match.values()):
            return "other"
        return self._names.get(match.route, "other")

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The router's own answers: JSON 405 for a wrong method, HTML 404 for unknown paths."""
        if isinstance(request.match_info.http_exception, web.HTTPMethodNotAllowed):
            return error_answer(self._quirks, 405, "method_not_allowed", _METHOD_NOT_ALLOWED)
        if request[ROUTE] == "other":
            return router_not_found()
        return await handler(request)
