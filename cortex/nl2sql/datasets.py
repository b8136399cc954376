"""Built-in NL2SQL databases and questions, plus loaders for Spider and BIRD files.

This module owns the on-disk cache of generated databases. Each database is generated
from a fixed seed on first use into ``<cache>/<db_id>/<db_id>.sqlite`` (the Spider/BIRD
layout), written to a temporary file and renamed, so readers never see a partial file.
"""
from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable
from pathlib import Path

import yaml

from cortex.nl2sql.benchmarks import load_bird, load_spider  # re-exported
from cortex.nl2sql.dbgen_common import DatabaseData, write_database
from cortex.nl2sql.dbgen_hr import build_hr
from cortex.nl2sql.dbgen_library import build_library
from cortex.nl2sql.dbgen_logistics import build_logistics
from cortex.nl2sql.dbgen_sales import build_sales
from cortex.nl2sql.question import Question

DATASET_VERSION = "v1"  # bump when a generator or its seed changes
SEED = 20251014
GENERATORS: dict[str, Callable[[random.Random], DatabaseData]] = {
    "sales": build_sales,
    "hr": build_hr,
    "logistics": build_logistics,
    "library": build_library,
}
DB_IDS = tuple(GENERATORS)
DIFFICULTIES = ("filter", "aggregate", "join", "group_having", "nested", "order_limit")
QUESTIONS_DIR = Path(__file__).with_name("questions")


def default_cache_dir() -> Path:
    """``$CORTEX_CACHE_DIR/nl2sql/v1`` if set, else ``~/.cache/cortex/nl2sql/v1``."""
    root = os.environ.get("CORTEX_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "cortex"
    return base / "nl2sql" / DATASET_VERSION


def database_path(db_id: str, cache_dir: Path) -> Path:
    return cache_dir / db_id / f"{db_id}.sqlite"


def generate_database(db_id: str, path: Path, seed: int = SEED) -> Path:
    """Generate database ``db_id`` into ``path`` (atomically); same seed, same bytes."""
    if db_id not in GENERATORS:
        raise ValueError(f"unknown built-in database {db_id!r} (known: {', '.join(DB_IDS)})")
    rng = random.Random(f"{seed}-{db_id}")
    return write_database(GENERATORS[db_id](rng), path)


def ensure_databases(cache_dir: Path | None = None) -> dict[str, Path]:
    """Return ``{db_id: path}`` of the built-in databases, generating missing ones.

    Args:
        cache_dir: where the files live; ``default_cache_dir()`` when None.
    Returns:
        Paths for ``sales``, ``hr``, ``logistics`` and ``library``, in that order.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    paths = {}
    for db_id in DB_IDS:
        path = database_path(db_id, cache)
        if not path.is_file():
            generate_database(db_id, path)
        paths[db_id] = path
    return paths


def load_questions(db: str | None = None) -> list[Question]:
    """The built-in question set (all databases, or only ``db``), in a fixed order.

    Raises:
        ValueError: ``db`` is not a built-in database.
    """
    if db is not None and db not in GENERATORS:
        raise ValueError(f"unknown built-in database {db!r} (known: {', '.join(DB_IDS)})")
    return [q for q in _all_questions() if db is None or q.db_id == db]


@functools.lru_cache(maxsize=1)
def _all_questions() -> tuple[Question, ...]:
    out: list[Question] = []
    for db_id in DB_IDS:
        path = QUESTIONS_DIR / f"{db_id}.yaml"
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        questions: list[Question] = []
        for index, entry in enumerate(entries):
            questions += _expand(entry, db_id, f"{path}: entry {index}", len(questions))
        out += questions
    return tuple(out)


def _expand(entry: dict, db_id: str, where: str, offset: int) -> list[Question]:
    """One YAML entry -> questions; ``params`` (a list of dicts) instantiates templates."""
    missing = [k for k in ("question", "sql", "difficulty") if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    if entry["difficulty"] not in DIFFICULTIES:
        raise ValueError(f"{where}: unknown difficulty {entry['difficulty']!r}")
    out = []
    for params in entry.get("params") or [{}]:
        fill = functools.partial(_fill, params=params)
        out.append(Question(f"{db_id}-{offset + len(out) + 1:03d}", db_id,
                            fill(entry["question"]), fill(entry["sql"]).strip(),
                            entry["difficulty"], fill(entry.get("evidence", ""))))
    return out


def _fill(template: str, params: dict) -> str:
    for key, value in params.items():
        template = template.replace("{" + key + "}", str(value))
    return template



__all__ = ["DB_IDS", "DIFFICULTIES", "Question", "default_cache_dir", "ensure_databases",
           "generate_database", "load_bird", "load_questions", "load_spider"]
