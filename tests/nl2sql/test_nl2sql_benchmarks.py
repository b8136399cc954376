from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cortex.nl2sql.benchmarks import BenchmarkFormatError
from cortex.nl2sql.datasets import load_bird, load_spider


def make_db(db_dir: Path, db_id: str) -> Path:
    path = db_dir / db_id / f"{db_id}.sqlite"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    return path


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_load_spider(tmp_path: Path) -> None:
    db = make_db(tmp_path / "database", "concert_singer")
    qfile = write(tmp_path / "dev.json", [
        {"db_id": "concert_singer", "question": "How many singers?",
         "query": "SELECT count(*) FROM singer", "query_toks": []},
    ])
    (q,) = load_spider(qfile, tmp_path / "database")
    assert (q.db_id, q.question, q.gold_sql) == ("concert_singer", "How many singers?",
                                                  "SELECT count(*) FROM singer")
    assert q.db_path == str(db) and q.question_id == "spider-0000" and q.evidence == ""


def test_load_bird_keeps_evidence_and_difficulty(tmp_path: Path) -> None:
    make_db(tmp_path / "dbs", "california_schools")
    qfile = write(tmp_path / "dev.json", [
        {"question_id": 7, "db_id": "california_schools", "question": "Q?",
         "evidence": "rate = a / b", "SQL": "SELECT 1", "difficulty": "moderate"},
        {"db_id": "california_schools", "question": "Q2?", "evidence": "", "SQL": "SELECT 2"},
    ])
    first, second = load_bird(qfile, tmp_path / "dbs")
    assert (first.question_id, first.evidence, first.difficulty) == ("bird-7", "rate = a / b",
                                                                      "moderate")
    assert (second.question_id, second.difficulty, second.gold_sql) == ("bird-1", "", "SELECT 2")


def test_missing_field_names_file_and_index(tmp_path: Path) -> None:
    make_db(tmp_path / "database", "x")
    qfile = write(tmp_path / "dev.json", [
        {"db_id": "x", "question": "ok", "query": "SELECT 1"},
        {"db_id": "x", "question": "no query here"},
    ])
    with pytest.raises(BenchmarkFormatError) as info:
        load_spider(qfile, tmp_path / "database")
    assert str(qfile) in str(info.value) and "entry 1" in str(info.value)
    assert "'query'" in str(info.value)
    with pytest.raises(BenchmarkFormatError, match=r"entry 0: missing or empty field\(s\) 'SQL'"):
        load_bird(qfile, tmp_path / "database")


def test_missing_database_names_entry_and_path(tmp_path: Path) -> None:
    qfile = write(tmp_path / "dev.json", [{"db_id": "ghost", "question": "q", "query": "SELECT 1"}])
    with pytest.raises(BenchmarkFormatError) as info:
        load_spider(qfile, tmp_path / "database")
    message = str(info.value)
    assert "entry 0 (db_id 'ghost')" in message
    assert str(tmp_path / "database" / "ghost" / "ghost.sqlite") in message


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ('{"db_id": "x"}', "expected a JSON list"),
    ('["just a string"]', "entry 0: expected an object"),
])
def test_malformed_files(tmp_path: Path, content: str, needle: str) -> None:
    qfile = tmp_path / "bad.json"
    qfile.write_text(content)
    with pytest.raises(BenchmarkFormatError, match=needle):
        load_spider(qfile, tmp_path)


def test_missing_question_file(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkFormatError, match="question file not found"):
        load_bird(tmp_path / "nope.json", tmp_path)
