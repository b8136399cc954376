"""The ``library`` database: branches, authors, publishers, genres, books, physical
copies, members, loans (2023-2024) and late-return fines."""
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
    random_day,
    weighted,
)

BRANCHES = (("Central Library", "Springfield", 1952), ("Riverside Branch", "Springfield", 1987),
            ("Oak Hill Branch", "Shelbyville", 1995), ("Harbor Branch", "Ogdenville", 2004),
            ("University Branch", "Springfield", 2012))
NATIONALITIES = ("American", "British", "French", "German", "Japanese", "Nigerian",
                 "Brazilian", "Indian", "Canadian", "Spanish")
PUBLISHERS = (("Penguin House", "United Kingdom", 1935), ("Harbor Press", "United States", 1962),
              ("Blue Owl Books", "Canada", 1988), ("Maison Lettres", "France", 1921),
              ("Sakura Publishing", "Japan", 1970), ("Northstar Media", "United States", 1999),
              ("Verlag Grün", "Germany", 1949), ("Lagos Literary", "Nigeria", 1984),
              ("Quill & Ink", "United Kingdom", 2005), ("Editora Sol", "Brazil", 1976),
              ("Open Page", "United States", 2011), ("Cedar Tree Press", "Canada", 1993))
GENRES = ("Fantasy", "Science Fiction", "Mystery", "Romance", "History", "Biography",
          "Science", "Poetry", "Children", "Thriller", "Travel", "Cooking")
TITLE_ADJ = ("Silent", "Hidden", "Last", "Golden", "Broken", "Distant", "Secret", "Crimson",
             "Forgotten", "Endless", "Quiet", "Burning", "Little", "Wild", "Lost")
TITLE_NOUN = ("River", "Kingdom", "Garden", "Star", "City", "Letter", "Island", "Mountain",
              "Forest", "Winter", "Voyage", "Shadow", "Promise", "Machine", "Ocean", "Kitchen")
LANGUAGES = ("English", "French", "German", "Japanese", "Spanish", "Portuguese")
MEMBERSHIPS = ("standard", "student", "senior", "premium")
LOANS_START = dt.date(2023, 1, 1)
LOANS_END = dt.date(2024, 12, 15)
LOAN_DAYS = 21
FINE_PER_DAY = 0.25


def build_library(rng: random.Random) -> DatabaseData:
    """Generate the library database from ``rng``."""
    branches = [(i + 1, *b) for i, b in enumerate(BRANCHES)]
    authors = [(i, person_name(rng), rng.randint(1900, 1995),
                weighted(rng, NATIONALITIES, (6, 5, 3, 3, 3, 2, 2, 2, 2, 2)))
               for i in range(1, 121)]
    publishers = [(i + 1, *p) for i, p in enumerate(PUBLISHERS)]
    genres = [(i + 1, g) for i, g in enumerate(GENRES)]
    books = _books(rng, authors, publishers, len(genres))
    copies = _copies(rng, books, len(branches))
    members = _members(rng, len(branches))
    loans, fines = _loans(rng, copies, members)
    return DatabaseData("library", [
        TableData("branches", "CREATE TABLE branches (id INTEGER PRIMARY KEY, name TEXT, "
                  "city TEXT, opened_year INTEGER)", branches),
        TableData("authors", "CREATE TABLE authors (id INTEGER PRIMARY KEY, name TEXT, "
                  "birth_year INTEGER, nationality TEXT)", authors),
        TableData("publishers", "CREATE TABLE publishers (id INTEGER PRIMARY KEY, name TEXT, "
                  "country TEXT, founded_year INTEGER)", publishers),
        TableData("genres", "CREATE TABLE genres (id INTEGER PRIMARY KEY, name TEXT)", genres),
        TableData("books", "CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT, author_id "
                  "INTEGER REFERENCES authors(id), publisher_id INTEGER REFERENCES "
                  "publishers(id), genre_id INTEGER REFERENCES genres(id), published_year "
                  "INTEGER, pages INTEGER, language TEXT, isbn TEXT)", books),
        TableData("copies", "CREATE TABLE copies (id INTEGER PRIMARY KEY, book_id INTEGER "
                  "REFERENCES books(id), branch_id INTEGER REFERENCES branches(id), "
                  "acquired_date TEXT, condition TEXT)", copies),
        TableData("members", "CREATE TABLE members (id INTEGER PRIMARY KEY, name TEXT, email "
                  "TEXT, join_date TEXT, membership_type TEXT, home_branch_id INTEGER "
                  "REFERENCES branches(id), birth_year INTEGER)", members),
        TableData("loans", "CREATE TABLE loans (id INTEGER PRIMARY KEY, copy_id INTEGER "
                  "REFERENCES copies(id), member_id INTEGER REFERENCES members(id), loan_date "
                  "TEXT, due_date TEXT, return_date TEXT)", loans),
        TableData("fines", "CREATE TABLE fines (id INTEGER PRIMARY KEY, loan_id INTEGER "
                  "REFERENCES loans(id), amount REAL, is_paid INTEGER)", fines),
    ], ["CREATE INDEX idx_loans_copy ON loans(copy_id)"])


def _books(rng: random.Random, authors: list[Row], publishers: list[Row],
           num_genres: int) -> list[Row]:
    rows: list[Row] = []
    titles = sorted({f"The {a} {n}" for a in TITLE_ADJ for n in TITLE_NOUN})
    for title in rng.sample(titles, 180):
        author = rng.choice(authors)
        year = rng.randint(max(author[2] + 20, 1950), 2024)
        isbn = f"978-{rng.randrange(10**9, 10**10)}"
        publisher = rng.choice([p for p in publishers if p[3] <= year])
        rows.append((len(rows) + 1, title, author[0], publisher[0],
                     rng.randint(1, num_genres), year, rng.randint(90, 820),
                     weighted(rng, LANGUAGES, (14, 2, 2, 1, 2, 1)), isbn))
    return rows


def _copies(rng: random.Random, books: list[Row], num_branches: int) -> list[Row]:
    rows: list[Row] = []
    for book in books:
        for _ in range(weighted(rng, (1, 2, 3, 4), (3, 4, 2, 1))):
            acquired = random_day(rng, dt.date(max(book[5], 2000), 1, 1),
                                  dt.date(max(book[5], 2022), 6, 30))
            condition = weighted(rng, ("new", "good", "worn", "damaged"), (3, 6, 3, 1))
            rows.append((len(rows) + 1, book[0], rng.randint(1, num_branches), iso(acquired),
                         condition))
    return rows


def _members(rng: random.Random, num_branches: int) -> list[Row]:
    rows: list[Row] = []
    for mid in range(1, 301):
        name = person_name(rng)
        joined = random_day(rng, dt.date(2015, 1, 1), dt.date(2024, 6, 30))
        kind = weighted(rng, MEMBERSHIPS, (10, 4, 3, 2))
        born = rng.randint(1998, 2006) if kind == "student" else (
            rng.randint(1940, 1960) if kind == "senior" else rng.randint(1960, 2000))
        rows.append((mid, name, email_for(name, mid, "mail.example"), iso(joined), kind,
                     rng.randint(1, num_branches), born))
    return rows


def _loans(rng: random.Random, copies: list[Row], members: list[Row]
           ) -> tuple[list[Row], list[Row]]:
    loans: list[Row] = []
    fines: list[Row] = []
    days = sorted(random_day(rng, LOANS_START, LOANS_END) for _ in range(2600))
    for lid, day in enumerate(days, start=1):
        copy = rng.choice(copies)
        member = rng.choice(members)
        due = day + dt.timedelta(days=LOAN_DAYS)
        held = rng.randint(3, 20) if rng.random() < 0.8 else rng.randint(22, 60)
        returned = day + dt.timedelta(days=held)
        if returned > LOANS_END:
            returned = None
        loans.append((lid, copy[0], member[0], iso(day), iso(due),
                      iso(returned) if returned else None))
        if returned is not None and returned > due:
            late = (returned - due).days
            fines.append((len(fines) + 1, lid, money(late * FINE_PER_DAY),
                          int(rng.random() < 0.7)))
    return loans, fines
