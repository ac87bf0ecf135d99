"""The extraction fields the workload asks about and the emulator answers.

One table shared by the generator (question wording) and the answerer (labels to look for
and the shape of a value), so a generated question always has a matching reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MONEY = r"\$\s?\d[\d,]*\.\d{2}"
# After a label ("TOTAL 42041.64", "Amount due: 12.00 EUR", "Total ..... 1,234.50") an amount
# needs no currency sign; without a label only a marked amount is taken for money.
LABELLED_MONEY = (r"(?:[$€£]\s?)?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d{2}"
                  r"(?:\s?(?:USD|EUR|GBP|CHF|CAD|AUD)\b)?")
DATE = (r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{4}\b|"
        r"\b(?:January|February|March|April|May|June|July|August|September|October|November|"
        r"December)\s+\d{1,2},\s*\d{4}")
DOC_ID = r"\b[A-Z]{2,5}-\d{4}-\d{3,5}\b"
ORDER_ID = DOC_ID + r"|#\s?\d{4,8}\b"
EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
PHONE = r"\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}"


@dataclass(frozen=True)
class FieldSpec:
    """`labels` are looked for in the text (most specific first); `pattern` is the value's
    shape (None: the rest of the line, or the next line); `heading` fields are answered by
    the first line; `keywords` map a question to the field; `exclude` are labels of other
    fields that contain this field's label ("due date" contains "date")."""

    key: str
    question: str
    keywords: tuple[str, ...]
    labels: tuple[str, ...] = ()
    pattern: str | None = None
    heading: bool = False
    exclude: tuple[str, ...] = ()
    #: The value's shape right after one of `labels`, when looser than `pattern`.
    labelled_pattern: str | None = None

    def regex(self) -> re.Pattern[str] | None:
        return re.compile(self.pattern) if self.pattern else None

    def labelled_regex(self) -> re.Pattern[str] | None:
        return re.compile(self.labelled_pattern) if self.labelled_pattern else self.regex()


FIELDS: dict[str, FieldSpec] = {f.key: f for f in (
    FieldSpec("invoice_number", "What is the invoice number?", ("invoice number", "invoice no",
              "invoice #", "invoice id"), ("invoice no", "invoice number", "invoice #"), DOC_ID),
    FieldSpec("order_number", "What is the order number?", ("order number", "order no", "order #",
              "order id"), ("order",), ORDER_ID),
    FieldSpec("agreement_number", "What is the agreement number?", ("agreement number",
              "agreement no", "contract number"), ("agreement no", "agreement number"), DOC_ID),
    FieldSpec("policy_number", "What is the policy number?", ("policy number", "policy no"),
              ("policy number", "policy no"), DOC_ID),
    FieldSpec("due_date", "What is the due date?", ("due date", "due", "payment due"),
              ("due date",), DATE),
    FieldSpec("date_of_birth", "What is the date of birth?", ("date of birth", "birth", "born",
              "dob"), ("date of birth",), DATE),
    FieldSpec("effective_date", "What is the effective date?", ("effective date", "effective"),
              ("effective date",), DATE),
    FieldSpec("date", "What is the date?", ("date", "when"), ("invoice date", "order date",
              "report date", "date"), DATE, exclude=("due date", "date of birth", "effective date")),
    FieldSpec("subtotal", "What is the subtotal?", ("subtotal", "sub-total"), ("subtotal",), MONEY,
              labelled_pattern=LABELLED_MONEY),
    FieldSpec("tax", "What is the tax amount?", ("tax", "vat"), ("tax",), MONEY, labelled_pattern=LABELLED_MONEY),
    FieldSpec("total", "What is the total?", ("total", "amount due", "how much", "balance due"),
              ("total", "amount due", "balance due"), MONEY, labelled_pattern=LABELLED_MONEY),
    FieldSpec("email", "What is the email address?", ("email", "e-mail"), ("email", "e-mail"), EMAIL),
    FieldSpec("phone", "What is the phone number?", ("phone", "telephone", "call"),
              ("phone", "tel", "call"), PHONE),
    FieldSpec("customer", "Who is the customer?", ("customer", "bill to", "billed to", "client"),
              ("customer", "bill to")),
    FieldSpec("name", "What is the full name?", ("full name", "name", "applicant"),
              ("full name",)),
    FieldSpec("status", "What is the order status?", ("status",), ("status",)),
    FieldSpec("vendor", "What is the company name?", ("company", "vendor", "store", "business",
              "seller", "shop"), heading=True),
    FieldSpec("title", "What is the title?", ("title", "heading"), heading=True),
)}
