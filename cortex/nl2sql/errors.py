"""Turn SQLite error messages into messages a small model can act on.

``no such column: foo`` becomes ``no such column: foo. Available columns of table orders:
id, customer_id, ...`` (the tables the query names), ``no such table`` lists the tables,
``no such function`` suggests the SQLite spelling, and so on.
"""
from __future__ import annotations

import difflib
import re
import sqlite3
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from cortex.nl2sql.schema import DatabaseSchema, TableInfo, introspect

FUNCTION_HINTS = {
    "year": "strftime('%Y', col)", "month": "strftime('%m', col)", "day": "strftime('%d', col)",
    "now": "date('now')", "curdate": "date('now')", "getdate": "date('now')",
    "datediff": "julianday(a) - julianday(b)", "concat": "a || b", "len": "length(x)",
    "isnull": "ifnull(x, y)", "nvl": "ifnull(x, y)", "to_char": "strftime(fmt, col)",
    "date_trunc": "strftime(fmt, col)", "extract": "strftime(fmt, col)",
}



def explain_error(message: str, sql: str, db_path: Path | str) -> str:
    """``message`` (from SQLite) with a hint naming real tables and columns."""
    try:
        schema = introspect(db_path)
    except (OSError, sqlite3.Error):  # missing, or not a SQLite file at all
        return message
    for pattern, handler in _PATTERNS:
        match = pattern.search(message)
        if match:
            hint = handler(match.group(1), sql, schema)
            return f"{message}. {hint}" if hint else message
    return message


def referenced_tables(sql: str, schema: DatabaseSchema) -> list[TableInfo]:
    """Existing tables named in ``sql``, in order of first mention."""
    try:
        names = [t.name for stmt in sqlglot.parse(sql, read="sqlite") if stmt is not None
                 for t in stmt.find_all(exp.Table)]
    except SqlglotError:
        names = re.findall(r"(?:from|join)\s+[\"`\[]?(\w+)", sql, flags=re.IGNORECASE)
    out: list[TableInfo] = []
    for name in names:
        table = schema.table(name)
        if table is not None and table not in out:
            out.append(table)
    return out


def _column(name: str, sql: str, schema: DatabaseSchema) -> str:
    column = name.split(".")[-1].lower()
    tables = referenced_tables(sql, schema)
    if not tables:
        return f"Tables in this database: {', '.join(schema.table_names)}."
    listing = "; ".join(f"{t.name}: {', '.join(t.column_names)}" for t in tables)
    word = "table" if len(tables) == 1 else "tables"
    hint = f"Available columns of {word} {listing}."
    holders = [t.name for t in schema.tables
               if column in (c.lower() for c in t.column_names)]
    if holders:
        hint += f" Column {column} exists in table {', '.join(holders)} (join it)."
    else:
        known = [c for t in tables for c in t.column_names]
        close = difflib.get_close_matches(column, known, n=2, cutoff=0.6)
        if close:
            hint += f" Did you mean {' or '.join(close)}?"
    return hint


def _table(name: str, sql: str, schema: DatabaseSchema) -> str:
    name = name.split(".")[-1]
    hint = f"Tables in this database: {', '.join(schema.table_names)}."
    close = difflib.get_close_matches(name.lower(), schema.table_names, n=1, cutoff=0.6)
    return hint + (f" Did you mean {close[0]}?" if close else "")


def _ambiguous(name: str, sql: str, schema: DatabaseSchema) -> str:
    holders = [t.name for t in referenced_tables(sql, schema)
               if name.lower() in (c.lower() for c in t.column_names)]
    example = f" (e.g. {holders[0]}.{name})" if holders else ""
    where = f"; it is in {', '.join(holders)}" if holders else ""
    return f"Qualify the column with its table name or alias{example}{where}."


def _function(name: str, sql: str, schema: DatabaseSchema) -> str:
    hint = FUNCTION_HINTS.get(name.lower())
    if hint:
        return f"SQLite has no {name}(); use {hint}."
    return "Use SQLite functions only (e.g. strftime, date, julianday, substr, ifnull)."


def _syntax(near: str, sql: str, schema: DatabaseSchema) -> str:
    return f"Fix the SQLite syntax near {near!r}; reply with one complete SELECT statement."


_PATTERNS = (
    (re.compile(r"no such column: (\S+)"), _column),
    (re.compile(r"no such table: (\S+)"), _table),
    (re.compile(r"ambiguous column name: (\S+)"), _ambiguous),
    (re.compile(r"no such function: (\S+)"), _function),
    (re.compile(r'near "(.*)": syntax error'), _syntax),
)
