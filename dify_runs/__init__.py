"""dify_runs: look up and wait for Dify workflow runs from async Python.

The data path, one module each: ``_transport`` (the aiohttp session layer and
the one request path every request takes) -> ``_protocol`` (pure: status,
headers, bytes -> record or error; ``_logs_protocol`` and ``_forms_protocol``
for logs and forms) -> ``_convert`` (cattrs: JSON -> attrs records in
``_models``). The operations compose them: ``_lookups``, ``_listings``,
``_start`` (starting and stopping runs), ``_forms`` (human-input forms) and the
waits: ``_scheduler`` (one poll scheduler per client), ``_listen`` and
``_streams`` (waits that follow a run's event stream) and ``_wait`` (what each
wait asks of it). Around them: ``_retry`` (the retry rule, pure) and
``_limits`` (the adaptive limit). ``_client`` is the facade, ``_sync`` its
generated blocking twin.
"""

import importlib.metadata

from ._client import DifyClient
from ._convert import converter
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    DifyAPIError,
    DifyConnectionError,
    DifyError,
    DifyTimeoutError,
    FormAlreadySubmittedError,
    FormExpiredError,
    InvalidIdError,
    PermissionDeniedError,
    RateLimitError,
    RunFailedError,
    RunNotFoundError,
    ServerError,
    UnexpectedResponseError,
    WaitTimeoutError,
    WrongEventLoopError,
)
from ._limits import AdaptiveLimiter
from ._models import (
    FormAction,
    FormInput,
    HumanInputForm,
    RunStatus,
    RunSummary,
    StartedRun,
    WorkflowRun,
)
from ._policy import PollPolicy
from ._retry import RetryBudget
from ._sync import SyncDifyClient
from ._wait import WaitResult, wait_for_run, wait_for_runs, watch_run

try:
    __version__ = importlib.metadata.version("dify-runs")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree
    __version__ = "0.0.0"

del importlib

__all__ = [
    "AdaptiveLimiter",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConfigurationError",
    "DifyAPIError",
    "DifyClient",
    "DifyConnectionError",
    "DifyError",
    "DifyTimeoutError",
    "FormAction",
    "FormAlreadySubmittedError",
    "FormExpiredError",
    "FormInput",
    "HumanInputForm",
    "InvalidIdError",
    "PermissionDeniedError",
    "PollPolicy",
    "RateLimitError",
    "RetryBudget",
    "RunFailedError",
    "RunNotFoundError",
    "RunStatus",
    "RunSummary",
    "ServerError",
    "StartedRun",
    "SyncDifyClient",
    "UnexpectedResponseError",
    "WaitResult",
    "WaitTimeoutError",
    "WorkflowRun",
    "WrongEventLoopError",
    "__version__",
    "converter",
    "wait_for_run",
    "wait_for_runs",
    "watch_run",
]
