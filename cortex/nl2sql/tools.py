"""The NL2SQL agent's tool stages, registered in ``cortex.tools.TOOLS``.

* ``sql.schema``  {db, question, tables?, top_k?, values?} -> {schema, tables, db_path}
* ``sql.execute`` {db_path | db, sql}   -> {sql, columns, rows, truncated, error}
* ``sql.verify``  {result: <execute output>} -> {label, message, sql, rows, columns}

``db`` is a built-in database name (``sales``, ``hr``, ``logistics``, ``library``;
generated on first use by ``ensure_databases``), a name the deployment registered, or a
path to a SQLite file the deployment allows (``DatabaseAccess``: the config's
``databases`` and ``db_dirs``). ``db`` may come from an API client, so any other path is
refused -- with the same message whether or not the file exists.
Tools never raise on bad input: they return outcome ``error`` with a message.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex.core import ERROR, OK, ToolResult
from cortex.nl2sql.datasets import DB_IDS, ensure_databases
from cortex.nl2sql.extract import extract_sql
from cortex.nl2sql.sandbox import run_query
from cortex.nl2sql.schema import introspect, render_schema
from cortex.nl2sql.schema_select import DEFAULT_TOP_K, select_tables
from cortex.nl2sql.verify import verify_result
from cortex.tools import TOOLS


class ToolArgError(ValueError):
    """A tool argument is missing or wrong; the message names it."""


@dataclass(frozen=True, slots=True)
class DatabaseAccess:
    """Which SQLite files the tools open besides the built-in databases.

    Attributes:
        names: extra database names -> their files (config ``databases``).
        dirs: a ``db`` path naming a file under one of these (symlinks resolved) is
            allowed (config ``db_dirs``); a relative path is looked up in each in turn.
    """

    names: Mapping[str, Path] = field(default_factory=dict)
    dirs: tuple[Path, ...] = ()

    def names_text(self) -> str:
        return ", ".join([*DB_IDS, *sorted(self.names)])


_access = DatabaseAccess()
DB_SUFFIXES = (".sqlite", ".sqlite3", ".db")  # what a db_dirs path may name


def set_database_access(access: DatabaseAccess) -> DatabaseAccess:
    """Make ``access`` the process's database policy (a runtime sets its config's when it
    is built); returns the previous one."""
    global _access
    previous, _access = _access, access
    return previous


def database_access() -> DatabaseAccess:
    return _access


def resolve_db(db: Any) -> Path:
    """A database name, or a path the access policy allows -> the SQLite file.

    Raises:
        ToolArgError: ``db`` is empty, an unknown name, or a path outside what the policy
            allows or missing there (the message does not say which of those two).
    """
    access = _access
    if not isinstance(db, (str, Path)) or not str(db).strip():
        raise ToolArgError(f"'db' must be a database name ({access.names_text()}), got {db!r}")
    text = str(db).strip()
    if text in DB_IDS:
        return ensure_databases()[text]
    if text in access.names:
        return access.names[text]
    path = _allowed_path(Path(text), access)
    if path is None:
        where = (f" or a {'/'.join(DB_SUFFIXES)} file under "
                 f"{', '.join(map(str, access.dirs))}" if access.dirs else "")
        raise ToolArgError(f"database {text!r} is not served here: use a database name "
                           f"({access.names_text()}){where}")
    return path


def _allowed_path(path: Path, access: DatabaseAccess) -> Path | None:
    """``path`` resolved when it is a built-in or registered file or lies under an allowed
    directory and exists; else None. Client input: no ``~`` expansion."""
    candidates = [path] if path.is_absolute() else [d / path for d in access.dirs]
    known = {p.resolve() for p in (*ensure_databases().values(), *access.names.values())}
    for candidate in candidates:
        try:
            real = candidate.resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
            continue
        if real in known or (real.suffix.lower() in DB_SUFFIXES and real.is_file()
                             and any(real.is_relative_to(d.resolve()) for d in access.dirs)):
            return real
    return None


@TOOLS.register("sql.schema")
def schema_tool(args: dict[str, Any]) -> ToolResult:
    """Schema text for the prompt: all tables by default (``tables: "all"``, one shared
    prefix per database), or ``tables: "relevant"`` for the ``top_k`` selected ones."""
    try:
        db_path = resolve_db(args.get("db"))
        mode = args.get("tables", "all")
        if mode not in ("all", "relevant"):
            raise ToolArgError(f"'tables' must be 'all' or 'relevant', got {mode!r}")
        schema = introspect(db_path)
        if mode == "relevant":
            chosen = select_tables(schema, str(args.get("question", "")),
                                   int(args.get("top_k", DEFAULT_TOP_K)))
        else:
            chosen = schema.table_names
        text = render_schema(schema, chosen, bool(args.get("values", True)))
    except (ValueError, TypeError, KeyError, OSError) as exc:
        return ToolResult(ERROR, {"schema": "", "tables": [], "db_path": ""}, str(exc))
    names = [n for n in schema.table_names if n in set(chosen)]
    return ToolResult(OK, {"schema": text, "tables": names, "db_path": str(db_path)})


@TOOLS.register("sql.execute")
def execute_tool(args: dict[str, Any]) -> ToolResult:
    """Run the SQL in ``args["sql"]`` (fences and prose stripped by ``extract_sql``)."""
    raw = args.get("sql")
    sql = extract_sql(raw) if isinstance(raw, str) else ""
    try:
        db_path = resolve_db(args.get("db_path") or args.get("db"))
    except ToolArgError as exc:
        return _execute_output(sql, ok=False, error=str(exc))
    if not sql:
        return _execute_output(sql, ok=False, error="No SQL query found in the reply. Reply "
                                                    "with one SELECT statement.")
    result = run_query(db_path, sql)
    return _execute_output(sql, result.ok, result.columns, result.rows, result.truncated,
                           result.error)


def _execute_output(sql: str, ok: bool, columns: list[str] | None = None,
                    rows: list[tuple[Any, ...]] | None = None, truncated: bool = False,
                    error: str = "") -> ToolResult:
    output = {"sql": sql, "columns": list(columns or []),
              "rows": [[_jsonable(v) for v in row] for row in rows or []],
              "truncated": truncated, "error": error}
    return ToolResult(OK if ok else ERROR, output, error)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<blob {len(bytes(value))} bytes>"
    return value


@TOOLS.register("sql.verify")
def verify_tool(args: dict[str, Any]) -> ToolResult:
    """Label the ``sql.execute`` output in ``args["result"]``: ok/error/empty/suspicious."""
    result = args.get("result")
    if not isinstance(result, dict):
        message = f"'result' must be the sql.execute output (a dict), got {result!r:.80}"
        return ToolResult(ERROR, {"label": ERROR, "message": message, "sql": "", "rows": [],
                                  "columns": []}, message)
    error = str(result.get("error") or "")
    rows = result.get("rows") or []
    sql = str(result.get("sql") or "")
    verdict = verify_result(not error, rows, error, sql, bool(result.get("truncated")))
    output = {"label": verdict.label, "message": verdict.message, "sql": sql, "rows": rows,
              "columns": list(result.get("columns") or [])}
    return ToolResult(verdict.label, output, verdict.message)
