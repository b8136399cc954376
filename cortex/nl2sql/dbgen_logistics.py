"""The ``logistics`` database: warehouses, carriers and their vehicles, clients,
shipments (2024), their packages and tracking events (about 2,000 shipments)."""
from __future__ import annotations

import datetime as dt
import random

from cortex.nl2sql.dbgen_common import (
    DatabaseData,
    Row,
    TableData,
    iso,
    money,
    random_day,
    weighted,
)

WAREHOUSES = (("Rotterdam Hub", "Rotterdam", "Netherlands", 52000),
              ("Hamburg North", "Hamburg", "Germany", 38000),
              ("Lyon Central", "Lyon", "France", 21000),
              ("Chicago Midwest", "Chicago", "United States", 64000),
              ("Dallas South", "Dallas", "United States", 45000),
              ("Shanghai Port", "Shanghai", "China", 70000),
              ("Singapore East", "Singapore", "Singapore", 33000),
              ("Sao Paulo Depot", "Sao Paulo", "Brazil", 18000))
CARRIERS = (("FastFreight", "truck", 4.2), ("RailLink", "rail", 3.9), ("SkyCargo", "air", 4.6),
            ("OceanWay", "sea", 3.5), ("RoadRunner Logistics", "truck", 3.1),
            ("BlueSea Shipping", "sea", 4.0), ("JetParcel", "air", 3.8),
            ("Continental Trucking", "truck", 4.4))
VEHICLE_TYPES = {"truck": ("box truck", "semi-trailer", "van"), "rail": ("freight car",),
                 "air": ("cargo plane",), "sea": ("container ship",)}
CITIES = (("Paris", "France"), ("Madrid", "Spain"), ("Milan", "Italy"), ("Warsaw", "Poland"),
          ("Vienna", "Austria"), ("New York", "United States"), ("Atlanta", "United States"),
          ("Toronto", "Canada"), ("Mexico City", "Mexico"), ("Tokyo", "Japan"),
          ("Seoul", "South Korea"), ("Sydney", "Australia"), ("Mumbai", "India"),
          ("Lima", "Peru"), ("Cape Town", "South Africa"), ("Dubai", "United Arab Emirates"))
INDUSTRIES = ("Retail", "Automotive", "Pharmaceuticals", "Electronics", "Food & Beverage",
              "Fashion", "Chemicals")
CLIENT_WORDS = ("Acme", "Northwind", "Globex", "Initech", "Umbrella", "Stark", "Wayne",
                "Tyrell", "Cyberdyne", "Soylent", "Vandelay", "Hooli", "Pied Piper", "Wonka",
                "Gekko", "Oscorp", "Massive Dynamic", "Aperture", "Nakatomi", "Monarch")
CLIENT_SUFFIX = ("Ltd", "Inc", "GmbH", "Group", "Corp")
SPEED_DAYS = {"air": (1, 4), "truck": (2, 9), "rail": (4, 14), "sea": (15, 40)}
COST_PER_KG = {"air": 4.5, "truck": 0.9, "rail": 0.6, "sea": 0.25}


def build_logistics(rng: random.Random) -> DatabaseData:
    """Generate the logistics database from ``rng``."""
    warehouses = [(i + 1, *w) for i, w in enumerate(WAREHOUSES)]
    carriers = [(i + 1, *c) for i, c in enumerate(CARRIERS)]
    vehicles = _vehicles(rng, carriers)
    clients = _clients(rng)
    shipments, packages, events = _shipments(rng, carriers, vehicles, clients, warehouses)
    return DatabaseData("logistics", [
        TableData("warehouses", "CREATE TABLE warehouses (id INTEGER PRIMARY KEY, name TEXT, "
                  "city TEXT, country TEXT, capacity_m3 INTEGER)", warehouses),
        TableData("carriers", "CREATE TABLE carriers (id INTEGER PRIMARY KEY, name TEXT, "
                  "transport_mode TEXT, rating REAL)", carriers),
        TableData("vehicles", "CREATE TABLE vehicles (id INTEGER PRIMARY KEY, carrier_id "
                  "INTEGER REFERENCES carriers(id), plate_number TEXT, vehicle_type TEXT, "
                  "capacity_kg INTEGER)", vehicles),
        TableData("clients", "CREATE TABLE clients (id INTEGER PRIMARY KEY, name TEXT, "
                  "industry TEXT, city TEXT, country TEXT)", clients),
        TableData("shipments", "CREATE TABLE shipments (id INTEGER PRIMARY KEY, client_id "
                  "INTEGER REFERENCES clients(id), warehouse_id INTEGER REFERENCES "
                  "warehouses(id), carrier_id INTEGER REFERENCES carriers(id), vehicle_id "
                  "INTEGER REFERENCES vehicles(id), destination_city TEXT, destination_country "
                  "TEXT, ship_date TEXT, expected_date TEXT, delivered_date TEXT, weight_kg "
                  "REAL, cost REAL, status TEXT)", shipments),
        TableData("packages", "CREATE TABLE packages (id INTEGER PRIMARY KEY, shipment_id "
                  "INTEGER REFERENCES shipments(id), weight_kg REAL, length_cm INTEGER, "
                  "is_fragile INTEGER)", packages),
        TableData("tracking_events", "CREATE TABLE tracking_events (id INTEGER PRIMARY KEY, "
                  "shipment_id INTEGER REFERENCES shipments(id), event_date TEXT, location TEXT, "
                  "event_type TEXT)", events),
    ], ["CREATE INDEX idx_packages_shipment ON packages(shipment_id)",
        "CREATE INDEX idx_events_shipment ON tracking_events(shipment_id)"])


def _vehicles(rng: random.Random, carriers: list[Row]) -> list[Row]:
    rows: list[Row] = []
    for carrier in carriers:
        for _ in range(rng.randint(3, 7)):
            kind = rng.choice(VEHICLE_TYPES[carrier[2]])
            capacity = {"van": 1500, "box truck": 8000, "semi-trailer": 24000,
                        "freight car": 60000, "cargo plane": 100000,
                        "container ship": 5_000_000}[kind]
            plate = f"{chr(65 + rng.randrange(26))}{chr(65 + rng.randrange(26))}-" \
                    f"{rng.randrange(1000, 10000)}"
            rows.append((len(rows) + 1, carrier[0], plate, kind, capacity))
    return rows


def _clients(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    names = sorted({f"{w} {s}" for w in CLIENT_WORDS for s in CLIENT_SUFFIX})
    for name in rng.sample(names, 60):
        city, country = rng.choice(CITIES)
        rows.append((len(rows) + 1, name, rng.choice(INDUSTRIES), city, country))
    return rows


def _shipments(rng: random.Random, carriers: list[Row], vehicles: list[Row],
               clients: list[Row], warehouses: list[Row]
               ) -> tuple[list[Row], list[Row], list[Row]]:
    vehicles_of: dict[int, list[int]] = {}
    for vid, cid, *_ in vehicles:
        vehicles_of.setdefault(cid, []).append(vid)
    shipments: list[Row] = []
    packages: list[Row] = []
    events: list[Row] = []
    days = sorted(random_day(rng, dt.date(2024, 1, 1), dt.date(2024, 12, 20))
                  for _ in range(2000))
    for sid, ship in enumerate(days, start=1):
        carrier = weighted(rng, carriers, (5, 3, 2, 2, 4, 2, 2, 4))
        client = rng.choice(clients)
        wh = weighted(rng, warehouses, (5, 4, 2, 6, 4, 5, 3, 1))
        city, country = client[3], client[4]
        weights = [money(rng.lognormvariate(2.5, 1.0)) + 0.5 for _ in range(rng.randint(1, 5))]
        total = money(sum(weights))
        lo, hi = SPEED_DAYS[carrier[2]]
        expected = ship + dt.timedelta(days=hi)
        status, delivered = _outcome(rng, ship, lo, hi)
        cost = money(total * COST_PER_KG[carrier[2]] * rng.uniform(0.8, 1.3) + 25)
        shipments.append((sid, client[0], wh[0], carrier[0], rng.choice(vehicles_of[carrier[0]]),
                          city, country, iso(ship), iso(expected),
                          iso(delivered) if delivered else None, total, cost, status))
        for w in weights:
            packages.append((len(packages) + 1, sid, w, rng.randint(10, 150),
                             int(rng.random() < 0.15)))
        events += _events(len(events), sid, ship, delivered, status, wh[2], city)
    return shipments, packages, events


def _outcome(rng: random.Random, ship: dt.date, lo: int, hi: int
             ) -> tuple[str, dt.date | None]:
    today = dt.date(2024, 12, 31)
    if rng.random() < 0.01:
        return "lost", None
    days = rng.randint(lo, hi) if rng.random() < 0.85 else hi + rng.randint(1, 10)
    delivered = ship + dt.timedelta(days=days)
    if delivered > today:
        return ("delayed" if ship + dt.timedelta(days=hi) < today else "in_transit"), None
    return "delivered", delivered


def _events(offset: int, sid: int, ship: dt.date, delivered: dt.date | None, status: str,
            origin: str, destination: str) -> list[Row]:
    rows = [(offset + 1, sid, iso(ship), origin, "picked_up"),
            (offset + 2, sid, iso(ship + dt.timedelta(days=1)), origin, "departed")]
    if delivered is not None:
        rows.append((offset + 3, sid, iso(delivered), destination, "delivered"))
    elif status in ("delayed", "lost"):
        rows.append((offset + 3, sid, iso(ship + dt.timedelta(days=2)), "in transit",
                     "exception"))
    return rows
