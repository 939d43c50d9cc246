"""``python -m dify_runs``: the dify-runs command."""

from ._cli import run

run()
