"""Task detection and answers from OCR lines (no model: lines are built by hand)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.answers import NO_TEXT, NOT_FOUND, answer, detect_task, extract_field, field_for
from emulator.ocr import OcrLine
from emulator.workload import generate_item
from emulator.workload.fields import FIELDS


def lines_of(*texts: str) -> list[OcrLine]:
    return [OcrLine(t, (0.0, 20.0 * i, 300.0, 20.0 * i + 12), 0.99) for i, t in enumerate(texts)]


INVOICE = lines_of(
    "Brightline Corp", "2585 Lakeview Blvd", "Phone: (391)555-0164 Email: info@brightline.com",
    "INVOICE", "Invoice No: INV-2023-3082", "Invoice Date: April 16, 2023", "Due Date: April 30, 2023",
    "Bill To:", "Sophia White", "Description Qty Unit Price Amount", "Design review 1 $1,129.92 $1,129.92",
    "Subtotal: $30,735.33", "Tax (8.25%): $2,535.66", "Total: $ 33,270.99",
)


@pytest.mark.parametrize("prompt, tag, task", [
    ("Transcribe all the text in this image.", None, "transcribe"),
    ("Please read all the text verbatim", None, "transcribe"),
    ("Describe this image briefly.", None, "describe"),
    ("What's in this picture", None, "describe"),
    ("What is the total?", None, "extract"),
    ("Who is the customer?", None, "extract"),
    ("anything", "extract", "extract"),
    ("What is the total?", "OCR", "transcribe"),
    ("hello", None, "describe"),
])
def test_detect_task(prompt: str, tag: str | None, task: str) -> None:
    assert detect_task(prompt, tag) == task


def test_unknown_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown task tag"):
        detect_task("What is the total?", "translate")


@pytest.mark.parametrize("question, value", [
    ("What is the total?", "$33,270.99"),
    ("What is the subtotal?", "$30,735.33"),
    ("What is the tax amount?", "$2,535.66"),
    ("What is the invoice number?", "INV-2023-3082"),
    ("What is the date?", "April 16, 2023"),
    ("What is the due date?", "April 30, 2023"),
    ("What is the email address?", "info@brightline.com"),
    ("What is the phone number?", "(391) 555-0164"),
    ("Who is the customer?", "Sophia White"),
    ("What is the company name?", "Brightline Corp"),
])
def test_extract_from_an_invoice(question: str, value: str) -> None:
    assert extract_field(question, INVOICE) == value


def test_label_must_be_a_whole_word() -> None:
    lines = lines_of("Fleetly Dashboard Orders Customers Products", "Customer: James Wilson")
    assert extract_field("Who is the customer?", lines) == "James Wilson"


def test_label_with_an_ocr_slip_still_matches() -> None:
    assert extract_field("What is the policy number?", lines_of("Po1icy Number: POL-2024-0042")) == "POL-2024-0042"


def test_value_on_the_next_line() -> None:
    lines = lines_of("Order Customer Date Status Total", "ORD-2025-0042 Jane Smith 03/18/2025 Shipped $12.00")
    assert extract_field("What is the order number?", lines) == "ORD-2025-0042"
    assert extract_field("What is the total?", lines) == "$12.00"


def test_missing_field_gives_the_refusal() -> None:
    assert answer("extract", "What is the invoice number?", lines_of("Corner Cafe", "OPEN 7 DAYS")) == NOT_FOUND
    assert answer("extract", "What is the total?", []) == NOT_FOUND
    assert answer("extract", "Why is the sky blue?", INVOICE) == NOT_FOUND


def test_transcribe_is_lines_in_order() -> None:
    assert answer("transcribe", "", lines_of("a b", "c")) == "a b\nc"
    assert answer("transcribe", "", []) == NO_TEXT


def test_describe_names_kind_heading_and_values() -> None:
    text = answer("describe", "Describe this image briefly.", INVOICE)
    assert text.startswith("An invoice with 14 lines of text")
    assert '"Brightline Corp"' in text and "$33,270.99" in text
    assert answer("describe", "", []) == "An image with no readable text."


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        answer("translate", "", INVOICE)


def test_every_catalog_question_maps_to_its_field() -> None:
    for key, spec in FIELDS.items():
        found = field_for(spec.question)
        assert found is not None and found.key == key


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["invoice", "receipt", "form", "table", "ui_screenshot", "contract", "slide"]),
       st.integers(1, 10_000))
def test_perfect_reading_answers_every_generated_question(kind: str, index: int) -> None:
    """With the ground-truth lines as the OCR output, every question gets its exact answer."""
    rec = generate_item(kind, seed=1, index=index, format="png").record
    lines = lines_of(*rec["lines"])
    for qa in rec["qa"]:
        assert answer("extract", qa["question"], lines) == qa["answer"], qa


@given(st.lists(st.text(max_size=30), max_size=8), st.text(max_size=60))
def test_answers_are_deterministic_for_any_input(texts: list[str], prompt: str) -> None:
    lines = lines_of(*texts)
    for task in ("transcribe", "extract", "describe"):
        assert answer(task, prompt, lines) == answer(task, prompt, lines)


@pytest.mark.parametrize("kind, guess", [
    ("invoice", "invoice"), ("receipt", "receipt"), ("form", "form"), ("table", "report"),
    ("slide", "slide"), ("ui_screenshot", "app screenshot"), ("screenshot_4k", "app screenshot"),
    ("sign_photo", "sign"), ("contract", "contract"),
])
def test_describe_guesses_the_kind_of_generated_pages(kind: str, guess: str) -> None:
    rec = generate_item(kind, seed=4, index=2, format="png").record
    text = answer("describe", "Describe this image briefly.", lines_of(*rec["lines"]))
    assert text.split(" with ")[0].split(" ", 1)[1] == guess
    assert f'headed "{rec["lines"][0]}"' in text


# Layouts written here, not drawn by the generator: the reader must not depend on its wording.
@pytest.mark.parametrize(("layout", "value"), [
    (("ACME STORE", "Total items: 3", "Subtotal 40000.00", "TOTAL 42041.64"), "42041.64"),
    (("Invoice 77", "Amount due: 12.00 EUR"), "12.00 EUR"),
    (("Receipt", "Total ........ 1,234.50"), "1,234.50"),
    (("Receipt", "Total", "1,234.50", "Thank you"), "1,234.50"),
    (("Totally Local Market", "Items 2", "Balance due: £ 7.10"), "£7.10"),
])
def test_total_in_foreign_layouts(layout: tuple[str, ...], value: str) -> None:
    assert extract_field("What is the total?", lines_of(*layout)) == value


def test_a_label_followed_by_other_words_does_not_take_the_next_line() -> None:
    assert extract_field("What is the total?", lines_of("Total items: 3", "Weight 4.50 kg")) is None
