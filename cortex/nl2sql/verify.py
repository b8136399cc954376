"""Label an executed query so the workflow can route it: ok, error, empty or suspicious.

Rules (in order):

* ``error``: the sandbox refused the query or SQLite failed;
* ``empty``: it ran and returned no rows;
* ``suspicious``: every returned value is NULL, or the query computes an aggregate
  (COUNT/SUM/AVG/MIN/MAX/TOTAL/GROUP_CONCAT) and returned a single row whose values are all
  NULL or 0 -- typically a filter that matched nothing (``SUM`` over no rows is NULL).
  A legitimate zero count is labelled suspicious too; the fixer then double-checks it;
* ``ok``: anything else.

The message is written for the fixer model: what happened and what to check.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from cortex.core import EMPTY, ERROR, OK

SUSPICIOUS = "suspicious"
_SQLITE_AGGS = frozenset({"total", "group_concat", "string_agg"})  # sqlglot may not type them
LABELS = (OK, ERROR, EMPTY, SUSPICIOUS)


@dataclass(frozen=True, slots=True)
class Verdict:
    label: str
    message: str


def verify_result(ok: bool, rows: Sequence[Sequence[Any]], error: str = "", sql: str = "",
                  truncated: bool = False) -> Verdict:
    """Label one query result (see module docstring).

    Args:
        ok, rows, error, truncated: the fields of a ``SqlResult`` (or the execute tool output).
        sql: the query text; used to tell aggregates from plain selects. When empty, a
            single all-NULL/zero row is treated as an aggregate.
    """
    if not ok:
        reason = error.strip().rstrip(".") or "unknown error"
        return Verdict(ERROR, f"The query failed: {reason}. Fix the query.")
    if not rows:
        return Verdict(EMPTY, "The query ran but returned no rows. Check the filter values "
                              "(exact spelling and case of text values, date format "
                              "'YYYY-MM-DD'), the join conditions, and that the columns hold "
                              "what you assume.")
    values = [v for row in rows for v in row]
    if all(v is None for v in values):
        return Verdict(SUSPICIOUS, "The query returned only NULL values. A filter probably "
                                   "matches nothing, or a column is the wrong one; check the "
                                   "filter values and joins.")
    if len(rows) == 1 and all(v is None or v == 0 for v in values) and _has_aggregate(sql):
        return Verdict(SUSPICIOUS, "The query returned a single row of zero/NULL aggregates, "
                                   "so its filters probably match no rows. Check the exact "
                                   "text values, dates and join conditions.")
    more = " (truncated: more rows exist)" if truncated else ""
    return Verdict(OK, f"The query returned {len(rows)} row(s){more}.")


def _has_aggregate(sql: str) -> bool:
    if not sql.strip():
        return True
    try:
        trees = [t for t in sqlglot.parse(sql, read="sqlite") if t is not None]
    except SqlglotError:
        return True
    return any(isinstance(node, exp.AggFunc)
               or (isinstance(node, exp.Anonymous) and str(node.name).lower() in _SQLITE_AGGS)
               for tree in trees for node in tree.find_all(exp.Func))
