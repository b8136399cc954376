from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from cortex.core import ToolResult
from cortex.nl2sql.tools import DatabaseAccess, set_database_access
from cortex.tools import TOOLS, load_builtin_tools

load_builtin_tools()


def call(name: str, **args: object) -> ToolResult:
    return TOOLS.get(name)(dict(args))


def test_tools_are_registered() -> None:
    assert {"sql.schema", "sql.execute", "sql.verify"} <= set(TOOLS.names())


def test_schema_full_by_default(builtin_env: Path, dbs: dict[str, Path]) -> None:
    a = call("sql.schema", db="sales", question="What were Europe's sales last quarter?")
    b = call("sql.schema", db="sales", question="How many customers are there?")
    assert a.outcome == "ok" and a.output["db_path"] == str(dbs["sales"])
    assert a.output["schema"] == b.output["schema"]  # one shared prefix per database
    assert a.output["tables"] == sorted(a.output["tables"]) and len(a.output["tables"]) == 9


def test_schema_relevant_tables(builtin_env: Path, dbs: dict[str, Path]) -> None:
    out = call("sql.schema", db=str(dbs["sales"]), question="Which region?", tables="relevant",
               top_k=2).output
    assert out["tables"] == ["countries", "regions"]
    assert out["schema"].startswith("CREATE TABLE countries")


@pytest.mark.parametrize("args, needle", [
    ({"db": "nope"}, "database 'nope' is not served here: use a database name (sales, "),
    ({"db": "/does/not/exist.sqlite"}, "database '/does/not/exist.sqlite' is not served here"),
    ({}, "'db' must be a database name"),
    ({"db": "sales", "tables": "some"}, "'tables' must be 'all' or 'relevant'"),
])
def test_schema_errors(builtin_env: Path, args: dict, needle: str) -> None:
    result = TOOLS.get("sql.schema")(args)
    assert result.outcome == "error" and needle in result.message


def test_execute_and_verify_round_trip(builtin_env: Path) -> None:
    reply = "Here you go:\n```sql\nSELECT name FROM regions WHERE name LIKE 'E%';\n```"
    executed = call("sql.execute", db="sales", sql=reply)
    assert executed.outcome == "ok"
    assert executed.output == {"sql": "SELECT name FROM regions WHERE name LIKE 'E%'",
                               "columns": ["name"], "rows": [["Europe"]], "truncated": False,
                               "error": ""}
    json.dumps(executed.output)
    verified = call("sql.verify", result=executed.output)
    assert verified.outcome == "ok" and verified.output["sql"] == executed.output["sql"]
    assert verified.output["rows"] == [["Europe"]] and verified.output["columns"] == ["name"]


def test_execute_refusal_flows_to_verify_error(builtin_env: Path, dbs: dict[str, Path]) -> None:
    executed = call("sql.execute", db_path=str(dbs["sales"]), sql="DROP TABLE orders")
    assert executed.outcome == "error" and "got DROP" in executed.output["error"]
    verified = call("sql.verify", result=executed.output)
    assert verified.outcome == "error" and "got DROP" in verified.output["message"]


def test_execute_empty_and_suspicious(builtin_env: Path) -> None:
    empty = call("sql.execute", db="sales", sql="SELECT id FROM orders WHERE quarter = '2024Q3'")
    assert call("sql.verify", result=empty.output).outcome == "empty"
    null = call("sql.execute", db="sales",
                sql="SELECT SUM(total_amount) FROM orders WHERE quarter = '2024Q3'")
    assert call("sql.verify", result=null.output).outcome == "suspicious"


def test_execute_without_sql_or_db(builtin_env: Path) -> None:
    no_sql = call("sql.execute", db="sales", sql="I am not sure.")
    assert no_sql.outcome == "error" and "No SQL query found" in no_sql.message
    no_db = call("sql.execute", sql="SELECT 1")
    assert no_db.outcome == "error" and "'db' must be" in no_db.message


def test_blobs_become_json(builtin_env: Path) -> None:
    out = call("sql.execute", db="sales", sql="SELECT zeroblob(4)").output
    assert out["rows"] == [["<blob 4 bytes>"]]


def test_verify_rejects_garbage() -> None:
    result = call("sql.verify", result="not a dict")
    assert result.outcome == "error" and result.output["label"] == "error"


def test_a_client_cannot_open_a_file_outside_the_allowed_databases(tmp_path: Path,
                                                                   builtin_env: Path) -> None:
    # db comes from API clients: a path outside the policy is refused with one message,
    # whether the file exists or not (no probing), and "~" is not expanded.
    secret = tmp_path / "secret.sqlite"
    with sqlite3.connect(secret) as conn:
        conn.execute("CREATE TABLE secrets (k TEXT, v TEXT)")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(secret, allowed / "ok.sqlite")
    shutil.copy(secret, tmp_path / "named.sqlite")
    (allowed / "escape.sqlite").symlink_to(secret)
    previous = set_database_access(DatabaseAccess(names={"mine": tmp_path / "named.sqlite"},
                                                  dirs=(allowed,)))
    try:
        messages = set()
        (allowed / "creds.txt").write_text("not a database")
        for db in (str(secret), str(tmp_path / "missing.sqlite"), "../secret.sqlite",
                   str(allowed / "escape.sqlite"), "~/secret.sqlite", "/etc/passwd",
                   "creds.txt", str(allowed / "creds.txt"), "ok.sqlite\x00.txt",
                   str(allowed / "gone.sqlite")):
            out = call("sql.execute", db=db, sql="SELECT * FROM secrets")
            assert out.outcome == "error", db
            messages.add(out.message.replace(repr(db), "DB"))
        assert len(messages) == 1, messages
        assert "not served here" in messages.pop()
        # names, files under db_dirs (absolute or relative) and the built-ins work
        for db in ("mine", "ok.sqlite", str(allowed / "ok.sqlite"), "sales"):
            assert call("sql.execute", db=db, sql="SELECT 1").outcome == "ok", db
        # the schema tool's db_path of a named database is accepted by sql.execute
        path = call("sql.schema", db="mine", question="q").output["db_path"]
        assert call("sql.execute", db_path=path, sql="SELECT 1").outcome == "ok"
    finally:
        set_database_access(previous)
