"""Execution accuracy: does a predicted query return the gold query's result?

Rules:

* rows are compared as tuples, so the number and order of columns matter (Spider's
  test-suite evaluation is column-permutation-insensitive; this scorer is stricter);
* values are normalised: numbers (int, float, bool) become floats rounded to
  ``DECIMALS`` places, so ``3 == 3.0`` and ``0.30000000000000004 == 0.3``; strings and
  blobs compare exactly (case-sensitive); NULL equals NULL;
* the result is compared as a multiset of rows (order-insensitive, duplicates count),
  unless the gold query has an ``ORDER BY`` at its top level: then the order matters too.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

DECIMALS = 4


def results_match(pred_rows: Sequence[Sequence[Any]], gold_rows: Sequence[Sequence[Any]],
                  gold_sql: str) -> bool:
    """True when ``pred_rows`` equals ``gold_rows`` under the rules above."""
    pred = [normalize_row(r) for r in pred_rows]
    gold = [normalize_row(r) for r in gold_rows]
    if is_ordered(gold_sql):
        return pred == gold
    return Counter(pred) == Counter(gold)


def normalize_row(row: Sequence[Any]) -> tuple[Hashable, ...]:
    return tuple(normalize_value(v) for v in row)


def normalize_value(value: Any) -> Hashable:
    if isinstance(value, (bool, int, float)):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        # Round twice so sums that differ in the last bits don't straddle a boundary.
        return round(round(number, 9), DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def is_ordered(sql: str) -> bool:
    """True when the outermost query of ``sql`` has an ORDER BY."""
    try:
        trees = [t for t in sqlglot.parse(sql, read="sqlite") if t is not None]
    except SqlglotError:
        return _has_top_level_order_by(sql)
    if not trees:
        return False
    root = trees[-1]
    while isinstance(root, exp.Subquery):
        root = root.this
    return root.args.get("order") is not None


def _has_top_level_order_by(sql: str) -> bool:
    depth = 0
    flat = []
    for ch in sql:
        depth += (ch == "(") - (ch == ")")
        flat.append(ch if depth == 0 else " ")
    return re.search(r"\border\s+by\b", "".join(flat), re.IGNORECASE) is not None
