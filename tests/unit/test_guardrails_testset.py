from __future__ import annotations

import io

from PIL import Image

from router.guardrails.injection import score_injection
from router.guardrails.pii import find_pii
from router.guardrails.testset import generate


def test_labels_agree_with_the_rendered_source_text_and_images_are_small() -> None:
    samples = generate(12)
    assert {k for s in samples for k in s.pii} == {"card", "email", "phone", "iban"}
    assert sum(s.injection for s in samples) == 2
    for s in samples:
        text = " ".join(s.lines)
        assert {f.kind for f in find_pii(text)} == set(s.pii)
        assert (score_injection(text).score >= 0.5) is s.injection
        with Image.open(io.BytesIO(s.data)) as img:
            assert max(img.size) <= 1200
    assert [s.data for s in generate(3)] == [s.data for s in samples[:3]]  # deterministic
