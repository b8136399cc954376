"""Pick the tables relevant to a question (lexical overlap + foreign-key neighbours).

Scoring, per table:

* own score = 3 x (question words matching the table-name words)
  + 1 x (question words matching column-name words)
  + 2 x (question words matching words of the TEXT values of a column: all of them when
  the column has at most 200 distinct values, else a few samples);
* final score = own score + 0.5 x the highest own score among the tables it shares a
  foreign key with (either direction), so the tables that join relevant ones come along;
* the top ``top_k`` tables by final score (ties by name) with a positive score are kept;
  when no table scores, all tables are returned.

Words are lowercased ``[a-z0-9]+`` runs minus stop words, with a simple stemmer
(``countries`` -> ``country``, ``orders`` -> ``order``, ``Europe's`` -> ``europe``).
"""
from __future__ import annotations

import re

from cortex.nl2sql.schema import DatabaseSchema, TableInfo

DEFAULT_TOP_K = 4
TABLE_WEIGHT, COLUMN_WEIGHT, VALUE_WEIGHT, NEIGHBOUR_SHARE = 3.0, 1.0, 2.0, 0.5
STOP_WORDS = frozenset((
    "a", "an", "and", "any", "are", "as", "at", "be", "by", "did", "do", "does", "each", "for",
    "from", "had", "has", "have", "how", "i", "in", "is", "it", "its", "list", "me", "many",
    "much", "name", "names", "number", "of", "on", "or", "per", "show", "than", "that", "the",
    "their", "there", "these", "this", "those", "to", "was", "were", "what", "when", "where",
    "which", "who", "whose", "with", "all", "give", "tell", "find", "id", "ids",
))
_WORD = re.compile(r"[a-z0-9]+")


def stem(word: str) -> str:
    """Very small stemmer: plural and possessive endings only."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def words(text: str) -> set[str]:
    """Stemmed content words of ``text`` (``_`` splits identifiers into words)."""
    text = text.lower().replace("'s", " ").replace("_", " ")
    return {stem(w) for w in _WORD.findall(text) if w not in STOP_WORDS}


def select_tables(schema: DatabaseSchema, question: str, top_k: int = DEFAULT_TOP_K
                  ) -> list[str]:
    """Names of the tables relevant to ``question``, best first (see module docstring).

    The caller renders them with ``render_schema``, which restores canonical order.
    """
    if top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    asked = words(question)
    own = {t.name: _own_score(t, asked) for t in schema.tables}
    neighbours = _neighbours(schema)
    final = {name: score + NEIGHBOUR_SHARE * max((own[n] for n in neighbours[name]), default=0)
             for name, score in own.items()}
    ranked = sorted((name for name in final if final[name] > 0),
                    key=lambda name: (-final[name], name))
    return ranked[:top_k] if ranked else schema.table_names


def _own_score(table: TableInfo, asked: set[str]) -> float:
    column_words = set().union(*(words(c.name) for c in table.columns))
    value_words = set().union(*(words(v) for c in table.columns
                                for v in (*c.vocabulary, *c.samples) if isinstance(v, str)))
    return (TABLE_WEIGHT * len(asked & words(table.name))
            + COLUMN_WEIGHT * len(asked & column_words)
            + VALUE_WEIGHT * len(asked & value_words))


def _neighbours(schema: DatabaseSchema) -> dict[str, set[str]]:
    known = {t.name.lower(): t.name for t in schema.tables}
    out: dict[str, set[str]] = {t.name: set() for t in schema.tables}
    for table in schema.tables:
        for fk in table.foreign_keys:
            ref = known.get(fk.ref_table.lower())
            if ref is not None and ref != table.name:
                out[table.name].add(ref)
                out[ref].add(table.name)
    return out
