"""Run untrusted (LLM-written) SQL against a SQLite file, read-only and bounded.

Layers, outermost first:

1. ``guard.check_statement``: sqlglot (dialect sqlite) must see exactly one statement
   whose root is a read (SELECT, WITH ... SELECT, UNION/INTERSECT/EXCEPT); DML, DDL,
   ATTACH/DETACH, PRAGMA, VACUUM, transactions and ``load_extension`` are refused.
2. The connection: ``mode=ro`` URI, ``PRAGMA query_only = ON``, extension loading off,
   a value-length limit, and ``guard.read_only_authorizer`` (SQLite denies every action
   that is not a read, whatever the parser thought).
3. Bounds: a progress handler stops the query after ``timeout_s``; at most ``max_rows``
   rows and about ``max_bytes`` bytes come back (``truncated`` says when more existed).
   The handler runs between SQLite VM instructions, so no single function call may run
   long: ``printf`` / ``format`` are replaced by a checked version (a ``%c`` precision of
   2e9 loops for ~15 s inside one call; widths and precisions over ``MAX_FORMAT_WIDTH``
   give NULL, as SQLite itself does for a result over its length limit), and LIKE / GLOB
   patterns are capped at ``MAX_PATTERN_LENGTH`` characters.

Every refusal or error comes back as ``SqlResult(ok=False, error=...)`` worded so that a
small model can fix its query; nothing raises.
"""
from __future__ import annotations

import functools
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex.nl2sql.errors import explain_error
from cortex.nl2sql.guard import UnparsableSql, check_statement, read_only_authorizer
from cortex.nl2sql.schema import connect_readonly

DEFAULT_MAX_ROWS = 200
DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_TIMEOUT_S = 2.0
PROGRESS_EVERY = 1000  # SQLite VM instructions between deadline checks
MAX_FORMAT_WIDTH = 10_000   # printf/format width or precision
MAX_PATTERN_LENGTH = 200    # LIKE / GLOB pattern characters
_FETCH_BATCH = 64


@dataclass(slots=True)
class SqlResult:
    """Outcome of one sandboxed query.

    ``ok`` is False when the query was refused or failed; ``error`` then says why.
    ``truncated`` is True when more rows existed than the row or byte cap let through.
    """

    ok: bool
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    truncated: bool = False
    error: str = ""


def run_query(db_path: Path | str, sql: str, *, max_rows: int = DEFAULT_MAX_ROWS,
              max_bytes: int = DEFAULT_MAX_BYTES, timeout_s: float = DEFAULT_TIMEOUT_S
              ) -> SqlResult:
    """Execute ``sql`` on ``db_path`` inside the sandbox (see module docstring).

    Args:
        db_path: an existing SQLite file; it is never written.
        sql: one SELECT statement (a trailing ``;`` is fine).
        max_rows, max_bytes: caps on what is returned.
        timeout_s: wall-clock budget for preparing and stepping the query.
    Returns:
        A ``SqlResult``; refusals and SQLite errors are ``ok=False`` with a message. Text
        that sqlglot cannot parse is compiled (never run) by SQLite to report its syntax
        error, and refused even when SQLite could compile it.
    """
    try:
        refusal = check_statement(sql)
    except UnparsableSql:
        refusal = None
        parsed = False
    else:
        parsed = True
    if refusal:
        return SqlResult(False, error=refusal)
    try:
        conn = _open(db_path, max_bytes)
    except (FileNotFoundError, sqlite3.Error) as exc:
        return SqlResult(False, error=f"cannot open database: {exc}")
    try:
        if not parsed:
            return _syntax_error(conn, sql, db_path)
        return _execute(conn, sql, db_path, max_rows, max_bytes, timeout_s)
    finally:
        conn.close()


def _open(db_path: Path | str, max_bytes: int) -> sqlite3.Connection:
    conn = connect_readonly(db_path)
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    if hasattr(conn, "setlimit"):  # Python >= 3.11: no multi-GB strings or blobs
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max(max_bytes, 1 << 20))
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, MAX_PATTERN_LENGTH)
    limit = max(max_bytes, 1 << 20)

    def checked_printf(fmt: Any = None, *args: Any) -> Any:
        return _checked_printf(limit, fmt, *args)

    for name in ("printf", "format"):
        conn.create_function(name, -1, checked_printf, deterministic=True)
    conn.create_function("instr", 2, _instr, deterministic=True)
    conn.create_function("replace", 3, lambda x, y, z: _replace(limit, x, y, z),
                         deterministic=True)
    for name, left, right in (("trim", True, True), ("ltrim", True, False),
                              ("rtrim", False, True)):
        for num_args in (1, 2):
            conn.create_function(name, num_args, functools.partial(_trim, left, right),
                                 deterministic=True)
    conn.set_authorizer(read_only_authorizer)
    return conn


# SQLite's instr, replace and trim compare naively, O(len(x) x len(y)): on values near
# the length limit one call ran seconds past the time limit (which is only checked
# between VM steps). These are SQLite's semantics on Python's linear-time search.
def _side(limit: int = 1 << 20) -> sqlite3.Connection:
    """This thread's private in-memory connection (SQLite's own conversions)."""
    conn = getattr(_formatter, "conn", None)
    if conn is None:
        conn = _formatter.conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
    return conn


def _as_text(value: Any) -> Any:
    """``value`` as SQLite's text conversion makes it (NULL stays NULL)."""
    if value is None or isinstance(value, str):
        return value
    return _side().execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()[0]


def _instr(haystack: Any, needle: Any) -> int | None:
    if haystack is None or needle is None:
        return None
    if isinstance(haystack, bytes) and isinstance(needle, bytes):
        return haystack.find(needle) + 1  # both blobs: bytes
    if isinstance(haystack, bytes) or isinstance(needle, bytes):
        # a blob read as text (maybe not valid UTF-8): search its bytes, count characters
        hay = haystack if isinstance(haystack, bytes) else _as_text(haystack).encode()
        pin = needle if isinstance(needle, bytes) else _as_text(needle).encode()
        # SQLite steps one byte, then past any continuation bytes: a character starts at
        # byte 0 and at every later byte that is not a continuation byte (0b10xxxxxx)
        if pin and pin[0] & 0xC0 == 0x80:
            return 1 if hay.startswith(pin) else 0
        at = hay.find(pin)
        if at <= 0:
            return at + 1
        return 2 + len(hay[1:at].translate(None, _CONTINUATION))
    return _as_text(haystack).find(_as_text(needle)) + 1


_CONTINUATION = bytes(range(0x80, 0xC0))


def _replace(limit: int, text: Any, old: Any, new: Any) -> Any:
    if text is None or old is None:
        return None
    old = _as_text(old)
    if not old or old[0] == "\x00":  # SQLite: an empty pattern leaves text as it is
        return text
    if new is None:
        return None
    text, new = _as_text(text), _as_text(new)
    if len(text) + text.count(old) * (len(new) - len(old)) > limit:
        return " " * (limit + 1)  # over the length limit: SQLite's own "too big" error
    return text.replace(old, new)


def _trim(left: bool, right: bool, text: Any, chars: Any = " ") -> str | None:
    if text is None or chars is None:
        return None
    text = _as_text(text)
    drop = set(_as_text(chars).split("\x00", 1)[0])  # SQLite reads the set up to a NUL
    start, end = 0, len(text)
    while left and start < end and text[start] in drop:
        start += 1
    while right and end > start and text[end - 1] in drop:
        end -= 1
    return text[start:end]


# %[flags][width][.precision][length]type, width and precision a number or *
_SPEC = re.compile(r"%([-+ 0#!,]*)(\*|\d+)?(?:\.(\*|\d+))?(ll|l)?(.)?", re.DOTALL)
_NO_ARGUMENT = {"%", "n", None}  # conversions that consume no argument (None: % at the end)
_PRECISION_IS_A_MAXIMUM = {"s", "q", "Q", "w", "z"}
_formatter = threading.local()


def _checked_printf(limit: int, fmt: Any = None, *args: Any) -> Any:
    """SQLite's own printf, on a private in-memory connection (value-length limit
    ``limit``), unless a width or precision exceeds ``MAX_FORMAT_WIDTH`` or the
    conversions' widths and minimum lengths add up past ``limit`` (SQLite's result would
    be NULL then too, only after looping through them); NULL in those cases. The format
    and every ``*`` argument are read as SQLite reads them (a blob format as text,
    ``'2000000000x'`` as 2000000000), so no spelling gets past the check."""
    conn = _side(limit)
    if fmt is not None:
        fmt = conn.execute("SELECT CAST(? AS TEXT)", (fmt,)).fetchone()[0]
        queue, total = list(args), 0
        for match in _SPEC.finditer(fmt):
            sizes = []
            for part in (match.group(2), match.group(3)):
                size = 0
                if part == "*":
                    size = _star_size(conn, queue.pop(0) if queue else 0)
                elif part:
                    size = int(part)
                if size > MAX_FORMAT_WIDTH:
                    return None
                sizes.append(size)
            kind = match.group(5)
            total += max(sizes[0], 0 if kind in _PRECISION_IS_A_MAXIMUM else sizes[1])
            if total > limit:
                return None
            if kind not in _NO_ARGUMENT:
                queue[:1] = []  # the converted value
    marks = ", ".join("?" * (len(args) + 1))
    return conn.execute(f"SELECT printf({marks})", (fmt, *args)).fetchone()[0]


def _star_size(conn: sqlite3.Connection, value: Any) -> int:
    """A ``*`` width or precision as SQLite's printf converts it (its magnitude)."""
    try:
        size = conn.execute("SELECT CAST(? AS INTEGER)", (value,)).fetchone()[0]
    except (sqlite3.Error, OverflowError):
        return MAX_FORMAT_WIDTH + 1
    return 0 if size is None else abs(size)


def _execute(conn: sqlite3.Connection, sql: str, db_path: Path | str, max_rows: int,
             max_bytes: int, timeout_s: float) -> SqlResult:
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_EVERY)
    try:
        cursor = conn.execute(sql)
        columns = [d[0] for d in cursor.description or ()]
        rows, truncated = _fetch(cursor, max_rows, max_bytes)
    except (sqlite3.Error, sqlite3.Warning, OverflowError, ValueError) as exc:
        return SqlResult(False, error=_error_text(exc, sql, db_path, timeout_s, deadline))
    return SqlResult(True, columns, rows, truncated)


def _syntax_error(conn: sqlite3.Connection, sql: str, db_path: Path | str) -> SqlResult:
    """sqlglot could not parse ``sql``: let SQLite compile it (EXPLAIN, never run) under the
    authorizer and report SQLite's own message; refuse even if SQLite accepts it."""
    try:
        conn.execute("EXPLAIN " + sql).fetchall()
    except (sqlite3.Error, sqlite3.Warning, ValueError) as exc:
        return SqlResult(False, error=_error_text(exc, sql, db_path, 0.0, float("inf")))
    return SqlResult(False, error="Could not parse this SQL. Write one plain SQLite SELECT "
                                  "statement.")


def _fetch(cursor: sqlite3.Cursor, max_rows: int, max_bytes: int
           ) -> tuple[list[tuple[Any, ...]], bool]:
    rows: list[tuple[Any, ...]] = []
    used = 0
    while True:
        batch = cursor.fetchmany(_FETCH_BATCH)
        if not batch:
            return rows, False
        for row in batch:
            size = sum(_value_size(v) for v in row)
            if len(rows) >= max_rows or used + size > max_bytes:
                return rows, True
            rows.append(tuple(row))
            used += size


def _value_size(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value) + 2
    return 8


def _error_text(exc: Exception, sql: str, db_path: Path | str, timeout_s: float,
                deadline: float) -> str:
    message = str(exc)
    if "interrupted" in message and time.monotonic() >= deadline:
        return (f"Query stopped: it ran longer than the {timeout_s:g} s time limit. "
                "Add join conditions or filters, or avoid cross joins and deep recursion.")
    if "not authorized" in message or "authorization denied" in message:
        return ("Only a single SELECT statement is allowed; SQLite refused this as not a "
                "read (not authorized).")
    if "one statement at a time" in message:
        return "Only a single SELECT statement is allowed; got several statements."
    return explain_error(message, sql, db_path)
