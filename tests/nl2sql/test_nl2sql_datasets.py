from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from cortex.nl2sql import datasets
from cortex.nl2sql.datasets import (
    DB_IDS,
    DIFFICULTIES,
    default_cache_dir,
    ensure_databases,
    generate_database,
    load_questions,
)
from cortex.nl2sql.dbgen_sales import LAST_QUARTER
from cortex.nl2sql.sandbox import run_query

HEADLINE = "What were Europe's sales last quarter?"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    for db_id in DB_IDS:
        first = generate_database(db_id, tmp_path / "a" / f"{db_id}.sqlite")
        second = generate_database(db_id, tmp_path / "b" / f"{db_id}.sqlite")
        assert digest(first) == digest(second), db_id


def test_other_seed_gives_other_data(tmp_path: Path) -> None:
    a = generate_database("hr", tmp_path / "a.sqlite", seed=1)
    b = generate_database("hr", tmp_path / "b.sqlite", seed=2)
    assert digest(a) != digest(b)


def test_ensure_databases_layout_size_and_keys(dbs: dict[str, Path]) -> None:
    assert list(dbs) == ["sales", "hr", "logistics", "library"]
    for db_id, path in dbs.items():
        assert path == path.parent.parent / db_id / f"{db_id}.sqlite"
        assert path.stat().st_size < 2 * 1024 * 1024
        conn = sqlite3.connect(path)
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        assert 5 <= len(tables) <= 15, (db_id, tables)
        for table in tables:
            pk = [r for r in conn.execute(f"PRAGMA table_info({table})") if r[5]]
            assert pk, f"{db_id}.{table} has no primary key"
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0
        assert sum(1 for t in tables for _ in conn.execute(f"PRAGMA foreign_key_list({t})")) >= 4
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.close()


def test_ensure_databases_reuses_cache_and_leaves_no_temp_files(tmp_path: Path) -> None:
    first = ensure_databases(tmp_path)
    stamps = {k: p.stat().st_mtime_ns for k, p in first.items()}
    second = ensure_databases(tmp_path)
    assert {k: p.stat().st_mtime_ns for k, p in second.items()} == stamps
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".sqlite"]
    assert leftovers == []


def test_failed_generation_leaves_nothing_behind(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(data: object, path: Path) -> None:
        path.write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr("cortex.nl2sql.dbgen_common._fill", boom)
    with pytest.raises(RuntimeError):
        generate_database("sales", tmp_path / "sales" / "sales.sqlite")
    assert list((tmp_path / "sales").iterdir()) == []


def test_cache_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORTEX_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "nl2sql" / "v1"
    monkeypatch.delenv("CORTEX_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "cortex" / "nl2sql" / "v1"


def test_question_set_shape() -> None:
    questions = load_questions()
    assert len(questions) >= 200
    assert len({q.question_id for q in questions}) == len(questions)
    per_db = Counter(q.db_id for q in questions)
    assert set(per_db) == set(DB_IDS) and min(per_db.values()) >= 40
    pairs = Counter((q.db_id, q.difficulty) for q in questions)
    assert all(pairs[(db, d)] >= 5 for db in DB_IDS for d in DIFFICULTIES), pairs
    assert all(q.gold_sql and q.question and "{" not in q.question for q in questions)
    assert [q.db_id for q in load_questions("hr")] == ["hr"] * per_db["hr"]
    with pytest.raises(ValueError, match="unknown built-in database 'nope'"):
        load_questions("nope")


def test_every_gold_query_runs_in_the_sandbox_and_returns_rows(dbs: dict[str, Path]) -> None:
    empty = []
    for q in load_questions():
        result = run_query(dbs[q.db_id], q.gold_sql, max_rows=100_000, max_bytes=1 << 30)
        assert result.ok, (q.question_id, result.error)
        assert not result.truncated
        values = [v for row in result.rows for v in row]
        if not values or all(v is None for v in values):
            empty.append(q.question_id)
    assert empty == []


def test_headline_question_has_a_well_defined_answer(dbs: dict[str, Path]) -> None:
    (q,) = [q for q in load_questions("sales") if q.question == HEADLINE]
    assert "2024-Q3" in q.evidence and q.difficulty == "join"
    conn = sqlite3.connect(dbs["sales"])
    latest_complete = conn.execute(
        "SELECT MAX(name) FROM quarters WHERE is_complete = 1").fetchone()[0]
    assert latest_complete == LAST_QUARTER == "2024-Q3"
    (gold,) = conn.execute(q.gold_sql).fetchone()
    # Same answer through the sales rep's region and through explicit dates.
    (via_rep,) = conn.execute(
        "SELECT SUM(o.total_amount) FROM orders o JOIN sales_reps s ON o.rep_id = s.id "
        "JOIN regions r ON s.region_id = r.id WHERE r.name = 'Europe' "
        "AND o.order_date BETWEEN '2024-07-01' AND '2024-09-30'").fetchone()
    assert gold > 0 and gold == pytest.approx(via_rep)


def test_bad_question_file_names_the_entry(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for db_id in DB_IDS:
        (tmp_path / f"{db_id}.yaml").write_text("[]\n")
    (tmp_path / "hr.yaml").write_text("- {question: q, sql: SELECT 1, difficulty: filter}\n"
                                      "- {question: q2, difficulty: join}\n")
    monkeypatch.setattr(datasets, "QUESTIONS_DIR", tmp_path)
    datasets._all_questions.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"hr\.yaml: entry 1: missing field\(s\) sql"):
            load_questions()
    finally:
        datasets._all_questions.cache_clear()
