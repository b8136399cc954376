from __future__ import annotations

import hashlib
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from cortex.nl2sql import sandbox
from cortex.nl2sql.sandbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, run_query

ONE_SELECT = "Only a single SELECT statement is allowed"

HOSTILE = {
    "insert": "INSERT INTO regions VALUES (99, 'Atlantis')",
    "insert_or_replace": "INSERT OR REPLACE INTO regions VALUES (1, 'Mordor')",
    "replace": "REPLACE INTO regions VALUES (1, 'Mordor')",
    "update": "UPDATE orders SET total_amount = 0",
    "delete": "DELETE FROM orders",
    "cte_delete": "WITH x AS (SELECT 1) DELETE FROM orders",
    "cte_insert": "WITH x AS (SELECT 1) INSERT INTO regions SELECT 98, 'y' FROM x",
    "create_table": "CREATE TABLE evil (x INTEGER)",
    "create_temp": "CREATE TEMP TABLE t AS SELECT * FROM orders",
    "create_view": "CREATE VIEW v AS SELECT * FROM orders",
    "create_index": "CREATE INDEX i ON orders(status)",
    "create_trigger": "CREATE TRIGGER tr AFTER INSERT ON orders BEGIN DELETE FROM orders; END",
    "drop": "DROP TABLE orders",
    "alter_add": "ALTER TABLE orders ADD COLUMN hacked TEXT",
    "alter_rename": "ALTER TABLE orders RENAME TO gone",
    "attach": "ATTACH DATABASE '{tmp}/evil.db' AS evil",
    "detach": "DETACH DATABASE main",
    "pragma_write": "PRAGMA writable_schema = 1",
    "pragma_query_only": "PRAGMA query_only = OFF",
    "pragma_journal": "PRAGMA journal_mode = WAL",
    "pragma_read": "PRAGMA table_info(orders)",
    "vacuum": "VACUUM",
    "vacuum_into": "VACUUM INTO '{tmp}/copy.db'",
    "multi_drop": "SELECT 1; DROP TABLE orders",
    "multi_delete": "SELECT * FROM orders; DELETE FROM orders;",
    "multi_select": "SELECT 1; SELECT 2",
    "load_extension": "SELECT load_extension('{tmp}/evil.so')",
    "load_extension_nested": "SELECT name FROM regions WHERE name = LOAD_EXTENSION('x')",
    "begin": "BEGIN",
    "commit": "COMMIT",
    "analyze": "ANALYZE",
    "reindex": "REINDEX",
    "values": "VALUES (1)",
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_defaults() -> None:
    assert (DEFAULT_MAX_ROWS, DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT_S) == (200, 256 * 1024, 2.0)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_statement_is_refused_and_file_unchanged(name: str, sales_copy: Path,
                                                         tmp_path: Path) -> None:
    before = digest(sales_copy)
    result = run_query(sales_copy, HOSTILE[name].format(tmp=tmp_path))
    assert not result.ok and result.rows == []
    assert ONE_SELECT in result.error or "not allowed" in result.error, result.error
    assert digest(sales_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sales.sqlite"]


@pytest.mark.parametrize("name", sorted(set(HOSTILE) - {"multi_select", "values"}))
def test_authorizer_and_read_only_open_hold_without_the_parser(
        name: str, sales_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: with the sqlglot check switched off, SQLite still refuses."""
    monkeypatch.setattr(sandbox, "check_statement", lambda sql: None)
    before = digest(sales_copy)
    result = run_query(sales_copy, HOSTILE[name].format(tmp=tmp_path))
    assert not result.ok, name
    assert digest(sales_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sales.sqlite"]


@pytest.mark.parametrize("name", ["insert", "update", "delete", "drop", "create_table",
                                  "alter_add", "cte_insert", "attach", "vacuum_into"])
def test_read_only_connection_holds_without_parser_and_authorizer(
        name: str, sales_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Third layer: the mode=ro connection (and the ATTACH limit) alone still refuse."""
    if name in ("attach", "vacuum_into") and sys.version_info < (3, 11):
        pytest.skip("the ATTACH limit needs Connection.setlimit (Python 3.11)")
    monkeypatch.setattr(sandbox, "check_statement", lambda sql: None)
    monkeypatch.setattr(sandbox, "read_only_authorizer", lambda *args: 0)
    before = digest(sales_copy)
    result = run_query(sales_copy, HOSTILE[name].format(tmp=tmp_path))
    assert not result.ok and ("readonly" in result.error or "attached" in result.error)
    assert digest(sales_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sales.sqlite"]


def test_error_messages_are_actionable(sales_copy: Path) -> None:
    assert run_query(sales_copy, "DELETE FROM orders").error.startswith(
        "Only a single SELECT statement is allowed; got DELETE.")
    error = run_query(sales_copy, "SELECT foo FROM orders").error
    assert error.startswith("no such column: foo. Available columns of table orders: id, ")
    assert "total_amount" in error
    error = run_query(sales_copy, "SELECT c.region FROM customers c").error
    assert "Column region exists in table" not in error and "country_id" in error
    error = run_query(sales_copy, "SELECT totl_amount FROM orders").error
    assert "Did you mean total_amount?" in error
    error = run_query(sales_copy, "SELECT name FROM customers WHERE quarter = '2024-Q3'").error
    assert error.endswith("Column quarter exists in table orders (join it).")
    error = run_query(sales_copy, "SELECT * FROM order_item").error
    assert "no such table: order_item" in error and "Did you mean order_items?" in error
    error = run_query(sales_copy, "SELECT id FROM orders JOIN customers "
                                  "ON orders.customer_id = customers.id").error
    assert "ambiguous column name: id" in error and "orders.id" in error
    error = run_query(sales_copy, "SELECT YEAR(order_date) FROM orders").error
    assert "strftime('%Y', col)" in error


def test_syntax_errors_come_from_sqlite(sales_copy: Path) -> None:
    error = run_query(sales_copy, "SELEC * FROM orders").error
    assert 'near "SELEC": syntax error' in error
    assert "unrecognized token" in run_query(sales_copy, "SELECT 'open FROM orders").error


def test_reads_work_with_cte_union_and_semicolon(sales_copy: Path) -> None:
    result = run_query(sales_copy, "WITH r AS (SELECT name FROM regions) "
                                   "SELECT name FROM r WHERE name LIKE 'E%';")
    assert result.ok and result.rows == [("Europe",)] and result.columns == ["name"]
    result = run_query(sales_copy, "SELECT 1 UNION SELECT 2 ORDER BY 1")
    assert result.ok and result.rows == [(1,), (2,)] and not result.truncated


def test_runaway_recursive_cte_is_stopped(sales_copy: Path) -> None:
    sql = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT MAX(x) FROM c")
    started = time.monotonic()
    result = run_query(sales_copy, sql, timeout_s=0.3)
    assert time.monotonic() - started < 2.0
    assert not result.ok and "time limit" in result.error


def test_huge_sorted_cross_join_times_out(sales_copy: Path) -> None:
    sql = "SELECT a.id, b.id FROM order_items a, order_items b ORDER BY a.unit_price * b.id"
    result = run_query(sales_copy, sql, timeout_s=0.3)
    assert not result.ok and "0.3 s time limit" in result.error


def test_row_cap_truncates(sales_copy: Path) -> None:
    result = run_query(sales_copy, "SELECT a.id, b.id FROM orders a, orders b")
    assert result.ok and result.truncated and len(result.rows) == DEFAULT_MAX_ROWS
    result = run_query(sales_copy, "SELECT id FROM regions", max_rows=6)
    assert result.ok and not result.truncated and len(result.rows) == 6


def test_byte_cap_truncates(sales_copy: Path) -> None:
    sql = "SELECT a.email, b.email FROM customers a, customers b"
    result = run_query(sales_copy, sql, max_rows=100_000, max_bytes=10_000)
    size = sum(len(v) + 2 for row in result.rows for v in row)
    assert result.ok and result.truncated and 0 < size <= 10_000
    wide = run_query(sales_copy, "SELECT hex(zeroblob(150000))")  # 300,000 characters
    assert wide.ok and wide.truncated and wide.rows == []


@pytest.mark.parametrize("sql", ["SELECT printf('%.*c', 2000000000, 'x')",
                                 "SELECT format('%.2000000000c', 'x')",
                                 "SELECT printf('%!*.*c', 5, 2147483647, 'x')",
                                 # spelled as SQLite reads them: a number in text, a blob
                                 # format, %n (takes no argument) before the *
                                 "SELECT printf('%.*c', '2000000000x', 'x')",
                                 "SELECT printf(CAST('%.*c' AS BLOB), 2000000000, 'x')",
                                 "SELECT printf('%n%.*c', 2000000000, 'x')"])
def test_one_printf_call_cannot_outrun_the_time_limit(sales_copy: Path, sql: str) -> None:
    # The progress handler never runs inside one function call: SQLite's own %c with a
    # precision of 2e9 looped for ~13 s under a 2 s limit. Over MAX_FORMAT_WIDTH: NULL,
    # as SQLite gives for a result over its length limit.
    started = time.monotonic()
    result = run_query(sales_copy, sql, timeout_s=0.5)
    assert time.monotonic() - started < 5.0
    assert result.ok and result.rows == [(None,)]


def test_printf_and_format_keep_sqlite_semantics(sales_copy: Path) -> None:
    sql = ("SELECT printf('%5.2f|%s|%d%%|%-4s|%,d|%.*c|%*d', 3.14159, 'ab', 7, 'z', "
           "1234567, 3, 'x', 4, 42), format('%q', 'it''s'), printf(NULL), printf('%s')")
    result = run_query(sales_copy, sql)
    assert result.ok and result.rows == [(" 3.14|ab|7%|z   |1,234,567|xxx|  42", "it''s",
                                          None, "")]


def test_printf_results_follow_the_callers_length_limit(sales_copy: Path) -> None:
    sql = "SELECT length(printf('%s', hex(zeroblob(550000))))"  # 1.1 MB of text
    assert run_query(sales_copy, sql, max_bytes=4 << 20).rows == [(1_100_000,)]


def test_long_like_patterns_are_refused(sales_copy: Path) -> None:
    result = run_query(sales_copy, "SELECT 'a' LIKE '" + "%a" * 600 + "'")
    assert not result.ok and "pattern too complex" in result.error


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Connection.setlimit needs 3.11")
def test_giant_values_hit_the_length_limit(sales_copy: Path) -> None:
    result = run_query(sales_copy, "SELECT length(randomblob(500000000))")
    assert not result.ok and "too big" in result.error


def test_missing_database_is_an_error_not_an_exception(tmp_path: Path) -> None:
    result = run_query(tmp_path / "missing.sqlite", "SELECT 1")
    assert not result.ok and "database file not found" in result.error
    assert not (tmp_path / "missing.sqlite").exists()


SAME_AS_SQLITE = [
    ("SELECT instr('abc',''), instr(x'616263', x'62'), instr('héllo','l'), instr(NULL,'a'), "
    "instr(12345, 34), instr('abc', x'62'), instr('abc', 'z')"),
    ("SELECT replace('aXbXc','X','--'), replace('abc','',1), replace(NULL,'a','b'), "
    "replace(12345, 3, 'z'), typeof(replace(x'6162','a','z')), replace('aaa', 'aa', 'b')"),
    ("SELECT trim('  ab  '), ltrim('xxabxx','x'), rtrim('xxabxx','xa'), trim(NULL), "
    "trim('ab', NULL), trim(123, 1), typeof(trim(x'2061')), trim('', 'a'), ltrim('  a')"),
    ("SELECT replace(5,'','x'), typeof(replace(5,'','x')), replace('abc','',NULL), "
     "replace(12, char(0)||'a', 'X'), typeof(replace(12, char(0)||'a', 'X'))"),
    "SELECT trim('abc','a'||char(0)||'b'), trim(char(0),char(0)), rtrim('xa', 'a'||char(0))",
    ("SELECT instr(x'89504e47', 'PNG'), instr(x'ff41', 'A'), instr(x'c3a9c3a9', 'é'), "
     "instr('é', x'a9'), instr(x'41ff42', x'ff')"),
    "SELECT printf('%5s|%.2s|%-3d|%c', 'ab', 'xyz', 7, 'q'), printf('a%Tb')",
]


@pytest.mark.parametrize("sql", SAME_AS_SQLITE)
def test_linear_instr_replace_and_trim_keep_sqlite_semantics(sales_copy: Path, sql: str) -> None:
    with sqlite3.connect(":memory:") as plain:
        want = plain.execute(sql).fetchall()
    assert run_query(sales_copy, sql).rows == want


def test_replace_over_the_length_limit_is_sqlites_error(sales_copy: Path) -> None:
    result = run_query(sales_copy, "SELECT length(replace(hex(zeroblob(400000)),'0','ab'))")
    assert not result.ok and "too big" in result.error


def test_many_printf_conversions_cannot_outrun_the_time_limit(sales_copy: Path) -> None:
    # each %.9999c is within MAX_FORMAT_WIDTH, 74,500 of them are not: 9.8 s before
    sql = "SELECT printf(replace(hex(zeroblob(149000)),'00','%.9999c'))"
    started = time.monotonic()
    result = run_query(sales_copy, sql, timeout_s=0.5)
    assert time.monotonic() - started < 2.0 and result.rows == [(None,)]


@pytest.mark.parametrize("sql", [
    "SELECT instr(hex(zeroblob(400000))||'1', hex(zeroblob(200000))||'1')",
    "SELECT length(trim(hex(zeroblob(400000)), replace(hex(zeroblob(400000)),'0','1')||'0'))",
    "SELECT length(replace(hex(zeroblob(400000)), hex(zeroblob(200000))||'1', 'x'))"])
def test_quadratic_builtins_cannot_outrun_the_time_limit(sales_copy: Path, sql: str) -> None:
    # SQLite's own instr took 4.6 s here under a 2 s limit: one call, no VM step between
    started = time.monotonic()
    result = run_query(sales_copy, sql, timeout_s=0.5)
    assert time.monotonic() - started < 2.0 and result.ok and len(result.rows) == 1


def test_deep_nesting_and_a_file_that_is_not_sqlite_are_errors_not_exceptions(
        sales_copy: Path, tmp_path: Path) -> None:
    deep = run_query(sales_copy, "SELECT " + "(" * 60 + "1" + ")" * 60)
    assert not deep.ok and "Could not parse" in deep.error  # sqlglot's RecursionError
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    result = run_query(junk, "SELECT 1 FROM t")
    assert not result.ok and "not a database" in result.error


def test_json_patch_is_refused(sales_copy: Path) -> None:
    result = run_query(sales_copy, "SELECT json_patch('{}', '{}')")
    assert not result.ok and "json_patch() is not allowed" in result.error
