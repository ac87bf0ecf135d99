"""Realistic business values (names, money, dates, identifiers) drawn from a seeded RNG.

Kept local and tiny instead of depending on a fake-data library so that a seed gives the
same workload on every machine and every library version.
"""

from __future__ import annotations

import datetime as dt
import random

FIRST_NAMES = (
    "James", "Maria", "Robert", "Linda", "Michael", "Sarah", "David", "Emily", "Daniel",
    "Olivia", "Thomas", "Sophia", "Kevin", "Laura", "Brian", "Grace", "Steven", "Hannah",
    "Andrew", "Chloe", "Marcus", "Priya", "Lucas", "Elena", "Omar", "Nina", "Victor", "Julia",
)
LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Miller", "Davis", "Martinez", "Wilson", "Anderson", "Taylor",
    "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark",
    "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Lopez", "Hill", "Green", "Baker",
)
COMPANY_HEADS = (
    "Acme", "Globex", "Initech", "Northwind", "Bluefin", "Summit", "Riverside", "Pinecrest",
    "Ironwood", "Brightline", "Cedar", "Harbor", "Silverleaf", "Redstone", "Oakridge", "Vertex",
    "Lakeshore", "Granite", "Evergreen", "Copperfield", "Maple", "Skyline", "Westfield", "Crescent",
)
COMPANY_TAILS = (
    "Corp", "LLC", "Inc.", "Supply Co.", "Logistics", "Consulting", "Industries", "Partners",
    "Labs", "Systems", "Trading", "Foods", "Design Studio", "Analytics", "Services",
)
STREETS = (
    "Main St", "Oak Avenue", "Maple Drive", "Harbor Road", "Elm Street", "Market Street",
    "Park Lane", "Cedar Court", "Lakeview Blvd", "Industrial Way", "Hillside Ave", "Mill Road",
)
CITIES = (
    ("Springfield", "IL", "62704"), ("Portland", "OR", "97205"), ("Austin", "TX", "78701"),
    ("Denver", "CO", "80202"), ("Madison", "WI", "53703"), ("Raleigh", "NC", "27601"),
    ("Tucson", "AZ", "85701"), ("Albany", "NY", "12207"), ("Boise", "ID", "83702"),
    ("Columbus", "OH", "43215"), ("Reno", "NV", "89501"), ("Savannah", "GA", "31401"),
)
PRODUCTS = (
    ("Consulting hours", 85, 220), ("Website hosting (annual)", 120, 600), ("USB-C cable 2m", 9, 25),
    ("Office chair", 140, 480), ("Printer paper, 10 reams", 35, 70), ("Software license", 49, 990),
    ("Laptop stand", 25, 90), ("Installation service", 150, 900), ("Wireless mouse", 15, 60),
    ("Monitor 27 inch", 180, 450), ("Maintenance contract", 300, 2400), ("Toner cartridge", 45, 140),
    ("Design review", 200, 1200), ("Cloud storage 1TB", 60, 240), ("Shipping and handling", 8, 65),
    ("Training workshop", 400, 2500), ("Standing desk", 260, 780), ("Keyboard", 20, 150),
)
GROCERIES = (
    ("Whole milk 1 gal", 2.5, 5.5), ("Sourdough bread", 3.0, 7.0), ("Bananas", 0.9, 2.5),
    ("Coffee beans 12oz", 8.0, 16.0), ("Eggs dozen", 2.8, 6.5), ("Cheddar cheese", 3.5, 8.0),
    ("Orange juice", 3.0, 6.0), ("Chicken breast", 6.0, 14.0), ("Pasta 1lb", 1.2, 3.5),
    ("Tomato sauce", 1.5, 4.0), ("Greek yogurt", 1.0, 6.0), ("Apples 3lb", 3.5, 7.0),
    ("Sparkling water", 4.0, 9.0), ("Olive oil", 6.0, 15.0), ("Rice 2lb", 2.0, 5.0),
)
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def company(rng: random.Random) -> str:
    return f"{rng.choice(COMPANY_HEADS)} {rng.choice(COMPANY_TAILS)}"


def domain(name: str) -> str:
    head = name.split()[0].lower()
    return f"{head}.com"


def email(rng: random.Random, who: str, org: str) -> str:
    first, last = who.lower().split()[:2]
    local = rng.choice((f"{first}.{last}", f"{first[0]}{last}", "billing", "accounts", "info"))
    return f"{local}@{domain(org)}"


def phone(rng: random.Random) -> str:
    return f"({rng.randint(201, 989)}) 555-{rng.randint(100, 199):04d}"


def address(rng: random.Random) -> tuple[str, str]:
    city, state, zipc = rng.choice(CITIES)
    return f"{rng.randint(10, 9899)} {rng.choice(STREETS)}", f"{city}, {state} {zipc}"


def money(cents: int) -> str:
    """Format cents as US dollars, e.g. 123456 -> '$1,234.56'."""
    return f"${cents // 100:,}.{cents % 100:02d}"


def amount_cents(rng: random.Random, low: float, high: float) -> int:
    return int(round(rng.uniform(low, high) * 100))


def date(rng: random.Random, year: int | None = None) -> dt.date:
    start = dt.date(year or rng.choice((2023, 2024, 2025)), 1, 1)
    return start + dt.timedelta(days=rng.randint(0, 360))


def date_text(d: dt.date, style: str) -> str:
    if style == "iso":
        return d.isoformat()
    if style == "us":
        return f"{d.month:02d}/{d.day:02d}/{d.year}"
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"


def doc_number(rng: random.Random, prefix: str, year: int) -> str:
    return f"{prefix}-{year}-{rng.randint(1, 9999):04d}"
