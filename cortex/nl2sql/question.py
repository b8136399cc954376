"""The ``Question`` record shared by the built-in set and the Spider/BIRD loaders."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Question:
    """One NL2SQL question with its gold SQL.

    ``db_path`` is set by the Spider/BIRD loaders; built-in questions resolve ``db_id``
    through ``ensure_databases()``.
    """

    question_id: str
    db_id: str
    question: str
    gold_sql: str
    difficulty: str
    evidence: str = ""
    db_path: str = ""
