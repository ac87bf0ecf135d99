"""Content builders for paper documents: invoice, receipt, form, table report, contract.

Each builder takes a seeded RNG and a row budget (how many body rows fit on the target
page at the chosen font size) and returns a Doc whose `fields` hold exactly the strings
drawn, so extraction questions have one right answer.
"""

from __future__ import annotations

import random

from emulator.workload import fake
from emulator.workload.doc import Doc, Seg, Theme, heading, kv, para, row, rule, space, table


def _line_items(rng: random.Random, n: int, catalog: tuple[tuple[str, float, float], ...]
                ) -> tuple[list[tuple[str, ...]], int]:
    picks = rng.sample(catalog, k=min(n, len(catalog)))
    rows: list[tuple[str, ...]] = []
    subtotal = 0
    for name, low, high in picks:
        qty = rng.choice((1, 1, 1, 2, 3, 4, 5, 10))
        unit = fake.amount_cents(rng, low, high)
        rows.append((name, str(qty), fake.money(unit), fake.money(unit * qty)))
        subtotal += unit * qty
    return rows, subtotal


def invoice(rng: random.Random, budget: int) -> Doc:
    year = rng.choice((2023, 2024, 2025))
    vendor, customer, client_org = fake.company(rng), fake.person(rng), fake.company(rng)
    street, city = fake.address(rng)
    style = rng.choice(("iso", "us", "long"))
    issued = fake.date(rng, year)
    due = issued.fromordinal(issued.toordinal() + rng.choice((14, 30, 45)))
    n_items = max(1, min(8, budget - 17))
    items, subtotal = _line_items(rng, n_items, fake.PRODUCTS)
    rate = rng.choice((0, 5, 6.25, 7.5, 8.25, 10))
    tax = round(subtotal * rate / 100)
    fields = {
        "vendor": vendor,
        "invoice_number": fake.doc_number(rng, "INV", year),
        "date": fake.date_text(issued, style),
        "due_date": fake.date_text(due, style),
        "customer": customer,
        "email": fake.email(rng, fake.person(rng), vendor),
        "phone": fake.phone(rng),
        "subtotal": fake.money(subtotal),
        "tax": fake.money(tax),
        "total": fake.money(subtotal + tax),
    }
    blocks = [
        heading(vendor, 1.6),
        row(street),
        row(city),
        row(f"Phone: {fields['phone']}", Seg(f"Email: {fields['email']}", align="right")),
        rule(),
        heading("INVOICE", 1.4, align="right"),
        kv("Invoice No:", fields["invoice_number"]),
        kv("Invoice Date:", fields["date"]),
        kv("Due Date:", fields["due_date"]),
        row("Bill To:", gap=0.5),
        row(customer),
        row(client_org),
        table(("Description", "Qty", "Unit Price", "Amount"), items, (False, True, True, True), gap=0.5),
        rule(),
        kv("Subtotal:", fields["subtotal"], right=True),
        kv(f"Tax ({rate:g}%):", fields["tax"], right=True),
        kv("Total:", fields["total"], right=True),
        row("Thank you for your business. Payment is due within the stated terms.", gap=1.0),
    ]
    return Doc(blocks, fields, Theme(grid=True))


def receipt(rng: random.Random, budget: int) -> Doc:
    store = f"{rng.choice(fake.COMPANY_HEADS)} {rng.choice(('Market', 'Grocers', 'Foods', 'Cafe'))}"
    street, city = fake.address(rng)
    when = fake.date(rng)
    n_items = max(1, min(12, budget - 14))
    picks = rng.sample(fake.GROCERIES, k=min(n_items, len(fake.GROCERIES)))
    prices = [fake.amount_cents(rng, lo, hi) for _, lo, hi in picks]
    subtotal = sum(prices)
    tax = round(subtotal * 0.07)
    fields = {
        "vendor": store,
        "phone": fake.phone(rng),
        "date": fake.date_text(when, rng.choice(("iso", "us"))),
        "order_number": f"#{rng.randint(10000, 99999)}",
        "subtotal": fake.money(subtotal),
        "tax": fake.money(tax),
        "total": fake.money(subtotal + tax),
    }
    blocks = [
        row(Seg(store, align="center", scale=1.5, bold=True)),
        row(Seg(street, align="center")),
        row(Seg(city, align="center")),
        row(Seg(f"Tel {fields['phone']}", align="center")),
        rule(),
        kv("Date:", f"{fields['date']}"),
        kv("Order", fields["order_number"]),
        rule(),
        *[kv(name, fake.money(p), right=True) for (name, _, _), p in zip(picks, prices, strict=True)],
        rule(),
        kv("Subtotal", fields["subtotal"], right=True),
        kv("Tax 7%", fields["tax"], right=True),
        kv("Total", fields["total"], right=True),
        row(f"VISA **** {rng.randint(1000, 9999)}"),
        row(Seg("Thank you for shopping!", align="center"), gap=0.5),
    ]
    return Doc(blocks, fields, Theme(background=(252, 252, 248)))


FORM_TITLES = ("Patient Registration Form", "Change of Address Form", "Insurance Claim Form",
               "Membership Application", "Vendor Registration Form")


def form(rng: random.Random, budget: int) -> Doc:
    who = fake.person(rng)
    org = fake.company(rng)
    street, city = fake.address(rng)
    birth = fake.date(rng, rng.randint(1950, 2002))
    fields = {
        "title": rng.choice(FORM_TITLES),
        "name": who,
        "date_of_birth": fake.date_text(birth, "us"),
        "email": fake.email(rng, who, org),
        "phone": fake.phone(rng),
        "policy_number": fake.doc_number(rng, "POL", rng.choice((2023, 2024, 2025))),
        "date": fake.date_text(fake.date(rng), "us"),
    }
    pairs = [("Full Name:", who), ("Date of Birth:", fields["date_of_birth"]),
             ("Email:", fields["email"]), ("Phone:", fields["phone"]),
             ("Street Address:", street), ("City, State, ZIP:", city),
             ("Policy Number:", fields["policy_number"]), ("Employer:", org)]
    blocks = [heading(fields["title"], 1.7), row("Please print clearly. All fields are required.")]
    for label, value in pairs[: max(4, budget - 5)]:
        blocks.append(row(label, Seg(value, box="field"), gap=0.4))
    blocks += [row("Signature: " + who, Seg(f"Date: {fields['date']}", align="right"), gap=1.0)]
    return Doc(blocks, fields, Theme())


REPORTS = (("Quarterly Sales by Region", ("Region", "Q1", "Q2", "Q3", "Q4")),
           ("Inventory Summary", ("SKU", "Item", "On Hand", "Reorder", "Value")),
           ("Monthly Expenses", ("Category", "Budget", "Actual", "Variance")))
REGIONS = ("North", "South", "East", "West", "Central", "Pacific", "Mountain", "Atlantic",
           "Midwest", "Gulf", "Northeast", "Southwest")


def report_table(rng: random.Random, budget: int) -> Doc:
    title, header = rng.choice(REPORTS)
    n = max(2, min(12, budget - 6))
    rows: list[tuple[str, ...]] = []
    total = 0
    for i in range(n):
        if header[0] == "Region":
            vals = [fake.amount_cents(rng, 1_000, 90_000) for _ in range(4)]
            rows.append((REGIONS[i % len(REGIONS)], *[fake.money(v) for v in vals]))
            total += sum(vals)
        elif header[0] == "SKU":
            value = fake.amount_cents(rng, 50, 20_000)
            rows.append((f"SKU-{rng.randint(10000, 99999)}", rng.choice(fake.PRODUCTS)[0],
                         str(rng.randint(0, 500)), str(rng.randint(5, 50)), fake.money(value)))
            total += value
        else:
            budget_c, actual = fake.amount_cents(rng, 500, 9_000), fake.amount_cents(rng, 400, 9_500)
            rows.append((rng.choice(("Travel", "Software", "Rent", "Payroll", "Marketing",
                                     "Utilities", "Supplies", "Training")) + f" {i + 1}",
                         fake.money(budget_c), fake.money(actual),
                         fake.money(abs(budget_c - actual))))
            total += actual
    numeric = tuple(h not in ("Region", "SKU", "Item", "Category") for h in header)
    fields = {"title": title, "date": fake.date_text(fake.date(rng), "iso"), "total": fake.money(total)}
    blocks = [heading(title, 1.5), kv("Report date:", fields["date"]),
              table(header, rows, numeric, gap=0.5), rule(), kv("Total:", fields["total"], right=True)]
    return Doc(blocks, fields, Theme(grid=True))


CLAUSES = (
    "Services. Provider shall perform the services described in each statement of work with "
    "reasonable skill and care and in accordance with generally accepted industry standards.",
    "Fees and Payment. Client shall pay all undisputed invoices within thirty (30) days of receipt. "
    "Late amounts accrue interest at one percent (1%) per month or the maximum rate permitted by law.",
    "Confidentiality. Each party shall protect the other party's confidential information with at "
    "least the same degree of care it uses for its own and no less than reasonable care.",
    "Term and Termination. This Agreement remains in effect for twelve (12) months and renews "
    "automatically unless either party gives sixty (60) days written notice of non-renewal.",
    "Limitation of Liability. Neither party shall be liable for indirect, incidental or consequential "
    "damages, and total liability shall not exceed the fees paid in the preceding twelve months.",
    "Governing Law. This Agreement is governed by the laws of the State of Delaware without regard "
    "to its conflict of laws principles.",
    "Notices. Notices must be in writing and delivered by hand, courier or e-mail to the addresses "
    "set out above, and are effective upon receipt.",
    "Entire Agreement. This Agreement constitutes the entire agreement between the parties and "
    "supersedes all prior proposals, negotiations and understandings.",
    "Warranties. Provider warrants that the deliverables will conform in all material respects to "
    "their specifications for ninety (90) days after acceptance.",
    "Intellectual Property. Each party retains all rights in its pre-existing materials; Client owns "
    "the deliverables upon payment in full of the applicable fees.",
    "Insurance. Provider shall maintain general liability insurance of not less than two million "
    "dollars ($2,000,000) per occurrence during the term.",
    "Assignment. Neither party may assign this Agreement without the prior written consent of the "
    "other party, except to a successor of its entire business.",
    "Force Majeure. Neither party is liable for delays caused by events beyond its reasonable "
    "control, provided it gives prompt notice and resumes performance promptly.",
    "Non-Solicitation. During the term and for twelve (12) months after, neither party shall solicit "
    "for employment any employee of the other who worked on the services.",
    "Audit. Upon thirty (30) days notice Client may audit Provider's records relating to fees "
    "charged under this Agreement, no more than once per calendar year.",
    "Severability. If any provision is held unenforceable, the remaining provisions shall continue "
    "in full force and effect.",
)


def contract(rng: random.Random, budget: int) -> Doc:
    provider, client = fake.company(rng), fake.company(rng)
    year = rng.choice((2023, 2024, 2025))
    fields = {
        "title": "Master Services Agreement",
        "agreement_number": fake.doc_number(rng, "MSA", year),
        "effective_date": fake.date_text(fake.date(rng, year), "long"),
    }
    blocks = [
        heading(fields["title"], 1.5, align="center"),
        kv("Agreement No:", fields["agreement_number"], gap=0.5),
        kv("Effective Date:", fields["effective_date"]),
        para(f"This Master Services Agreement is made between {provider} (\"Provider\") and "
             f"{client} (\"Client\").", gap=0.5),
    ]
    n = max(2, min(3 * len(CLAUSES), budget // 3))  # schedules repeat the standard clauses
    for i in range(n):
        blocks.append(para(f"{i + 1}. {CLAUSES[i % len(CLAUSES)]}", gap=0.3))
    blocks += [space(1.0), row(f"For {provider}", Seg(f"For {client}", align="right")),
               row("Name: " + fake.person(rng), Seg("Name: " + fake.person(rng), align="right"))]
    return Doc(blocks, fields, Theme(), line_spacing=1.45)
