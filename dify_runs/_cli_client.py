"""What the commands that talk to Dify share: the server and key, the client, input checks."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from . import _protocol
from ._client import DifyClient
from ._console import Origins
from ._errors import ConfigurationError

__all__ = ["check_ids", "client_for", "input_pairs", "origins_of"]


def origins_of(args: argparse.Namespace) -> Origins:
    """Where the base URL and the key come from; the command passes the client both."""
    if args.base_url:
        base_url, base_url_from = args.base_url, "--base-url"
    elif os.environ.get("DIFY_BASE_URL"):
        base_url = os.environ["DIFY_BASE_URL"]
        base_url_from = "the DIFY_BASE_URL environment variable"
    else:
        base_url, base_url_from = _protocol.DEFAULT_BASE_URL, "the default"
    api_key_from = (
        "--api-key" if args.api_key is not None else "the DIFY_API_KEY environment variable"
    )
    return Origins(base_url=base_url, base_url_from=base_url_from, api_key_from=api_key_from)


def client_for(args: argparse.Namespace, origins: Origins) -> DifyClient:
    """A client for the command's server and key.

    Raises:
        ConfigurationError: No key in ``--api-key`` nor in ``DIFY_API_KEY``.
    """
    key = args.api_key if args.api_key is not None else os.environ.get("DIFY_API_KEY", "")
    if not key.strip():
        raise ConfigurationError("no Dify API key: pass --api-key KEY or set DIFY_API_KEY")
    return DifyClient(key, base_url=origins.base_url, request_timeout=args.request_timeout)


def check_ids(run_ids: Sequence[str]) -> None:
    """Refuse a malformed id before anything is sent (a usage error)."""
    for run_id in run_ids:
        _protocol.canonical_run_id(run_id)


def input_pairs(items: Sequence[str], shape: str) -> dict[str, Any]:
    """The ``--input`` values as a mapping; ``shape`` names their form in the error."""
    found: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--input needs {shape}, got {item!r}")
        found[key] = value
    return found
