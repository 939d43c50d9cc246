"""What each imitated Dify version does differently: one frozen record per version.

Handlers never ask which version they serve; they read the record's fields.
The values come from the answers of real servers (see the project's notes on
the Dify API and its recordings).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import attrs

ServerVersion = Literal["1.0.1", "1.12.1", "1.13.2", "1.14.2"]
"""The Dify versions the simulator imitates."""

DEFAULT_VERSION: ServerVersion = "1.13.2"

# Dify's NotWorkflowAppError text (api/controllers/service_api/app/error.py).
_NOT_WORKFLOW_APP = "Please check if your app mode matches the right API route."


@attrs.frozen(kw_only=True)
class Quirks:
    """How one Dify version answers, as data the handlers consult.

    Attributes:
        name: The version, as sent in ``X-Version``.
        missing_run: An unknown run's GET answer: ``"nulls"`` (200, every field
            null), ``"nulls_zero_counters"`` (200, nulls but ``total_steps`` and
            ``total_tokens`` 0) or ``"not_found"`` (404 ``not_found``).
        app_scoped: Runs of another app are hidden from a key.
        outputs_as_object: GET sends ``outputs`` as an object, not a JSON string.
        null_outputs_for: Statuses whose GET ``outputs`` is ``null``.
        rfc2822_dates: GET sends ``created_at``/``finished_at`` as RFC 2822 strings.
        round_elapsed: ``elapsed_time`` is rounded to 6 digits.
        stop_persisted: A stopped run reads ``stopped``; otherwise ``running`` forever.
        paused_exists: Runs can pause (Human Input); otherwise ``pause_at`` is ignored.
        paused_ends_start: A paused run ends the start stream with
            ``workflow_paused`` and answers a blocking start; otherwise both hang.
        status_in_4xx: Error bodies of 4xx answers carry ``status``.
        status_in_5xx: Error bodies of 5xx answers carry ``status``.
        blocking_failed_outputs_null: A blocking start's ``data.outputs`` is
            ``null`` for a failed run (otherwise ``{}``).
        stream_begins_with_ping: A start stream opens with ``event: ping``.
        started_sequence_number: ``workflow_started`` data carries ``sequence_number``.
        started_reason: ``workflow_started`` data's ``reason``, or None for no key.
        chatflow_reads_runs: A chatflow (advanced-chat) key may GET runs.
        events_route: ``GET /workflow/{id}/events`` exists.
        form_route: ``GET`` and ``POST /form/human_input/{token}`` exist (a
            paused run's forms are read and answered through the API).
        log_row_at_start: A run's workflow-log row exists from its start
            (``running``); otherwise only once it ended.
        log_end_user_type: ``created_by_end_user.type`` in log rows.
        log_row_details: Log rows carry ``details`` and ``workflow_run.triggered_from``.
        log_query_errors: How the logs route words a bad query: ``"pydantic"``
            (Dify's ``WorkflowLogQuery`` model: the ``ValidationError`` text, every
            problem) or ``"reqparse"`` (flask-restful: the first problem, its
            parameter in ``params``).
        server_header: ``Server`` header value, or None to leave the default.
        not_workflow_app_message: The 400 ``not_workflow_app`` message.
    """

    name: str
    missing_run: Literal["nulls", "nulls_zero_counters", "not_found"]
    app_scoped: bool
    outputs_as_object: bool
    null_outputs_for: frozenset[str]
    rfc2822_dates: bool
    round_elapsed: bool
    stop_persisted: bool
    paused_exists: bool
    paused_ends_start: bool
    status_in_4xx: bool
    status_in_5xx: bool
    blocking_failed_outputs_null: bool
    stream_begins_with_ping: bool
    started_sequence_number: bool
    started_reason: str | None
    chatflow_reads_runs: bool
    events_route: bool
    form_route: bool
    log_row_at_start: bool
    log_end_user_type: str
    log_row_details: bool
    log_query_errors: Literal["pydantic", "reqparse"]
    server_header: str | None
    not_workflow_app_message: str = _NOT_WORKFLOW_APP


_V1_0_1 = Quirks(
    name="1.0.1",
    missing_run="nulls_zero_counters",
    app_scoped=False,
    outputs_as_object=False,
    null_outputs_for=frozenset(),
    rfc2822_dates=True,
    round_elapsed=False,
    stop_persisted=True,
    paused_exists=False,
    paused_ends_start=False,
    status_in_4xx=True,
    status_in_5xx=False,
    blocking_failed_outputs_null=True,
    stream_begins_with_ping=False,
    started_sequence_number=True,
    started_reason=None,
    chatflow_reads_runs=False,
    events_route=False,
    form_route=False,
    log_row_at_start=False,
    log_end_user_type="service_api",
    log_row_details=False,
    log_query_errors="reqparse",
    server_header="gunicorn",
)
_V1_12_1 = attrs.evolve(
    _V1_0_1,
    name="1.12.1",
    missing_run="nulls",
    app_scoped=True,
    null_outputs_for=frozenset({"failed", "paused"}),
    rfc2822_dates=False,
    round_elapsed=True,
    stop_persisted=False,
    paused_exists=True,
    status_in_5xx=True,
    blocking_failed_outputs_null=False,
    started_sequence_number=False,
    chatflow_reads_runs=True,
    log_row_at_start=True,
    log_end_user_type="service-api",
    log_row_details=True,
    log_query_errors="pydantic",
)
_V1_13_2 = attrs.evolve(
    _V1_12_1,
    name="1.13.2",
    missing_run="not_found",
    outputs_as_object=True,
    null_outputs_for=frozenset(),
    paused_ends_start=True,
    stream_begins_with_ping=True,
    started_reason="initial",
)
_V1_14_2 = attrs.evolve(
    _V1_13_2, name="1.14.2", events_route=True, form_route=True, server_header=None
)

VERSIONS: Mapping[str, Quirks] = MappingProxyType(
    {quirks.name: quirks for quirks in (_V1_0_1, _V1_12_1, _V1_13_2, _V1_14_2)}
)
"""The imitated versions, oldest first."""
