from __future__ import annotations

import pytest

from cortex.nl2sql.extract import extract_sql


@pytest.mark.parametrize("text, sql", [
    ("SELECT 1;", "SELECT 1"),
    ("  select count(*) from orders", "select count(*) from orders"),
    ("SQL: SELECT a FROM t WHERE b = 'x;y'; -- done", "SELECT a FROM t WHERE b = 'x;y'"),
    ("```sql\nSELECT * FROM t\n```\nThis returns all rows.", "SELECT * FROM t"),
    ("Sure!\n```SQLite\nSELECT a\nFROM t;\n```", "SELECT a\nFROM t"),
    ("```\nselect a from t", "select a from t"),  # fence cut off by a stop sequence
    ("Here is the query with a join:\nSELECT a FROM t JOIN u ON t.id = u.id",
     "SELECT a FROM t JOIN u ON t.id = u.id"),
    ("WITH x AS (SELECT 1) SELECT * FROM x;", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("WITH RECURSIVE c(n) AS (SELECT 1) SELECT n FROM c;",
     "WITH RECURSIVE c(n) AS (SELECT 1) SELECT n FROM c"),
    ("(SELECT 1) UNION (SELECT 2)", "(SELECT 1) UNION (SELECT 2)"),
    ("SELECT a\nFROM t\n\nExplanation: it selects a.", "SELECT a\nFROM t"),
    ("SELECT name FROM t WHERE note = 'a\n\nb'", "SELECT name FROM t WHERE note = 'a\n\nb'"),
    ("SELECT 1; DROP TABLE t", "SELECT 1"),
    ("DROP TABLE t; SELECT 1", "DROP TABLE t"),  # kept so the sandbox refuses it by name
    ("```sql\ndelete from t\n```", "delete from t"),
    ("I do not know.", ""),
    ("The `SELECT` keyword is a function of `SELECT` itself.", ""),
    ("SELECT*FROM t", "SELECT*FROM t"),
    ("Drop me a line", ""),
    ("Update: the fixed query is SELECT a FROM t", "SELECT a FROM t"),
    ("PRAGMA table_info(t)", "PRAGMA table_info(t)"),
    ("", ""),
])
def test_extract_sql(text: str, sql: str) -> None:
    assert extract_sql(text) == sql
