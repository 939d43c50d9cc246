"""Sphinx configuration for the dify_runs documentation."""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import time
from importlib.metadata import version as _version
from typing import Any

import attrs
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.inspect import object_description

project = "dify_runs"
author = "dify_runs developers"
copyright = "2026, dify_runs developers"
release = _version("dify-runs")

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "requirements.txt"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "dify_runs"
html_static_path = ["_static"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Types only for documented parameters: attrs records list their fields once, not twice.
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "mixed"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

# Each example runs as a script does, with __name__ set (aiohttp's web.AppKey reads it);
# everything else, imports included, is the example's own.
doctest_global_setup = '__name__ = "__main__"'

# ``WorkflowRun``, not ``dify_runs._models.WorkflowRun``.
python_use_unqualified_type_names = True

# Defaults that are functions read as their import path, not their repr
# (``clock=time.monotonic``, not ``<built-in function monotonic>``).
_NAMED_DEFAULTS = {
    time.monotonic: "time.monotonic",
    time.time: "time.time",
    asyncio.sleep: "asyncio.sleep",
    random.random: "random.random",
}
_FACTORY_TEXT = {dict: "{}", list: "[]", tuple: "()"}


def _default_text(owner: Any, name: str, default: Any) -> str | None:
    """How a parameter's default should read, or None to keep Sphinx's rendering."""
    if default is attrs.NOTHING and attrs.has(owner):
        # attrs writes a factory default as NOTHING in the generated __init__.
        factory = attrs.fields_dict(owner)[name].default.factory
        return _FACTORY_TEXT.get(factory, f"{factory.__name__}()")
    try:
        return _NAMED_DEFAULTS.get(default)
    except TypeError:  # unhashable default
        return None


def _readable_signature(
    _app: Sphinx,
    _what: str,
    _name: str,
    obj: Any,
    _options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    if not signature:
        return None
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    for parameter in parameters:
        if parameter.default is inspect.Parameter.empty:
            continue
        text = _default_text(obj, parameter.name, parameter.default)
        if text is not None:
            shown = f"{parameter.name}={object_description(parameter.default)}"
            signature = signature.replace(shown, f"{parameter.name}={text}")
    return signature, return_annotation


_PRIVATE_MODULE = re.compile(r"\._[a-z]\w*(?=\.)")


def _public_titles(_app: Sphinx, doctree: nodes.document, _docname: str) -> None:
    """Link titles name the public path (``dify_runs.WorkflowRun``), not the private module."""
    for reference in doctree.findall(nodes.reference):
        title = reference.get("reftitle", "")
        if title.startswith("dify_runs."):
            reference["reftitle"] = _PRIVATE_MODULE.sub("", title)


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-signature", _readable_signature)
    app.connect("doctree-resolved", _public_titles)
