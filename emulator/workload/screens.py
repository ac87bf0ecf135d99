"""Content builders for screen-like images: slides, app screenshots, 4K dashboards and signs."""

from __future__ import annotations

import random

from emulator.workload import fake
from emulator.workload.doc import Doc, Seg, Theme, heading, kv, row, rule, space, table

SLIDE_TOPICS = (
    ("Q3 Business Review", ("Revenue grew 18% year over year", "Churn fell to 2.1% per month",
                            "Two new regions launched", "Hiring plan on track", "Gross margin at 64%")),
    ("Product Roadmap 2025", ("Mobile app redesign in Q1", "Single sign-on for all plans",
                              "Usage-based billing beta", "Faster search indexing", "Offline mode")),
    ("Onboarding Checklist", ("Set up your laptop and accounts", "Meet your buddy in week one",
                              "Read the security policy", "Ship a small change", "Book a 30-day review")),
    ("Customer Survey Results", ("1,240 responses collected", "Net Promoter Score: 47",
                                 "Top request: better reports", "Support rated 4.6 out of 5",
                                 "Pricing seen as fair by 71%")),
)
PALETTES = ((32, 86, 170), (18, 110, 90), (140, 40, 60), (60, 60, 70), (170, 90, 20))


def slide(rng: random.Random, budget: int) -> Doc:
    title, bullets = rng.choice(SLIDE_TOPICS)
    org = fake.company(rng)
    fields = {"title": title, "date": fake.date_text(fake.date(rng), "long")}
    accent = rng.choice(PALETTES)
    n = max(1, min(len(bullets), budget - 4))
    blocks = [heading(title, 1.5, band=accent), space(0.3)]
    blocks += [row(f"- {b}") for b in bullets[:n]]
    blocks += [row(Seg(org, scale=0.7), Seg(fields["date"], align="right", scale=0.7), gap=0.6)]
    return Doc(blocks, fields, Theme(accent=accent), line_spacing=1.7)


APPS = ("ShopDesk", "OrderHub", "Fleetly", "CartPilot", "LedgerLine")
NAV = ("Dashboard", "Orders", "Customers", "Products", "Reports", "Settings")
STATUSES = ("Shipped", "Processing", "Delivered", "On hold", "Refunded")


def _order_fields(rng: random.Random) -> dict[str, str]:
    who = fake.person(rng)
    org = fake.company(rng)
    return {
        "app": rng.choice(APPS),
        "order_number": fake.doc_number(rng, "ORD", rng.choice((2024, 2025))),
        "customer": who,
        "email": fake.email(rng, who, org),
        "phone": fake.phone(rng),
        "status": rng.choice(STATUSES),
        "date": fake.date_text(fake.date(rng), "us"),
        "total": fake.money(fake.amount_cents(rng, 20, 4000)),
    }


def ui_screenshot(rng: random.Random, budget: int) -> Doc:
    f = _order_fields(rng)
    dark = rng.random() < 0.3
    theme = (Theme(background=(30, 32, 38), ink=(235, 235, 240), muted=(150, 150, 160),
                   accent=(70, 130, 230)) if dark else Theme())
    blocks = [
        row(Seg(f["app"], bold=True, scale=1.2), *[Seg(n) for n in NAV[:4]], band=theme.accent),
        heading(f"Order {f['order_number']}", 1.4, gap=0.5),
        kv("Customer:", f["customer"]),
        kv("Email:", f["email"]),
        kv("Phone:", f["phone"]),
        kv("Order date:", f["date"]),
        kv("Status:", f["status"]),
        kv("Total:", f["total"]),
    ]
    blocks = blocks[: max(5, budget - 2)]
    room = budget - len(blocks) - 4
    if room >= 3:  # the order's items, as an admin page shows them under the details
        picks = rng.sample(fake.PRODUCTS, k=min(4, room - 1))
        items = [(name, str(rng.randint(1, 5)), fake.money(fake.amount_cents(rng, lo, hi)))
                 for name, lo, hi in picks]
        blocks.append(table(("Item", "Qty", "Price"), items, (False, True, True), gap=0.5))
    blocks.append(row(Seg("Save", box="button"), Seg("Cancel", box="pill"), gap=0.6))
    return Doc(blocks, f, theme)


def dashboard(rng: random.Random, budget: int) -> Doc:
    """A wide admin screen: header band, KPI row and a long orders table (for 4K captures)."""
    f = _order_fields(rng)
    n = max(3, min(30, budget - 10))
    orders = []
    for i in range(n):
        num = f["order_number"] if i == 0 else fake.doc_number(rng, "ORD", rng.choice((2024, 2025)))
        total = f["total"] if i == 0 else fake.money(fake.amount_cents(rng, 20, 4000))
        who = f["customer"] if i == 0 else fake.person(rng)
        status = f["status"] if i == 0 else rng.choice(STATUSES)
        when = f["date"] if i == 0 else fake.date_text(fake.date(rng), "us")
        orders.append((num, who, when, status, total))
    revenue = fake.money(fake.amount_cents(rng, 10_000, 900_000))
    for key in ("customer", "status", "phone"):
        del f[key]  # drawn only as table cells, where a label-based reader cannot pair them
    blocks = [
        row(Seg(f["app"], bold=True, scale=1.3), *[Seg(n) for n in NAV],
            Seg(f["email"], align="right"), band=(40, 44, 60)),
        heading("Orders overview", 1.5, gap=0.5),
        row(f"Revenue this month: {revenue}", f"Open orders: {rng.randint(5, 400)}",
            f"Returns: {rng.randint(0, 40)}"),
        rule(),
        table(("Order", "Customer", "Date", "Status", "Total"), orders,
              (False, False, False, False, True)),
        rule(),
        row(f"Showing 1-{n} of {n + rng.randint(0, 900)} orders"),
    ]
    return Doc(blocks, f, Theme(grid=True))


SIGN_NAMES = ("Corner Cafe", "Main Street Bakery", "City Hardware", "Blue Door Books",
              "Sunrise Diner", "Harbor Fish Market", "Green Leaf Pharmacy", "Oak Street Tailor",
              "Deli 21", "Tacos", "Pizza", "Bakery", "Books", "Florist")
SIGN_TAGLINES = ("OPEN 7 DAYS", "FRESH COFFEE", "SINCE 1987", "WALK-INS WELCOME", "NOW HIRING",
                 "FREE WIFI", "OPEN 24 HOURS", "OPEN", "EXIT", "SALE")


def sign(rng: random.Random, budget: int) -> Doc:
    name = rng.choice(SIGN_NAMES)
    fields = {"title": name, "vendor": name, "phone": fake.phone(rng)}
    plate = rng.choice(((250, 245, 230), (30, 60, 40), (120, 20, 30), (20, 30, 70)))
    light = sum(plate) > 400
    ink = (25, 25, 25) if light else (250, 250, 240)
    blocks = [row(Seg(name, align="center", bold=True, scale=1.2))]
    if budget >= 2:
        blocks.append(row(Seg(rng.choice(SIGN_TAGLINES), align="center", scale=0.8)))
    if budget >= 3:
        blocks.append(row(Seg(f"Call {fields['phone']}", align="center", scale=0.7)))
    return Doc(blocks, fields, Theme(background=plate, ink=ink, muted=ink), line_spacing=1.5)
