"""What every part of the fake server shares: request keys and Dify-shaped answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ._versions import Quirks

ROUTE = web.RequestKey("dify_runs_route", str)
"""The route's name: ``get_run``, ``start_run``, ``stop``, ``parameters``, ``events``,
``logs``, or ``other`` for what the router does not know."""
APP_KEY = web.RequestKey("dify_runs_app_key", str)
"""The authenticated app's key (set by the auth middleware)."""
FAULT = web.RequestKey("dify_runs_fault", str)
"""The kind of the fault injected into this request."""
CUT = web.RequestKey("dify_runs_cut", bool)
"""The connection was cut: the client got no status."""
QUEUED = web.RequestKey("dify_runs_queued", float)
"""Seconds the request waited in the server's queue."""
LOG_NOW: web.RequestKey[Callable[[int], None]] = web.RequestKey("dify_runs_log_now")
"""Log the request at once with this status (for requests the client may outlive)."""

ROUTER_NOT_FOUND_PAGE = (
    "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n"
    "<h1>Not Found</h1>\n<p>The requested URL was not found on the server.</p>\n"
)


def json_answer(
    quirks: Quirks, payload: Any, status: int = 200, *, charset: bool = False
) -> web.Response:
    """Dify's JSON answer: ``X-Version``/``X-Env`` headers, charset only off the GET route."""
    content_type = "application/json; charset=utf-8" if charset else "application/json"
    headers = {"Content-Type": content_type, "X-Version": quirks.name, "X-Env": "TESTING"}
    if quirks.server_header is not None:
        headers["Server"] = quirks.server_header
    return web.Response(body=json.dumps(payload).encode(), status=status, headers=headers)


def error_answer(
    quirks: Quirks, status: int, code: str, message: str, *, params: str | None = None
) -> web.Response:
    """Dify's error body, with ``params`` if given and ``status`` where the version sends it."""
    body: dict[str, Any] = {"code": code, "message": message}
    if params is not None:
        body["params"] = params
    if quirks.status_in_5xx if status >= 500 else quirks.status_in_4xx:
        body["status"] = status
    return json_answer(quirks, body, status)


def router_not_found() -> web.Response:
    """The HTML 404 of Dify's router (Flask/werkzeug), for paths it does not know."""
    return web.Response(text=ROUTER_NOT_FOUND_PAGE, status=404, content_type="text/html")


def proxy_page(status: int, title: str) -> web.Response:
    """An HTML error page as a reverse proxy in front of Dify sends it."""
    page = f"<html><body><h1>{status} {title}</h1></body></html>"
    return web.Response(text=page, status=status, content_type="text/html")
