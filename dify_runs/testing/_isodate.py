"""ISO 8601 dates as Dify reads ``created_at__before``/``__after``: dateutil's ``isoparse``.

Dify hands these query values to ``dateutil.parser.isoparse`` (python-dateutil 2.9), and a
value it refuses becomes a 400 ``invalid_param`` whose message is the ``ValueError``'s text.
This module accepts what that parser accepts and refuses the rest with the same texts,
without depending on dateutil: ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``/``YYYYMMDD``, ISO weeks
(``YYYY-Www[-D]``) and ordinal days (``YYYY-DDD``), then any one separator character and
``hh[:mm[:ss[.ffffff]]]`` (colons optional, ``,`` for ``.``), then ``Z`` or ``±HH[[:]MM]``.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta, timezone

_FRACTION = re.compile(rb"[.,]([0-9]+)")


def isoparse(text: str) -> datetime:
    """Parse ``text`` as dateutil's ``isoparse`` does (naive unless it names an offset).

    Raises:
        ValueError: What dateutil raises, with its message.
    """
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("ISO-8601 strings should contain only ASCII characters") from None
    try:
        day, used = _common_date(raw)
    except ValueError:
        day, used = _uncommon_date(raw)
    clock: list[int] = [0, 0, 0, 0]
    zone: timezone | None = None
    if len(raw) > used:  # any one character separates the time (officially "T")
        clock, zone = _time(raw[used + 1 :])
    midnight_after = clock[0] == 24
    if midnight_after:
        clock[0] = 0
    (year, month, day_of_month), (hour, minute, second, micro) = day, clock
    moment = datetime(year, month, day_of_month, hour, minute, second, micro, tzinfo=zone)
    return moment + timedelta(days=1) if midnight_after else moment


def _number(raw: bytes) -> int:
    """``int()`` of ASCII bytes, failing with its own message (which shows the bytes)."""
    return int(raw)


def _common_date(raw: bytes) -> tuple[list[int], int]:
    """``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYYMMDD``: (year, month, day) and length."""
    if len(raw) < 4:
        raise ValueError("ISO string too short")
    parts = [_number(raw[:4]), 1, 1]
    if len(raw) == 4:
        return parts, 4
    dashed = raw[4:5] == b"-"
    at = 5 if dashed else 4
    if len(raw) - at < 2:
        raise ValueError("Invalid common month")
    parts[1] = _number(raw[at : at + 2])
    at += 2
    if at >= len(raw):
        if not dashed:
            raise ValueError("Invalid ISO format")
        return parts, at
    if dashed:
        if raw[at : at + 1] != b"-":
            raise ValueError("Invalid separator in ISO string")
        at += 1
    if len(raw) - at < 2:
        raise ValueError("Invalid common day")
    parts[2] = _number(raw[at : at + 2])
    return parts, at + 2


def _uncommon_date(raw: bytes) -> tuple[list[int], int]:
    """An ISO week (``YYYY-Www[-D]``) or an ordinal day (``YYYY-DDD``)."""
    if len(raw) < 4:
        raise ValueError("ISO string too short")
    year = _number(raw[:4])
    dashed = raw[4:5] == b"-"
    at = 5 if dashed else 4
    if raw[at : at + 1] == b"W":
        week = _number(raw[at + 1 : at + 3])
        at += 3
        weekday = 1
        if len(raw) > at:
            if (raw[at : at + 1] == b"-") != dashed:
                raise ValueError("Inconsistent use of dash separator")
            at += dashed
            weekday = _number(raw[at : at + 1])
            at += 1
        if not 0 < week < 54:
            raise ValueError(f"Invalid week: {week}")
        if not 0 < weekday < 8:
            raise ValueError(f"Invalid weekday: {weekday}")
        january_4 = date(year, 1, 4)  # always in week 1
        week_1 = january_4 - timedelta(days=january_4.isoweekday() - 1)
        found = week_1 + timedelta(weeks=week - 1, days=weekday - 1)
    else:
        if len(raw) - at < 3:
            raise ValueError("Invalid ordinal day")
        ordinal = _number(raw[at : at + 3])
        at += 3
        if not 1 <= ordinal <= 365 + calendar.isleap(year):
            raise ValueError(f"Invalid ordinal day {ordinal} for year {year}")
        found = date(year, 1, 1) + timedelta(days=ordinal - 1)
    return [found.year, found.month, found.day], at


def _time(raw: bytes) -> tuple[list[int], timezone | None]:
    """``hh[:mm[:ss[.ffffff]]]`` and an offset: [hour, minute, second, microsecond], zone."""
    if len(raw) < 2:
        raise ValueError("ISO time too short")
    clock = [0, 0, 0, 0]
    zone: timezone | None = None
    at = 0
    colons = False
    for field in range(6):  # hour, minute, second, fraction, then room for an offset
        if at >= len(raw):
            break
        if raw[at : at + 1] in (b"-", b"+", b"Z", b"z"):
            zone, at = _offset(raw[at:]), len(raw)
            break
        if field == 1 and raw[at : at + 1] == b":":
            colons, at = True, at + 1
        elif field == 2 and colons:
            if raw[at : at + 1] != b":":
                raise ValueError("Inconsistent use of colon separator")
            at += 1
        if field < 3:
            clock[field] = _number(raw[at : at + 2])
            at += 2
        elif field == 3 and (fraction := _FRACTION.match(raw, at)):
            digits = fraction.group(1)[:6]
            clock[3] = int(digits) * 10 ** (6 - len(digits))
            at = fraction.end()
    if at < len(raw):
        raise ValueError("Unused components in ISO string")
    if clock[0] == 24 and any(clock[1:]):
        raise ValueError("Hour may only be 24 at 24:00:00.000")
    return clock, zone


def _offset(raw: bytes) -> timezone:
    """``Z`` or ``±HH``, ``±HHMM``, ``±HH:MM``."""
    if raw in (b"Z", b"z"):
        return timezone.utc
    if len(raw) not in (3, 5, 6):
        raise ValueError("Time zone offset must be 1, 3, 5 or 6 characters")
    if raw[:1] not in (b"+", b"-"):
        raise ValueError("Time zone offset requires sign")
    hours = _number(raw[1:3])
    minutes = 0 if len(raw) == 3 else _number(raw[4:] if raw[3:4] == b":" else raw[3:])
    if hours == 0 and minutes == 0:
        return timezone.utc
    if minutes > 59:
        raise ValueError("Invalid minutes in time zone offset")
    if hours > 23:
        raise ValueError("Invalid hours in time zone offset")
    sign = -1 if raw[:1] == b"-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
