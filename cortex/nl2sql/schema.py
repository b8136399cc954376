"""Schema introspection and rendering for prompts.

``introspect(db_path)`` reads tables, column types, primary and foreign keys and a few
sample values per column (read-only connection; cached per path, invalidated when the
file's size or mtime changes). ``render_schema`` turns a table set into compact
``CREATE TABLE`` lines, always in canonical (alphabetical) table order, so the same
database and table set give byte-identical text: prompts that share it share a KV prefix.
Table selection for a question lives in ``cortex.nl2sql.schema_select``.
"""
from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MAX_CATEGORY_VALUES = 10  # a TEXT column with at most this many distinct values is listed
MAX_VOCABULARY = 200  # TEXT values kept for matching question words (not rendered)
NUM_SAMPLES = 3
SCAN_ROWS = 10_000  # distinct counts look at the first rows only (big external DBs)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}.*")


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    name: str
    type: str
    is_primary_key: bool
    samples: tuple[str | int | float, ...]  # a few distinct non-NULL values
    is_categorical: bool  # TEXT with few distinct values: ``samples`` holds all of them
    vocabulary: tuple[str, ...] = ()  # all distinct TEXT values if few (table selection)


@dataclass(frozen=True, slots=True)
class ForeignKey:
    column: str
    ref_table: str
    ref_column: str


@dataclass(frozen=True, slots=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    foreign_keys: tuple[ForeignKey, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def primary_key(self) -> list[str]:
        return [c.name for c in self.columns if c.is_primary_key]


@dataclass(frozen=True, slots=True)
class DatabaseSchema:
    """All user tables of one database, in canonical (alphabetical) order."""

    db_path: str
    tables: tuple[TableInfo, ...]

    @property
    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]

    def table(self, name: str) -> TableInfo | None:
        lowered = name.lower()
        return next((t for t in self.tables if t.name.lower() == lowered), None)


def connect_readonly(db_path: Path | str) -> sqlite3.Connection:
    """Open ``db_path`` read-only (``mode=ro`` URI) with ``query_only`` on.

    Raises:
        FileNotFoundError: the file does not exist (SQLite would say "unable to open").
    """
    path = Path(db_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"database file not found: {path}")
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")
    return conn


def introspect(db_path: Path | str) -> DatabaseSchema:
    """The schema of ``db_path`` (cached; re-read when the file changes)."""
    path = Path(db_path).resolve()
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise FileNotFoundError(f"database file not found: {path}")
    return _introspect_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _introspect_cached(path: str, size: int, mtime_ns: int) -> DatabaseSchema:
    conn = connect_readonly(path)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return DatabaseSchema(path, tuple(_table_info(conn, n) for n in names))
    finally:
        conn.close()


def _table_info(conn: sqlite3.Connection, table: str) -> TableInfo:
    quoted = _quote(table)
    columns = []
    for _, name, col_type, _, _, pk in conn.execute(f"PRAGMA table_info({quoted})").fetchall():
        samples, categorical = _samples(conn, quoted, name, col_type)
        columns.append(ColumnInfo(name, (col_type or "").upper(), bool(pk), samples, categorical,
                                  _vocabulary(conn, quoted, name, col_type)))
    fks = tuple(ForeignKey(row[3], row[2], row[4] or "rowid")
                for row in conn.execute(f"PRAGMA foreign_key_list({quoted})"))
    return TableInfo(table, tuple(columns), fks)


def _samples(conn: sqlite3.Connection, table: str, column: str, col_type: str
             ) -> tuple[tuple[str | int | float, ...], bool]:
    col = _quote(column)
    scan = f"(SELECT {col} AS v FROM {table} LIMIT {SCAN_ROWS})"
    if _is_text(col_type):
        (distinct,) = conn.execute(f"SELECT COUNT(DISTINCT v) FROM {scan}").fetchone()
        if 0 < distinct <= MAX_CATEGORY_VALUES:
            rows = conn.execute(f"SELECT DISTINCT v FROM {scan} WHERE v IS NOT NULL ORDER BY v")
            values = tuple(_plain(r[0]) for r in rows)
            if not all(isinstance(v, str) and _DATE.fullmatch(v) for v in values):
                return values, True  # dates are not categories, even when few
    rows = conn.execute(f"SELECT DISTINCT v FROM {scan} WHERE v IS NOT NULL LIMIT {NUM_SAMPLES}")
    return tuple(_plain(r[0]) for r in rows), False


def _vocabulary(conn: sqlite3.Connection, table: str, column: str, col_type: str
                ) -> tuple[str, ...]:
    if not _is_text(col_type):
        return ()
    col = _quote(column)
    rows = conn.execute(f"SELECT DISTINCT {col} FROM (SELECT {col} FROM {table} LIMIT "
                        f"{SCAN_ROWS}) WHERE typeof({col}) = 'text' ORDER BY {col} "
                        f"LIMIT {MAX_VOCABULARY + 1}").fetchall()
    return tuple(r[0] for r in rows) if len(rows) <= MAX_VOCABULARY else ()


def _is_text(col_type: str) -> bool:
    upper = (col_type or "").upper()
    return "CHAR" in upper or "TEXT" in upper or "CLOB" in upper or not upper


def _plain(value: object) -> str | int | float:
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, bytes):
        return f"<blob {len(value)} bytes>"
    return str(value)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# ---------------------------------------------------------------- rendering


def render_schema(schema: DatabaseSchema, tables: Iterable[str] | None = None,
                  include_values: bool = True) -> str:
    """Compact ``CREATE TABLE`` lines for ``tables`` (all when None), canonical order.

    Args:
        schema: from ``introspect``.
        tables: table names to include; order and duplicates do not matter.
        include_values: add a ``-- column: 'a', 'b'`` line listing the values of each
            categorical TEXT column (what a model needs for ``WHERE region = 'Europe'``).
    Raises:
        KeyError: a requested table does not exist.
    """
    wanted = None if tables is None else {t.lower() for t in tables}
    if wanted is not None:
        unknown = wanted - {t.lower() for t in schema.table_names}
        if unknown:
            raise KeyError(f"unknown table(s) {', '.join(sorted(unknown))} "
                           f"(tables: {', '.join(schema.table_names)})")
    lines = []
    for table in schema.tables:  # already canonical
        if wanted is None or table.name.lower() in wanted:
            lines += _render_table(table, include_values)
    return "\n".join(lines)


def render_full_schema(db: Path | str | DatabaseSchema, include_values: bool = True) -> str:
    """All tables of ``db`` (a path or an introspected schema), canonical order."""
    schema = db if isinstance(db, DatabaseSchema) else introspect(db)
    return render_schema(schema, None, include_values)


def _render_table(table: TableInfo, include_values: bool) -> list[str]:
    fk_of = {fk.column: fk for fk in table.foreign_keys}
    single_pk = len(table.primary_key) == 1
    parts = []
    for col in table.columns:
        text = f"{col.name} {col.type}".rstrip()
        if col.is_primary_key and single_pk:
            text += " PRIMARY KEY"
        if col.name in fk_of:
            fk = fk_of[col.name]
            text += f" REFERENCES {fk.ref_table}({fk.ref_column})"
        parts.append(text)
    if len(table.primary_key) > 1:
        parts.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
    lines = [f"CREATE TABLE {table.name} ({', '.join(parts)});"]
    if include_values:
        for col in table.columns:
            if col.is_categorical and col.samples:
                values = ", ".join(_literal(v) for v in col.samples)
                lines.append(f"-- {table.name}.{col.name} values: {values}")
    return lines


def _literal(value: str | float) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)
