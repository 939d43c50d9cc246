"""Decode cost: response bytes to a typed record, against json.loads, pydantic and msgspec."""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dify_runs import _protocol

RECORDINGS = Path(__file__).parent.parent / "tests" / "data"


def bodies() -> dict[str, bytes]:
    current = json.loads((RECORDINGS / "1.13.2-succeeded.json").read_text())["body"]
    documented = dict(current)
    documented["inputs"] = json.loads(current["inputs"])
    return {
        "current server (JSON-string inputs)": json.dumps(current).encode(),
        "documentation's shape (objects)": json.dumps(documented).encode(),
    }


def _pydantic() -> Callable[[bytes], Any] | None:
    try:
        from pydantic import BaseModel, field_validator
    except ImportError:
        return None

    class Run(BaseModel):
        id: str
        workflow_id: str
        status: str
        inputs: dict[str, Any]
        outputs: dict[str, Any]
        error: str | None
        total_steps: int
        total_tokens: int
        created_at: datetime
        finished_at: datetime | None
        elapsed_time: float

        @field_validator("inputs", "outputs", mode="before")
        @classmethod
        def _json_string(cls, value: Any) -> Any:
            if value is None:
                return {}
            return json.loads(value) if isinstance(value, str) else value

    return Run.model_validate_json


def _msgspec() -> Callable[[bytes], Any] | None:
    try:
        import msgspec
    except ImportError:
        return None

    class Run(msgspec.Struct):
        id: str
        workflow_id: str
        status: str
        inputs: dict[str, Any] | str | None
        outputs: dict[str, Any] | str | None
        error: str | None
        total_steps: int
        total_tokens: int
        created_at: int
        finished_at: int | None
        elapsed_time: float

        def __post_init__(self) -> None:
            for name in ("inputs", "outputs"):
                value = getattr(self, name)
                setattr(
                    self,
                    name,
                    {} if value is None else json.loads(value) if isinstance(value, str) else value,
                )
            self.created_at = datetime.fromtimestamp(self.created_at, tz=timezone.utc)  # type: ignore[assignment]

    decoder = msgspec.json.Decoder(Run)
    return decoder.decode


def contenders() -> dict[str, Callable[[bytes], Any]]:
    found: dict[str, Callable[[bytes], Any]] = {
        "json.loads alone": json.loads,
        "dify_runs (bytes to WorkflowRun)": lambda body: _protocol.parse_run(200, {}, body),
    }
    for name, make in (
        ("pydantic v2 model_validate_json", _pydantic),
        ("msgspec Struct", _msgspec),
    ):
        function = make()
        if function is not None:
            found[name] = function
    return found


def measure(number: int = 20000, rounds: int = 7) -> dict[str, Any]:
    """Microseconds per record for each body and contender, alternating, several rounds."""
    results: dict[str, dict[str, list[float]]] = {}
    for body_name, body in bodies().items():
        per: dict[str, list[float]] = {name: [] for name in contenders()}
        for function in contenders().values():
            function(body)  # check it works, warm caches
        for _ in range(rounds):
            for name, function in contenders().items():
                seconds = timeit.timeit(lambda f=function, b=body: f(b), number=number)
                per[name].append(seconds / number * 1e6)
        results[body_name] = per
    return {"number": number, "rounds": rounds, "bodies": results}


def profile(number: int = 20000) -> str:
    """Where dify_runs spends its decode time (cProfile, top functions)."""
    import cProfile
    import io
    import pstats

    body = next(iter(bodies().values()))
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(number):
        _protocol.parse_run(200, {}, body)
    profiler.disable()
    out = io.StringIO()
    # No machine paths in the report, and lines that fit the docs page.
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(8)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return "\n".join(line[:88] for line in lines[start : start + 9])
