"""The ``hr`` database: locations, departments, jobs, employees (with managers),
projects and assignments, performance reviews and leave requests (about 300 employees)."""
from __future__ import annotations

import datetime as dt
import random

from cortex.nl2sql.dbgen_common import (
    DatabaseData,
    Row,
    TableData,
    email_for,
    iso,
    person_name,
    random_day,
    weighted,
)

LOCATIONS = (("Berlin", "Germany"), ("London", "United Kingdom"), ("New York", "United States"),
             ("San Francisco", "United States"), ("Tokyo", "Japan"), ("Toronto", "Canada"),
             ("Sydney", "Australia"), ("Madrid", "Spain"))
DEPARTMENTS = (  # name, location index, headcount weight, jobs
    ("Engineering", 3, 9, ("Software Engineer", "Senior Software Engineer", "QA Engineer")),
    ("Sales", 2, 6, ("Account Executive", "Sales Manager")),
    ("Marketing", 1, 3, ("Marketing Specialist", "Content Writer")),
    ("Finance", 2, 2, ("Accountant", "Financial Analyst")),
    ("Human Resources", 0, 2, ("HR Specialist", "Recruiter")),
    ("Operations", 5, 3, ("Operations Analyst", "Office Manager")),
    ("Customer Support", 7, 4, ("Support Agent", "Support Team Lead")),
    ("Legal", 1, 1, ("Legal Counsel",)),
    ("Research", 4, 3, ("Research Scientist", "Data Scientist")),
    ("IT", 6, 2, ("Systems Administrator", "IT Support Technician")),
)
JOB_SALARY = {
    "Software Engineer": (70000, 110000), "Senior Software Engineer": (100000, 150000),
    "QA Engineer": (60000, 90000), "Account Executive": (55000, 95000),
    "Sales Manager": (85000, 130000), "Marketing Specialist": (50000, 80000),
    "Content Writer": (45000, 70000), "Accountant": (55000, 85000),
    "Financial Analyst": (65000, 100000), "HR Specialist": (50000, 75000),
    "Recruiter": (48000, 72000), "Operations Analyst": (55000, 85000),
    "Office Manager": (45000, 65000), "Support Agent": (35000, 52000),
    "Support Team Lead": (50000, 70000), "Legal Counsel": (110000, 170000),
    "Research Scientist": (95000, 145000), "Data Scientist": (90000, 135000),
    "Systems Administrator": (65000, 95000), "IT Support Technician": (40000, 60000),
    "Department Head": (130000, 200000),
}
PROJECT_WORDS = ("Atlas", "Beacon", "Compass", "Delta", "Everest", "Falcon", "Granite",
                 "Harbor", "Ion", "Juniper", "Keystone", "Lumen", "Meridian", "Nimbus",
                 "Orion", "Pulse", "Quartz", "Redwood", "Summit", "Titan", "Unity", "Vertex")
LEAVE_TYPES = ("vacation", "sick", "parental", "unpaid")


def build_hr(rng: random.Random) -> DatabaseData:
    """Generate the hr database from ``rng``."""
    locations = [(i + 1, city, country) for i, (city, country) in enumerate(LOCATIONS)]
    jobs = [(i + 1, title, lo, hi) for i, (title, (lo, hi)) in enumerate(JOB_SALARY.items())]
    job_id = {title: jid for jid, title, _, _ in jobs}
    departments = [(i + 1, name, loc + 1, weight * rng.randrange(250, 400) * 1000)
                   for i, (name, loc, weight, _) in enumerate(DEPARTMENTS)]
    employees = _employees(rng, job_id)
    projects = _projects(rng, len(departments))
    return DatabaseData("hr", [
        TableData("locations", "CREATE TABLE locations (id INTEGER PRIMARY KEY, city TEXT, "
                  "country TEXT)", locations),
        TableData("departments", "CREATE TABLE departments (id INTEGER PRIMARY KEY, name TEXT, "
                  "location_id INTEGER REFERENCES locations(id), budget INTEGER)", departments),
        TableData("jobs", "CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT, min_salary "
                  "INTEGER, max_salary INTEGER)", jobs),
        TableData("employees", "CREATE TABLE employees (id INTEGER PRIMARY KEY, first_name "
                  "TEXT, last_name TEXT, email TEXT, hire_date TEXT, job_id INTEGER "
                  "REFERENCES jobs(id), department_id INTEGER REFERENCES departments(id), "
                  "manager_id INTEGER REFERENCES employees(id), salary REAL)", employees),
        TableData("projects", "CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT, "
                  "department_id INTEGER REFERENCES departments(id), start_date TEXT, "
                  "end_date TEXT, budget INTEGER, status TEXT)", projects),
        TableData("project_assignments", "CREATE TABLE project_assignments (employee_id "
                  "INTEGER REFERENCES employees(id), project_id INTEGER REFERENCES projects(id), "
                  "role TEXT, hours_per_week INTEGER, PRIMARY KEY (employee_id, project_id))",
                  _assignments(rng, employees, projects)),
        TableData("performance_reviews", "CREATE TABLE performance_reviews (id INTEGER PRIMARY "
                  "KEY, employee_id INTEGER REFERENCES employees(id), review_year INTEGER, "
                  "rating INTEGER, reviewer_id INTEGER REFERENCES employees(id))",
                  _reviews(rng, employees)),
        TableData("leave_requests", "CREATE TABLE leave_requests (id INTEGER PRIMARY KEY, "
                  "employee_id INTEGER REFERENCES employees(id), leave_type TEXT, start_date "
                  "TEXT, num_days INTEGER, status TEXT)", _leaves(rng, employees)),
    ])


def _employees(rng: random.Random, job_id: dict[str, int]) -> list[Row]:
    rows: list[Row] = []
    heads: dict[int, int] = {}
    for dept in range(1, len(DEPARTMENTS) + 1):
        heads[dept] = len(rows) + 1
        rows.append(_employee(rng, len(rows) + 1, "Department Head", job_id, dept, None,
                              dt.date(2008, 1, 1), dt.date(2016, 12, 31)))
    weights = [w for _, _, w, _ in DEPARTMENTS]
    for _ in range(290):
        dept = weighted(rng, range(1, len(DEPARTMENTS) + 1), weights)
        title = rng.choice(DEPARTMENTS[dept - 1][3])
        rows.append(_employee(rng, len(rows) + 1, title, job_id, dept, heads[dept],
                              dt.date(2012, 1, 1), dt.date(2024, 9, 30)))
    return rows


def _employee(rng: random.Random, emp_id: int, title: str, job_id: dict[str, int], dept: int,
              manager: int | None, hired_from: dt.date, hired_to: dt.date) -> Row:
    name = person_name(rng)
    first, last = name.split(" ", 1)
    lo, hi = JOB_SALARY[title]
    salary = round(rng.uniform(lo, hi), -2)
    return (emp_id, first, last, email_for(name, emp_id, "corp.example"),
            iso(random_day(rng, hired_from, hired_to)), job_id[title], dept, manager, salary)


def _projects(rng: random.Random, num_departments: int) -> list[Row]:
    rows: list[Row] = []
    for pid, word in enumerate(PROJECT_WORDS, start=1):
        start = random_day(rng, dt.date(2021, 1, 1), dt.date(2024, 6, 30))
        status = weighted(rng, ("active", "completed", "on hold"), (5, 4, 1))
        end = (iso(min(start + dt.timedelta(days=rng.randint(90, 540)), dt.date(2024, 10, 31)))
               if status == "completed" else None)
        dept = rng.randint(1, num_departments)
        rows.append((pid, f"Project {word}", dept, iso(start), end,
                     rng.randrange(50, 900) * 1000, status))
    return rows


def _assignments(rng: random.Random, employees: list[Row], projects: list[Row]) -> list[Row]:
    rows: list[Row] = []
    for emp in employees[10:]:
        count = weighted(rng, (0, 1, 2, 3), (3, 5, 3, 1))
        for project in sorted(rng.sample(projects, count)):
            role = weighted(rng, ("member", "lead", "advisor"), (7, 2, 1))
            rows.append((emp[0], project[0], role, rng.choice((5, 10, 15, 20, 30, 40))))
    return rows


def _reviews(rng: random.Random, employees: list[Row]) -> list[Row]:
    rows: list[Row] = []
    for emp in employees:
        hired_year = int(emp[4][:4])
        for year in range(max(2021, hired_year + 1), 2025):
            rating = weighted(rng, (1, 2, 3, 4, 5), (1, 3, 8, 6, 2))
            rows.append((len(rows) + 1, emp[0], year, rating, emp[7]))
    return rows


def _leaves(rng: random.Random, employees: list[Row]) -> list[Row]:
    rows: list[Row] = []
    for _ in range(520):
        emp = rng.choice(employees)
        kind = weighted(rng, LEAVE_TYPES, (12, 6, 1, 1))
        days = {"vacation": rng.randint(1, 15), "sick": rng.randint(1, 5),
                "parental": rng.randint(20, 90), "unpaid": rng.randint(1, 20)}[kind]
        start = random_day(rng, dt.date(2023, 1, 1), dt.date(2024, 12, 15))
        status = weighted(rng, ("approved", "rejected", "pending"), (14, 2, 1))
        rows.append((len(rows) + 1, emp[0], kind, iso(start), days, status))
    return rows

