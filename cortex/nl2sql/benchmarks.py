"""Loaders for external NL2SQL benchmarks in their published file formats.

Spider: a JSON list of ``{"db_id", "question", "query"}``.
BIRD:   a JSON list of ``{"db_id", "question", "SQL", "evidence", "difficulty"?}``.
Databases live at ``<db_dir>/<db_id>/<db_id>.sqlite`` in both.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cortex.nl2sql.question import Question


class BenchmarkFormatError(ValueError):
    """A question file is malformed; the message names the file and the entry index."""


def load_spider(questions_file: Path | str, db_dir: Path | str) -> list[Question]:
    """Load a Spider-format question file.

    Raises:
        BenchmarkFormatError: unreadable file, a missing field, or a missing database file.
    """
    entries = _read_entries(Path(questions_file))
    out = []
    for index, entry in enumerate(entries):
        _require(entry, ("db_id", "question", "query"), questions_file, index, "Spider")
        path = _db_file(Path(db_dir), entry["db_id"], questions_file, index)
        out.append(Question(f"spider-{index:04d}", entry["db_id"], entry["question"],
                            entry["query"], "", "", str(path)))
    return out


def load_bird(questions_file: Path | str, db_dir: Path | str) -> list[Question]:
    """Load a BIRD-format question file (``evidence`` may be empty, ``difficulty`` absent).

    Raises:
        BenchmarkFormatError: unreadable file, a missing field, or a missing database file.
    """
    entries = _read_entries(Path(questions_file))
    out = []
    for index, entry in enumerate(entries):
        _require(entry, ("db_id", "question", "SQL"), questions_file, index, "BIRD")
        path = _db_file(Path(db_dir), entry["db_id"], questions_file, index)
        qid = entry.get("question_id", index)
        out.append(Question(f"bird-{qid}", entry["db_id"], entry["question"], entry["SQL"],
                            str(entry.get("difficulty") or ""), entry.get("evidence") or "",
                            str(path)))
    return out


def _read_entries(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkFormatError(f"{path}: question file not found") from None
    except json.JSONDecodeError as exc:
        raise BenchmarkFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise BenchmarkFormatError(f"{path}: expected a JSON list of questions, "
                                   f"got {type(data).__name__}")
    return data


def _require(entry: Any, fields: tuple[str, ...], path: Path | str, index: int,
             fmt: str) -> None:
    if not isinstance(entry, dict):
        raise BenchmarkFormatError(f"{path}: entry {index}: expected an object, "
                                   f"got {type(entry).__name__}")
    missing = [f for f in fields if not isinstance(entry.get(f), str) or not entry[f]]
    if missing:
        raise BenchmarkFormatError(
            f"{path}: entry {index}: missing or empty field(s) {', '.join(map(repr, missing))} "
            f"({fmt} format needs {', '.join(fields)})")


def _db_file(db_dir: Path, db_id: str, path: Path | str, index: int) -> Path:
    db_path = db_dir / db_id / f"{db_id}.sqlite"
    if not db_path.is_file():
        raise BenchmarkFormatError(f"{path}: entry {index} (db_id {db_id!r}): database file "
                                   f"not found: {db_path}")
    return db_path
