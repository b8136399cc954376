from __future__ import annotations

import pytest

from cortex.nl2sql.scoring import is_ordered, results_match

UNORDERED = "SELECT name, n FROM t"
ORDERED = "SELECT name, n FROM t ORDER BY n DESC LIMIT 3"


def test_order_insensitive_without_order_by() -> None:
    assert results_match([("b", 2), ("a", 1)], [("a", 1), ("b", 2)], UNORDERED)


def test_order_sensitive_with_top_level_order_by() -> None:
    assert results_match([("a", 3), ("b", 2)], [("a", 3), ("b", 2)], ORDERED)
    assert not results_match([("b", 2), ("a", 3)], [("a", 3), ("b", 2)], ORDERED)


def test_order_by_inside_a_subquery_does_not_count() -> None:
    sql = "SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 3)"
    assert not is_ordered(sql)
    assert results_match([(2,), (1,)], [(1,), (2,)], sql)
    assert is_ordered("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1")
    assert is_ordered("WITH x AS (SELECT 1 AS a) SELECT a FROM x ORDER BY a")
    assert is_ordered("SELECT a FROM t ORDER BY")  # unparsable: top-level text scan


def test_multiset_counts_duplicates() -> None:
    assert not results_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], UNORDERED)
    assert not results_match([(1,)], [(1,), (1,)], UNORDERED)


@pytest.mark.parametrize("pred, gold", [
    ([(3,)], [(3.0,)]),
    ([(0.1 + 0.2,)], [(0.3,)]),
    ([(200130.2499999999,)], [(200130.25,)]),
    ([(1.23456,)], [(1.23462,)]),  # equal at 4 decimals
    ([(True,)], [(1,)]),
    ([(None, "x")], [(None, "x")]),
])
def test_value_normalisation_matches(pred: list, gold: list) -> None:
    assert results_match(pred, gold, UNORDERED)


@pytest.mark.parametrize("pred, gold", [
    ([(1.2345,)], [(1.2347,)]),
    ([("Europe",)], [("europe",)]),
    ([(None,)], [(0,)]),
    ([("3",)], [(3,)]),
    ([(1, "a")], [("a", 1)]),  # column order matters
    ([(1,)], [(1, 2)]),
])
def test_value_normalisation_mismatches(pred: list, gold: list) -> None:
    assert not results_match(pred, gold, UNORDERED)
