"""Type checks for values read from YAML, JSON or keyword arguments.

YAML's ``true`` is a Python ``bool``, which is an ``int``; ``.nan`` and ``.inf`` are
floats that pass every ``<`` / ``>`` range check the wrong way. These two predicates are
what config, workflow, workload and benchmark validation use instead of ``isinstance``.
"""
from __future__ import annotations

import math
from typing import Any


def is_number(value: Any) -> bool:
    """A finite int or float (an int that fits a float), not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400)
        return False


def is_int(value: Any, low: int | None = None) -> bool:
    """An int, not a bool, and ``>= low`` when given."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and (low is None or value >= low))
