"""Shared pieces of the database generators: table data, deterministic SQLite writer,
name lists and date helpers.

Every generator is a pure function of a seeded ``random.Random``; ``write_database``
inserts the rows in a fixed order with fixed pragmas and no timestamps, so the same seed
gives a byte-identical file on the same SQLite library.
"""
from __future__ import annotations

import datetime as dt
import os
import random
import sqlite3
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Row = tuple[Any, ...]


@dataclass(slots=True)
class TableData:
    """One table: its ``CREATE TABLE`` statement and its rows in insertion order."""

    name: str
    ddl: str
    rows: list[Row] = field(default_factory=list)


@dataclass(slots=True)
class DatabaseData:
    """A whole generated database, tables in creation order (parents before children)."""

    db_id: str
    tables: list[TableData]
    indexes: list[str] = field(default_factory=list)


def write_database(data: DatabaseData, path: Path) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    Returns:
        ``path``. A concurrent writer of the same database loses nothing: both files are
        identical and ``os.replace`` is atomic.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{data.db_id}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()  # SQLite must create the file itself
        _fill(data, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _fill(data: DatabaseData, path: Path) -> None:
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN")
        for table in data.tables:
            conn.execute(table.ddl)
            if table.rows:
                marks = ", ".join("?" * len(table.rows[0]))
                conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})", table.rows)
        for index in data.indexes:
            conn.execute(index)
        conn.execute("COMMIT")
        bad = conn.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise ValueError(f"{data.db_id}: generated rows break foreign keys: {bad[:3]}")
    finally:
        conn.close()


# ---------------------------------------------------------------- values

FIRST_NAMES = (
    "Ada", "Ahmed", "Aiko", "Alice", "Amara", "Ana", "Andre", "Anna", "Arjun", "Ben",
    "Carla", "Carlos", "Chen", "Chloe", "Daniel", "David", "Elena", "Emma", "Fatima", "Felix",
    "Grace", "Hana", "Hugo", "Ibrahim", "Ines", "Isabel", "Ivan", "James", "Jin", "Julia",
    "Kenji", "Kofi", "Lars", "Laura", "Leo", "Lina", "Lucas", "Maria", "Marco", "Maya",
    "Mei", "Mohammed", "Nadia", "Noah", "Olga", "Omar", "Paula", "Pedro", "Priya", "Rafael",
    "Ravi", "Rosa", "Sara", "Sofia", "Tom", "Yuki", "Zara", "Zoe", "Wei", "Victor",
)
LAST_NAMES = (
    "Adams", "Ali", "Andersen", "Bauer", "Brown", "Costa", "Dubois", "Garcia", "Gomez",
    "Hansen", "Ito", "Jensen", "Kim", "Kowalski", "Kumar", "Lee", "Lopez", "Martin", "Meyer",
    "Miller", "Moreau", "Mueller", "Nakamura", "Nguyen", "Novak", "Okafor", "Patel", "Perez",
    "Rossi", "Santos", "Schmidt", "Silva", "Singh", "Smith", "Suzuki", "Tanaka", "Taylor",
    "Wang", "Weber", "Wilson", "Yilmaz", "Zhang",
)


def person_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def email_for(name: str, row_id: int, domain: str) -> str:
    return f"{name.lower().replace(' ', '.')}{row_id}@{domain}"


def weighted(rng: random.Random, items: Sequence[Any], weights: Sequence[float]) -> Any:
    return rng.choices(items, weights=weights, k=1)[0]


def money(value: float) -> float:
    return round(value, 2)


# ---------------------------------------------------------------- dates


def iso(day: dt.date) -> str:
    return day.isoformat()


def random_day(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    """A day in ``[start, end]`` (inclusive), uniform."""
    return start + dt.timedelta(days=rng.randint(0, (end - start).days))


def quarter_of(day: dt.date) -> str:
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def quarter_bounds(year: int, quarter: int) -> tuple[dt.date, dt.date]:
    start = dt.date(year, 3 * quarter - 2, 1)
    next_start = dt.date(year + (quarter == 4), 1 if quarter == 4 else 3 * quarter + 1, 1)
    return start, next_start - dt.timedelta(days=1)
