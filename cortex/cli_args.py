"""``type=`` functions for the numeric flags of the ``cortex`` commands.

Each accepts only a finite number in its range; anything else makes argparse exit
with status 2 and ``argument --flag: must be ..., got 'text'`` (argparse names the
flag). ``nan`` and ``inf`` parse as floats, so a bare ``type=float`` with a
``value <= 0`` check lets them through; these functions do not.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _range(low: float | None, high: float | None, above: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if above else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{'>' if above else '>='} {low:g}"
    return f"<= {high:g}" if high is not None else ""


def _outside(value: float, low: float | None, high: float | None, above: bool) -> bool:
    return ((low is not None and (value <= low if above else value < low))
            or (high is not None and value > high))


def number(low: float | None = None, high: float | None = None, *, above: bool = False,
           why: str = "") -> Callable[[str], float]:
    """A finite float ``>= low`` (``> low`` with ``above``) and ``<= high``; ``why``
    follows the range in the message."""
    want = f"must be a number {_range(low, high, above)}{why}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if _outside(value, low, high, above):
            raise argparse.ArgumentTypeError(f"{want}, got {text!r}")
        return value

    return parse


def integer(low: int | None = None, high: int | None = None, *,
            why: str = "") -> Callable[[str], int]:
    """An integer in ``[low, high]`` (either bound may be left open)."""
    want = f"must be an integer {_range(low, high, False)}{why}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if _outside(value, low, high, False):
            raise argparse.ArgumentTypeError(f"{want}, got {text!r}")
        return value

    return parse


def numbers(low: float | None = None, high: float | None = None, *,
            above: bool = False) -> Callable[[str], list[float]]:
    """A non-empty comma-separated list of finite floats, each in range."""
    one = number(low, high, above=above)
    want = f"expected comma-separated finite numbers {_range(low, high, above)}"

    def parse(text: str) -> list[float]:
        try:
            values = [one(x) for x in text.split(",") if x.strip()]
        except argparse.ArgumentTypeError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"{want}, got {text!r}")
        return values

    return parse
