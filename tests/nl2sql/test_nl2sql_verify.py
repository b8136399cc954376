from __future__ import annotations

import pytest

from cortex.nl2sql.verify import SUSPICIOUS, verify_result


@pytest.mark.parametrize("ok, rows, error, sql, label", [
    (False, [], "no such column: foo", "SELECT foo FROM t", "error"),
    (True, [], "", "SELECT a FROM t WHERE b = 'x'", "empty"),
    (True, [(None,), (None,)], "", "SELECT a FROM t", SUSPICIOUS),
    (True, [(None,)], "", "SELECT SUM(a) FROM t WHERE b = 'x'", SUSPICIOUS),
    (True, [(0, None)], "", "SELECT COUNT(*), AVG(a) FROM t WHERE b = 'x'", SUSPICIOUS),
    (True, [(0,)], "", "", SUSPICIOUS),
    (True, [(0.0,)], "", "SELECT total(a) FROM t WHERE b = 'x'", SUSPICIOUS),  # no SQL: treated as an aggregate
    (True, [(0,)], "", "SELECT is_complete FROM quarters WHERE name = '2024-Q4'", "ok"),
    (True, [(0,), (0,)], "", "SELECT COUNT(*) FROM t GROUP BY a", "ok"),
    (True, [(3,)], "", "SELECT COUNT(*) FROM t", "ok"),
    (True, [("Europe", None)], "", "SELECT a, b FROM t", "ok"),
])
def test_labels(ok: bool, rows: list, error: str, sql: str, label: str) -> None:
    assert verify_result(ok, rows, error, sql).label == label


def test_messages_tell_the_fixer_what_to_do() -> None:
    assert verify_result(False, [], "no such column: foo. Columns: a.").message == (
        "The query failed: no such column: foo. Columns: a. Fix the query.")
    assert "no rows" in verify_result(True, [], sql="SELECT 1").message
    assert "filters probably match no rows" in verify_result(
        True, [(0,)], sql="SELECT COUNT(*) FROM t").message
    assert "truncated" in verify_result(True, [(1,)], sql="SELECT 1", truncated=True).message
