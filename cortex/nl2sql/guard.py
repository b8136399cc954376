"""Static and runtime guards for untrusted SQL: a sqlglot check of the statement and a
SQLite authorizer that allows reads only.

``check_statement`` is the first line of defence (it gives the model a clear refusal);
``read_only_authorizer`` is the second (SQLite itself denies anything that is not a read,
whatever sqlglot made of the text).
"""
from __future__ import annotations

import sqlite3

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

ONE_SELECT = "Only a single SELECT statement is allowed"
FORBIDDEN_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile",
                                 "edit", "json_patch"})  # json_patch: quadratic in one call
_READ_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)
_WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Command,
                exp.Pragma, exp.Attach, exp.Detach, exp.Transaction, exp.Commit,
                exp.Rollback, exp.Analyze, exp.Alter)
_KEYWORDS = {exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE",
             exp.Create: "CREATE", exp.Drop: "DROP", exp.Pragma: "PRAGMA",
             exp.Attach: "ATTACH", exp.Detach: "DETACH", exp.Transaction: "BEGIN",
             exp.Commit: "COMMIT", exp.Rollback: "ROLLBACK", exp.Analyze: "ANALYZE",
             exp.Alter: "ALTER", exp.Values: "VALUES"}


class UnparsableSql(Exception):
    """sqlglot could not parse the text; SQLite is asked for the syntax error instead."""


def check_statement(sql: str) -> str | None:
    """Return a refusal message for ``sql``, or None when it is one read-only statement.

    Raises:
        UnparsableSql: sqlglot cannot parse the text (the caller reports SQLite's own
            syntax error, which small models know better than sqlglot's).
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except (SqlglotError, RecursionError) as exc:  # 47 nested parentheses overflow sqlglot
        raise UnparsableSql(str(exc)) from None
    if not statements:
        return "No SQL statement found. Reply with one SELECT statement."
    if len(statements) > 1:
        kinds = "; ".join(statement_keyword(s) for s in statements)
        return f"{ONE_SELECT}; got {len(statements)} statements ({kinds}). Remove all but one."
    root = statements[0]
    if not isinstance(root, _READ_ROOTS) or isinstance(root, _WRITE_NODES):
        return f"{ONE_SELECT}; got {statement_keyword(root)}. The database is read-only."
    for node in root.walk():
        node = node[0] if isinstance(node, tuple) else node  # older sqlglot yields tuples
        if isinstance(node, _WRITE_NODES):
            return f"{ONE_SELECT}; it contains {statement_keyword(node)}."
        name = _function_name(node)
        if name in FORBIDDEN_FUNCTIONS:
            return f"The function {name}() is not allowed. Use plain SELECT expressions."
    return None


def statement_keyword(node: exp.Expression) -> str:
    """The SQL keyword a statement starts with, e.g. ``DELETE`` or ``VACUUM``."""
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    if isinstance(node, exp.Insert) and "REPLACE" in str(node.args.get("alternative", "")).upper():
        return "INSERT OR REPLACE"
    if isinstance(node, _READ_ROOTS):
        return "SELECT"
    for cls, word in _KEYWORDS.items():
        if isinstance(node, cls):
            return word
    return type(node).__name__.upper()


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return ""


# ---------------------------------------------------------------- authorizer

_ALLOWED_ACTIONS = frozenset({
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
})

def read_only_authorizer(action: int, arg1: str | None, arg2: str | None,
                         db_name: str | None, source: str | None) -> int:
    """SQLite authorizer: allow SELECT, column reads, recursive CTEs and safe functions."""
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in FORBIDDEN_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK
