"""Pull one SQL query out of a model reply.

Rules, in order:

1. If the reply has a Markdown fence (```sql, ```sqlite or plain ```), use the first
   fenced block (an unclosed fence, e.g. cut by a stop sequence, runs to the end).
2. Start at the first ``SELECT`` or ``WITH <name> AS (`` (case-insensitive), or at a
   ``(`` that opens such a query; leading prose like ``SQL:`` or ``Here is the query:`` is
   dropped. Text that starts with another statement keyword (``DELETE``, ``DROP``,
   ``PRAGMA``...) is kept as is, so the sandbox can refuse it by name. Anything else
   without a query keyword gives ``""``.
3. End at the first ``;`` or blank line outside string literals: a reply holds one query,
   and what follows is usually explanation.
"""
from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*(?:sql|sqlite)?[ \t]*\n?(.*?)(?:```|\Z)", re.IGNORECASE | re.DOTALL)
_START = re.compile(
    r"\(?\s*\bSELECT(?=[\s*(])|\(?\s*\bWITH\s+(?:RECURSIVE\s+)?[\w\"`\[\]]+\s*(?:\([^)]*\))?\s*AS\s*\(",
    re.IGNORECASE)
_OTHER_STATEMENT = re.compile(  # anchored: the reply itself starts with a non-read statement
    r"\s*(?:INSERT\s+(?:INTO|OR)|REPLACE\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|"
    r"(?:CREATE|DROP)\s+(?:TEMP|TEMPORARY|TABLE|VIEW|INDEX|TRIGGER|UNIQUE|VIRTUAL)|"
    r"ALTER\s+TABLE|ATTACH\s+(?:DATABASE\b|')|DETACH\s+\w+|PRAGMA\s+\w+|VACUUM|"
    r"REINDEX|ANALYZE|BEGIN|COMMIT|ROLLBACK)\b", re.IGNORECASE)


def extract_sql(text: str) -> str:
    """The SQL query in ``text`` without a trailing semicolon, or ``""`` if there is none."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    if _OTHER_STATEMENT.match(body):
        return _cut(body).strip()
    start = _START.search(body)
    return _cut(body[start.start():]).strip() if start else ""


def _cut(sql: str) -> str:
    """``sql`` up to the first ``;`` or blank line that is not inside a quoted literal."""
    quote = ""
    for i, ch in enumerate(sql):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == ";" or (ch == "\n" and _blank_line_follows(sql, i)):
            return sql[:i]
    return sql


def _blank_line_follows(sql: str, i: int) -> bool:
    j = i + 1
    while j < len(sql) and sql[j] in " \t\r":
        j += 1
    return j < len(sql) and sql[j] == "\n"
