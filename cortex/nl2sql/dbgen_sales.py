"""The ``sales`` database: regions, countries, customers, sales reps, products, orders.

Orders run from ``SALES_START`` to ``SALES_END`` (2023-01-01 .. 2024-11-20), so the latest
*complete* quarter in the data — what the question set calls "last quarter" — is
``LAST_QUARTER`` = 2024-Q3. ``orders.total_amount`` is the sum of the order's items
(quantity x unit_price x (1 - discount)); "sales" means ``SUM(orders.total_amount)``.
An order's sales rep always works in the customer's region, so "Europe's sales" is the
same whether read through the customer or the rep.
"""
from __future__ import annotations

import datetime as dt
import random

from cortex.nl2sql.dbgen_common import (
    DatabaseData,
    Row,
    TableData,
    email_for,
    iso,
    money,
    person_name,
    quarter_bounds,
    quarter_of,
    random_day,
    weighted,
)

SALES_START = dt.date(2023, 1, 1)
SALES_END = dt.date(2024, 11, 20)
LAST_QUARTER = "2024-Q3"

REGIONS = ("Africa", "Asia", "Europe", "North America", "Oceania", "South America")
COUNTRIES = (  # (name, region, weight)
    ("Nigeria", "Africa", 2), ("South Africa", "Africa", 3), ("Kenya", "Africa", 1),
    ("Egypt", "Africa", 2), ("Japan", "Asia", 5), ("China", "Asia", 5), ("India", "Asia", 5),
    ("South Korea", "Asia", 3), ("Singapore", "Asia", 2), ("Germany", "Europe", 7),
    ("France", "Europe", 6), ("United Kingdom", "Europe", 6), ("Italy", "Europe", 4),
    ("Spain", "Europe", 4), ("Netherlands", "Europe", 3), ("Sweden", "Europe", 2),
    ("Poland", "Europe", 2), ("United States", "North America", 14),
    ("Canada", "North America", 5), ("Mexico", "North America", 3),
    ("Australia", "Oceania", 4), ("New Zealand", "Oceania", 1),
    ("Brazil", "South America", 4), ("Argentina", "South America", 2),
    ("Chile", "South America", 2), ("Colombia", "South America", 1),
)
REPS_PER_REGION = {"Africa": 2, "Asia": 4, "Europe": 5, "North America": 5, "Oceania": 2,
                   "South America": 2}
CATEGORIES = {  # category: ((base product, typical price), ...)
    "Electronics": (("Laptop", 1100), ("Monitor", 260), ("Headphones", 120), ("Tablet", 450),
                    ("Webcam", 70), ("Speaker", 90)),
    "Furniture": (("Desk", 380), ("Office Chair", 290), ("Bookcase", 160),
                  ("Filing Cabinet", 210), ("Sofa", 850)),
    "Office Supplies": (("Stapler", 12), ("Paper Ream", 7), ("Pen Set", 15), ("Binder", 6),
                        ("Notebook", 5), ("Label Maker", 45)),
    "Clothing": (("Jacket", 120), ("T-Shirt", 20), ("Sneakers", 85), ("Backpack", 60),
                 ("Rain Coat", 95)),
    "Sports": (("Yoga Mat", 30), ("Bicycle Helmet", 65), ("Tennis Racket", 140),
               ("Dumbbell Set", 110), ("Tent", 240)),
    "Books": (("Cookbook", 28), ("Atlas", 45), ("Novel Box Set", 60), ("Dictionary", 35)),
}
PRODUCT_LINES = ("Basic", "Pro", "Ultra")
SEGMENTS = ("Consumer", "Corporate", "Small Business")


def build_sales(rng: random.Random) -> DatabaseData:
    """Generate the sales database from ``rng`` (about 500 customers, 4,000 orders)."""
    regions = [(i + 1, name) for i, name in enumerate(REGIONS)]
    region_id = {name: rid for rid, name in regions}
    countries = [(i + 1, name, region_id[reg]) for i, (name, reg, _) in enumerate(COUNTRIES)]
    reps = _reps(rng, region_id)
    categories = [(i + 1, name) for i, name in enumerate(CATEGORIES)]
    products = _products(rng)
    customers = _customers(rng, len(countries))
    region_of_country = {cid: rid for cid, _, rid in countries}
    orders, items = _orders(rng, customers, reps, products, region_of_country)
    return DatabaseData("sales", [
        TableData("regions", "CREATE TABLE regions (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
                  regions),
        TableData("countries", "CREATE TABLE countries (id INTEGER PRIMARY KEY, name TEXT NOT "
                  "NULL, region_id INTEGER NOT NULL REFERENCES regions(id))", countries),
        TableData("quarters", "CREATE TABLE quarters (name TEXT PRIMARY KEY, start_date TEXT, "
                  "end_date TEXT, is_complete INTEGER)", _quarters()),
        TableData("customers", "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, "
                  "email TEXT, segment TEXT, country_id INTEGER REFERENCES countries(id), "
                  "signup_date TEXT)", customers),
        TableData("sales_reps", "CREATE TABLE sales_reps (id INTEGER PRIMARY KEY, name TEXT, "
                  "region_id INTEGER REFERENCES regions(id), hire_date TEXT)", reps),
        TableData("categories", "CREATE TABLE categories (id INTEGER PRIMARY KEY, name TEXT)",
                  categories),
        TableData("products", "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, "
                  "category_id INTEGER REFERENCES categories(id), unit_price REAL, "
                  "unit_cost REAL)", products),
        TableData("orders", "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER "
                  "REFERENCES customers(id), rep_id INTEGER REFERENCES sales_reps(id), "
                  "order_date TEXT, quarter TEXT, status TEXT, total_amount REAL)", orders),
        TableData("order_items", "CREATE TABLE order_items (id INTEGER PRIMARY KEY, order_id "
                  "INTEGER REFERENCES orders(id), product_id INTEGER REFERENCES products(id), "
                  "quantity INTEGER, unit_price REAL, discount REAL)", items),
    ], ["CREATE INDEX idx_orders_customer ON orders(customer_id)",
        "CREATE INDEX idx_items_order ON order_items(order_id)"])


def _quarters() -> list[Row]:
    rows = []
    for year in (2023, 2024):
        for q in (1, 2, 3, 4):
            start, end = quarter_bounds(year, q)
            rows.append((f"{year}-Q{q}", iso(start), iso(end), int(end <= SALES_END)))
    return rows


def _reps(rng: random.Random, region_id: dict[str, int]) -> list[Row]:
    rows: list[Row] = []
    for region, count in REPS_PER_REGION.items():
        for _ in range(count):
            hired = random_day(rng, dt.date(2015, 1, 1), dt.date(2022, 12, 31))
            rows.append((len(rows) + 1, person_name(rng), region_id[region], iso(hired)))
    return rows


def _products(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for cat_id, bases in enumerate(CATEGORIES.values(), start=1):
        for base, typical in bases:
            base_price = typical * rng.uniform(0.85, 1.15)
            for level, line in enumerate(PRODUCT_LINES):
                if level == 2 and rng.random() < 0.4:
                    continue
                price = money(base_price * (0.75, 1.0, 1.4)[level] * rng.uniform(0.95, 1.05))
                cost = money(price * rng.uniform(0.45, 0.75))
                rows.append((len(rows) + 1, f"{line} {base}", cat_id, price, cost))
    return rows


def _customers(rng: random.Random, num_countries: int) -> list[Row]:
    weights = [w for _, _, w in COUNTRIES]
    rows: list[Row] = []
    for cid in range(1, 501):
        name = person_name(rng)
        country = weighted(rng, range(1, num_countries + 1), weights)
        segment = weighted(rng, SEGMENTS, (6, 3, 2))
        signup = random_day(rng, dt.date(2021, 1, 1), dt.date(2024, 6, 30))
        rows.append((cid, name, email_for(name, cid, "example.com"), segment, country,
                     iso(signup)))
    return rows


def _orders(rng: random.Random, customers: list[Row], reps: list[Row], products: list[Row],
            region_of_country: dict[int, int]) -> tuple[list[Row], list[Row]]:
    reps_by_region: dict[int, list[int]] = {}
    for rep_id, _, rid, _ in reps:
        reps_by_region.setdefault(rid, []).append(rep_id)
    days = sorted(_order_day(rng) for _ in range(4000))
    orders: list[Row] = []
    items: list[Row] = []
    for oid, day in enumerate(days, start=1):
        cust = rng.choice(customers)
        rep = rng.choice(reps_by_region[region_of_country[cust[4]]])
        total = 0.0
        for _ in range(weighted(rng, (1, 2, 3, 4), (4, 3, 2, 1))):
            prod = rng.choice(products)
            qty = rng.randint(1, 10 if prod[2] == 3 else 4)
            discount = weighted(rng, (0.0, 0.05, 0.1, 0.2), (6, 2, 2, 1))
            total += qty * prod[3] * (1 - discount)
            items.append((len(items) + 1, oid, prod[0], qty, prod[3], discount))
        orders.append((oid, cust[0], rep, iso(day), quarter_of(day), _status(rng, day),
                       money(total)))
    return orders, items


def _order_day(rng: random.Random) -> dt.date:
    # Mild growth: a uniform base plus a share rising linearly towards the end.
    span = (SALES_END - SALES_START).days
    if rng.random() < 0.6:
        return SALES_START + dt.timedelta(days=rng.randint(0, span))
    return SALES_START + dt.timedelta(days=min(span, int(rng.triangular(0, span + 1, span))))


def _status(rng: random.Random, day: dt.date) -> str:
    if day > SALES_END - dt.timedelta(days=14):
        return weighted(rng, ("pending", "shipped"), (1, 2))
    return weighted(rng, ("completed", "returned", "cancelled"), (88, 6, 6))
