from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from cortex.nl2sql.schema import introspect, render_full_schema, render_schema
from cortex.nl2sql.schema_select import select_tables, stem, words


def test_introspection_keys_types_and_values(dbs: dict[str, Path]) -> None:
    schema = introspect(dbs["sales"])
    assert schema.table_names == sorted(schema.table_names)
    orders = schema.table("ORDERS")
    assert orders is not None and orders.primary_key == ["id"]
    assert {(fk.column, fk.ref_table, fk.ref_column) for fk in orders.foreign_keys} == {
        ("customer_id", "customers", "id"), ("rep_id", "sales_reps", "id")}
    status = next(c for c in orders.columns if c.name == "status")
    assert status.type == "TEXT" and status.is_categorical
    assert set(status.samples) == {"cancelled", "completed", "pending", "returned", "shipped"}
    order_date = next(c for c in orders.columns if c.name == "order_date")
    assert not order_date.is_categorical and len(order_date.samples) == 3
    countries = schema.table("countries")
    assert "Germany" in next(c for c in countries.columns if c.name == "name").vocabulary
    assert introspect(dbs["sales"]) is schema  # cached


def test_composite_primary_key_rendered(dbs: dict[str, Path]) -> None:
    text = render_schema(introspect(dbs["hr"]), ["project_assignments"])
    assert text.startswith("CREATE TABLE project_assignments (employee_id INTEGER REFERENCES "
                           "employees(id), project_id INTEGER REFERENCES projects(id)")
    assert "PRIMARY KEY (employee_id, project_id));" in text


def test_rendering_is_canonical_and_byte_identical(dbs: dict[str, Path]) -> None:
    schema = introspect(dbs["sales"])
    a = render_schema(schema, ["regions", "orders", "customers"])
    b = render_schema(schema, ["customers", "regions", "orders", "orders"])
    assert a == b
    creates = [line.split()[2] for line in a.splitlines() if line.startswith("CREATE")]
    assert creates == ["customers", "orders", "regions"]
    assert "-- regions.name values: 'Africa', 'Asia', 'Europe', 'North America'" in a
    full = render_full_schema(dbs["sales"])
    assert full == render_full_schema(dbs["sales"])
    assert [line.split()[2] for line in full.splitlines() if line.startswith("CREATE")] == \
        schema.table_names
    assert "values:" not in render_full_schema(dbs["sales"], include_values=False)
    with pytest.raises(KeyError, match="unknown table"):
        render_schema(schema, ["nope"])


def test_schema_cache_follows_file_changes(dbs: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "lib.sqlite"
    shutil.copyfile(dbs["library"], path)
    assert "audit" not in introspect(path).table_names
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT)")
    conn.commit()
    conn.close()
    assert "audit" in introspect(path).table_names


def test_stemming_and_words() -> None:
    assert [stem(w) for w in ("countries", "orders", "boxes", "sales", "status", "class")] == \
        ["country", "order", "box", "sale", "status", "class"]
    assert words("What were Europe's sales last quarter?") == {"europe", "sale", "last",
                                                               "quarter"}
    assert words("order_items") == {"order", "item"}


@pytest.mark.parametrize("db, question, expected", [
    ("sales", "What were Europe's sales last quarter?", {"regions", "orders"}),
    ("sales", "How many customers are from Germany?", {"customers", "countries"}),
    ("hr", "Which employees are assigned to Project Titan?",
     {"projects", "project_assignments", "employees"}),
    ("logistics", "What is the average shipping cost per transport mode?",
     {"carriers", "shipments"}),
    ("library", "Which books were published by Sakura Publishing?", {"books", "publishers"}),
])
def test_select_tables_finds_relevant_ones(dbs: dict[str, Path], db: str, question: str,
                                           expected: set[str]) -> None:
    chosen = select_tables(introspect(dbs[db]), question)
    assert expected <= set(chosen) and len(chosen) <= 4


def test_foreign_key_neighbour_comes_along(dbs: dict[str, Path]) -> None:
    # Only "region" matches lexically; countries and sales_reps join it by foreign key.
    chosen = select_tables(introspect(dbs["sales"]), "Which region?", top_k=3)
    assert chosen[0] == "regions" and set(chosen[1:]) == {"countries", "sales_reps"}


def test_select_tables_limits_and_fallback(dbs: dict[str, Path]) -> None:
    schema = introspect(dbs["sales"])
    assert len(select_tables(schema, "customers orders products regions", top_k=2)) == 2
    assert select_tables(schema, "xyzzy plugh") == schema.table_names
    with pytest.raises(ValueError):
        select_tables(schema, "orders", top_k=0)
