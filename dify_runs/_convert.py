"""The cattrs converter between Dify's JSON and the attrs records.

Real servers disagree with the documentation (see the docs' "Real-server
quirks" page); the hooks here accept every shape seen:

* ``inputs`` and ``outputs`` as an object, a string holding a JSON object, or
  null (read as ``{}``);
* ``created_at`` and ``finished_at`` as Unix seconds (1.12 and newer) or as RFC
  2822 date strings (1.0.x), always returned as timezone-aware UTC datetimes;
* ``total_steps``, ``total_tokens`` and ``elapsed_time`` as null (read as 0);
* a ``status`` this library does not know (kept as it is, not terminal);
* extra fields (ignored);
* a Human Input form as a paused answer's ``reasons``, a ``human_input_required``
  event or the form's own GET send it (``actions`` or ``user_actions``), each
  field's default read from ``resolved_default_values`` when Dify resolved it.

Everything else is strict: a number where a string belongs, a boolean where a
number belongs, or a string that is not a date raises, and
:func:`structure_run` turns that into an error that names the field paths.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, get_origin

import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.v import format_exception

from ._models import (
    FormAction,
    FormInput,
    HumanInputForm,
    RunStatus,
    RunSummary,
    StartedRun,
    WorkflowRun,
)

__all__ = ["converter", "default_text", "make_converter", "problems"]


# The hooks test the usual type first (``type(x) is int`` also rules out a bool):
# every record of every poll goes through them.


def _structure_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _structure_int(value: Any, _: type) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


def _int_or_zero(value: Any, _: type) -> int:
    if type(value) is int:
        return value
    return 0 if value is None else _structure_int(value, int)


def _float_or_zero(value: Any, _: type) -> float:
    return 0.0 if value is None else _structure_float(value, float)


#: Known statuses by wire value: a dict lookup instead of an enum call for the usual ones.
_STATUSES = {status.value: status for status in RunStatus}


def _structure_status(value: Any, _: type) -> RunStatus:
    status = _STATUSES.get(value) if type(value) is str else None
    if status is not None:
        return status
    if not isinstance(value, str):
        raise TypeError(f"expected a status string, got {type(value).__name__}")
    return RunStatus(value)


def _structure_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, bool):
        raise TypeError("expected a timestamp, got bool")
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value, timezone.utc)  # positional: faster
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"timestamp out of range: {value!r}") from exc
    if isinstance(value, str):
        return _parse_date_string(value)
    raise TypeError(f"expected a timestamp, got {type(value).__name__}")


def _datetime_or_none(value: Any, _: type) -> datetime | None:
    # Its own hook: cattrs' generic Optional hook looks the inner hook up on every call.
    return None if value is None else _structure_datetime(value, datetime)


def _str_or_none(value: Any, _: type) -> str | None:
    return None if value is None else _structure_str(value, str)


def _parse_date_string(value: str) -> datetime:
    try:
        parsed = parsedate_to_datetime(value)  # Dify 1.0.x: "Sat, 28 Nov 2026 17:02:03 -0000"
    except (TypeError, ValueError, IndexError):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not a date: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _unstructure_datetime(value: datetime) -> int | float:
    stamp = value.timestamp()
    return int(stamp) if stamp.is_integer() else stamp


def _structure_json_object(value: Any, _: type) -> dict[str, Any]:
    if type(value) is dict:
        return value
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except ValueError as exc:
            raise ValueError(f"string does not hold JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _usual_object(value: Any) -> dict[str, Any] | None:
    """An ``inputs`` or ``outputs`` value as :func:`_structure_json_object` reads it, or None."""
    try:
        return _structure_json_object(value, dict)
    except (TypeError, ValueError):
        return None


def _usual_number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


_UTC = timezone.utc


def _structure_usual_run(
    generated: Callable[[Any, Any], WorkflowRun],
) -> Callable[[Any, Any], WorkflowRun]:
    """WorkflowRun's structure hook: the usual record read inline, any other by ``generated``.

    Every record of every poll comes through here. A record as servers send it
    (string ids, a known status, objects or JSON strings, whole or null counters,
    Unix timestamps) is built without a hook call per field; anything else (an
    unknown status, a date string, a wrong type) goes to the hook cattrs
    generated, which reads every shape listed above and names what is wrong.
    Both give the same record: the fuzz tests hold them to one set of rules.
    """

    def structure(payload: Any, cls: type) -> WorkflowRun:
        if type(payload) is not dict:
            return generated(payload, cls)
        get = payload.get
        status = get("status")
        status = _STATUSES.get(status) if type(status) is str else None
        ident, workflow_id, error = get("id"), get("workflow_id"), get("error")
        inputs, outputs = _usual_object(get("inputs")), _usual_object(get("outputs"))
        steps, tokens = get("total_steps", 0), get("total_tokens", 0)
        created: Any = get("created_at")
        finished, elapsed = get("finished_at"), get("elapsed_time")
        if (
            status is None
            or type(ident) is not str
            or type(workflow_id) is not str
            or not (error is None or type(error) is str)
            or inputs is None
            or outputs is None
            or not (steps is None or type(steps) is int)
            or not (tokens is None or type(tokens) is int)
            or not _usual_number(created)
            or not (finished is None or _usual_number(finished))
            or not (elapsed is None or _usual_number(elapsed))
        ):
            return generated(payload, cls)
        try:
            created_at = datetime.fromtimestamp(created, _UTC)
            finished_at = None if finished is None else datetime.fromtimestamp(finished, _UTC)
            elapsed_time = 0.0 if elapsed is None else float(elapsed)
        except (OverflowError, OSError, ValueError):
            return generated(payload, cls)
        return WorkflowRun(
            id=ident,
            workflow_id=workflow_id,
            status=status,
            inputs=inputs,
            outputs=outputs,
            error=error,
            total_steps=steps or 0,
            total_tokens=tokens or 0,
            created_at=created_at,
            finished_at=finished_at,
            elapsed_time=elapsed_time,
        )

    return structure


def _flatten_log_row(row: Any) -> Any:
    """A workflow-log row as the flat mapping :class:`RunSummary` is read from.

    The run's fields come from ``workflow_run``; ``user`` from
    ``created_by_end_user.session_id``; ``log_id`` from the row's ``id``.
    Anything that is not the expected shape is passed on for the class hook
    to refuse with a field path.
    """
    if not isinstance(row, dict):
        return row
    run = row.get("workflow_run")
    flat: dict[str, Any] = dict(run) if isinstance(run, dict) else {}
    end_user = row.get("created_by_end_user")
    if isinstance(end_user, dict):
        flat["user"] = end_user.get("session_id")
    flat["log_id"] = row.get("id")
    return flat


def _generated_run_hook(conv: cattrs.Converter) -> Callable[[Any, Any], WorkflowRun]:
    """The hook cattrs generates for WorkflowRun: every shape read, every error named."""
    return make_dict_structure_fn(
        WorkflowRun,
        conv,
        inputs=override(struct_hook=_structure_json_object),
        outputs=override(struct_hook=_structure_json_object),
        total_steps=override(struct_hook=_int_or_zero),
        total_tokens=override(struct_hook=_int_or_zero),
        elapsed_time=override(struct_hook=_float_or_zero),
        error=override(struct_hook=_str_or_none),
        finished_at=override(struct_hook=_datetime_or_none),
    )


# -- Human Input forms ---------------------------------------------------------------------


def default_text(value: Any) -> str:
    """A resolved default value as text, as Dify's form GET writes ``resolved_default_values``.

    Null is ``""``, an object or a list is JSON, anything else ``str()`` of it
    (``True``, ``3``): what Dify's Python does, so that a form read from a
    paused answer and the same form read from its GET agree.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _structure_default(value: Any, _: type) -> str | None:
    """A form field's ``default``: Dify's ``{type, selector, value}``, or already text.

    A ``constant`` default is its value; a ``variable`` default nobody resolved
    (not in ``resolved_default_values``) offers nothing.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        if value.get("type") != "constant":
            return None
        constant = value.get("value")
        return None if constant is None else default_text(constant)
    return default_text(value)


def _prepare_form(payload: dict[str, Any]) -> dict[str, Any]:
    """A form as the class hooks read it: null lists as empty, resolved defaults in place.

    Anything that is not the expected shape is passed on for the class hook to
    refuse with a field path.
    """
    form = dict(payload)
    for key in ("inputs", "actions", "user_actions"):
        if key in form and form[key] is None:
            form[key] = []
    resolved = form.get("resolved_default_values")
    inputs = form.get("inputs")
    if isinstance(resolved, dict) and resolved and isinstance(inputs, list):
        form["inputs"] = [_resolved_input(item, resolved) for item in inputs]
    return form


def _resolved_input(item: Any, resolved: dict[str, Any]) -> Any:
    name = item.get("output_variable_name") if isinstance(item, dict) else None
    if not isinstance(name, str) or name not in resolved:
        return item
    return {**item, "default": default_text(resolved[name])}


#: Fields Dify names otherwise, by record (a reason's names; the form's GET says
#: ``user_actions`` for ``actions``).
_WIRE_NAMES: dict[type, dict[str, str]] = {
    FormInput: {"name": "output_variable_name"},
    FormAction: {"style": "button_style"},
    HumanInputForm: {
        "token": "form_token",
        "content": "form_content",
        "expires_at": "expiration_time",
    },
}


def _renamed(cls: type) -> dict[str, Any]:
    return {name: override(rename=wire) for name, wire in _WIRE_NAMES[cls].items()}


def problems(exc: BaseException, path: str = "$") -> list[str]:
    """What :func:`cattrs.transform_error` says, with fields named as Dify sends them.

    ``invalid value for type, expected datetime @ $.data.reasons[0].expiration_time``
    rather than ``... @ $.data.reasons[0].expires_at``.
    """
    found: list[str] = []
    if isinstance(exc, cattrs.IterableValidationError):
        items, without = exc.group_exceptions()
        for inner, item in items:
            found += _problem(inner, f"{path}[{item.index!r}]", item.type)
    elif isinstance(exc, cattrs.ClassValidationError):
        fields, without = exc.group_exceptions()
        wire = _WIRE_NAMES.get(exc.cl, {})
        for inner, field in fields:
            found += _problem(inner, f"{path}.{wire.get(field.name, field.name)}", field.type)
    else:
        return [f"{format_exception(exc, None)} @ {path}"]
    return found + [f"{format_exception(inner, None)} @ {path}" for inner in without]


def _problem(exc: BaseException, path: str, expected: Any) -> list[str]:
    if isinstance(exc, (cattrs.ClassValidationError, cattrs.IterableValidationError)):
        return problems(exc, path)
    if get_origin(expected) is tuple:
        expected = list  # what the JSON holds: "expected list", not "expected tuple"
    return [f"{format_exception(exc, expected)} @ {path}"]


def _objects_only(structure: Callable[[Any, Any], Any], name: str) -> Callable[[Any, Any], Any]:
    """A class hook that refuses anything but a JSON object (a list would be read by index)."""

    def hook(value: Any, cls: type) -> Any:
        if type(value) is not dict:
            raise TypeError(f"expected a {name} object, got {type(value).__name__}")
        return structure(value, cls)

    return hook


def _form_hook(
    announced: Callable[[Any, Any], HumanInputForm], fetched: Callable[[Any, Any], HumanInputForm]
) -> Callable[[Any, Any], HumanInputForm]:
    """HumanInputForm's structure hook: a reason or an event (``actions``), or the GET's body."""

    def structure_form(payload: Any, cls: type) -> HumanInputForm:
        if type(payload) is not dict:
            problem = TypeError(f"expected a form object, got {type(payload).__name__}")
            raise cattrs.ClassValidationError("not a form", [problem], HumanInputForm)
        form = _prepare_form(payload)
        if "user_actions" in form and "actions" not in form:
            return fetched(form, cls)
        return announced(form, cls)

    return structure_form


def _tuple_of_list(conv: cattrs.Converter, record: type) -> Callable[[Any, Any], Any]:
    """A hook reading a JSON list (only a list: a string or an object is refused) as a tuple."""

    def structure(value: Any, _: type) -> tuple[Any, ...]:
        if type(value) is not list:
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return tuple(conv.structure(value, list[record]))  # type: ignore[valid-type]

    return structure


def make_converter() -> cattrs.Converter:
    """Build the converter dify_runs uses.

    Returns:
        A new :class:`cattrs.Converter` that structures Dify's JSON into
        :class:`~dify_runs.WorkflowRun`, :class:`~dify_runs.StartedRun` and
        :class:`~dify_runs.RunSummary` (from a workflow-log row) and
        :class:`~dify_runs.HumanInputForm` (from a paused answer's reason, an
        event or the form's GET), and unstructures records back into the wire
        shape (statuses as strings, dates as Unix seconds, inputs and outputs
        as objects, forms as a reason carries them).
    """
    conv = cattrs.Converter(detailed_validation=True)

    # Simple hooks first: the generated class hooks below look these up.
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_structure_hook(RunStatus, _structure_status)
    conv.register_unstructure_hook(datetime, _unstructure_datetime)
    conv.register_unstructure_hook(RunStatus, lambda status: status.value)

    conv.register_structure_hook(WorkflowRun, _structure_usual_run(_generated_run_hook(conv)))
    conv.register_unstructure_hook(WorkflowRun, make_dict_unstructure_fn(WorkflowRun, conv))
    summary = make_dict_structure_fn(
        RunSummary,
        conv,
        total_steps=override(struct_hook=_int_or_zero),
        total_tokens=override(struct_hook=_int_or_zero),
        exceptions_count=override(struct_hook=_int_or_zero),
        elapsed_time=override(struct_hook=_float_or_zero),
    )
    conv.register_structure_hook(RunSummary, lambda row, cls: summary(_flatten_log_row(row), cls))
    conv.register_unstructure_hook(RunSummary, make_dict_unstructure_fn(RunSummary, conv))
    conv.register_structure_hook(
        StartedRun,
        make_dict_structure_fn(
            StartedRun,
            conv,
            run_id=override(rename="workflow_run_id"),
            workflow_id=override(omit_if_default=True),
        ),
    )
    conv.register_unstructure_hook(
        StartedRun,
        make_dict_unstructure_fn(StartedRun, conv, run_id=override(rename="workflow_run_id")),
    )

    # Human Input forms: fields named as Dify names them, lists only where lists belong.
    conv.register_structure_hook(
        FormInput,
        _objects_only(
            make_dict_structure_fn(
                FormInput,
                conv,
                default=override(struct_hook=_structure_default),
                **_renamed(FormInput),
            ),
            "form input",
        ),
    )
    conv.register_structure_hook(
        FormAction,
        _objects_only(
            make_dict_structure_fn(FormAction, conv, **_renamed(FormAction)), "form action"
        ),
    )
    form_fields = {
        **_renamed(HumanInputForm),
        "inputs": override(struct_hook=_tuple_of_list(conv, FormInput)),
        "node_id": override(struct_hook=_str_or_none),
        "node_title": override(struct_hook=_str_or_none),
        "form_id": override(struct_hook=_str_or_none),
    }
    actions = _tuple_of_list(conv, FormAction)
    conv.register_structure_hook(
        HumanInputForm,
        _form_hook(
            make_dict_structure_fn(
                HumanInputForm, conv, actions=override(struct_hook=actions), **form_fields
            ),
            make_dict_structure_fn(  # the form's GET names the buttons user_actions
                HumanInputForm,
                conv,
                actions=override(rename="user_actions", struct_hook=actions),
                **form_fields,
            ),
        ),
    )
    for record in (FormInput, FormAction, HumanInputForm):
        conv.register_unstructure_hook(
            record, make_dict_unstructure_fn(record, conv, **_renamed(record))
        )
    return conv


#: The library's converter: ``converter.structure(payload, WorkflowRun)``
#: accepts every shape real Dify servers send; ``converter.unstructure(run)``
#: gives the wire shape back.
converter = make_converter()
