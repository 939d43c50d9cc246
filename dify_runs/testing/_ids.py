"""Seeded ids: the UUIDs the simulator hands out, so that one seed repeats a whole session."""

from __future__ import annotations

import random
import uuid

__all__ = ["seeded_uuid4"]


def seeded_uuid4(source: random.Random) -> str:
    """A version-4 UUID drawn from a seeded random source."""
    return str(uuid.UUID(int=source.getrandbits(128), version=4))
