"""LLM-as-judge: a rubric scored 1-5 by a judge model behind the gateway's OpenAI surface.

Optional (it costs tokens and needs a running gateway), so it is not a built-in; build it
with the gateway URL and pass it to the runner::

    judge = RubricJudge(base_url="http://127.0.0.1:8080/v1", model="gpt-4o-mini")
    run_evals("aperture.duckdb", evaluators=[judge], blob_dir=blobs)

The judge's own requests carry ``x-aperture-task: judge`` so they are recognisable in
the store, and the judge declines to judge them (no judging of judges). Transport failures
(connection refused, timeout, 429, 5xx) are ``not_evaluable`` with ``retryable`` set, so
the runner leaves the case for the next run instead of storing a non-verdict.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from evals.base import EvalCase, Evaluator, NotEvaluable, Score, usable_answer
from evals.evidence import reference_text

JUDGE_TASK = "judge"
DEFAULT_RUBRIC = """You grade answers of a vision model about an image.
5 = fully correct and complete, nothing invented.
4 = correct with minor omissions or slips that do not change the meaning.
3 = partly correct: some important content missing or wrong.
2 = mostly wrong or mostly missing.
1 = wrong, invented, or a refusal.
Reply with JSON only: {"score": <1-5>, "reason": "<one sentence>"}."""

_JSON = re.compile(r"\{.*\}", re.DOTALL)


def parse_verdict(content: str | None) -> tuple[int, str]:
    """(score 1-5, reason) from the judge's reply; ValueError when there is none."""
    if not content or not content.strip():
        raise ValueError("empty judge reply")
    m = _JSON.search(content)
    if m is None:
        raise ValueError(f"no JSON object in judge reply: {content[:80]!r}")
    try:
        obj = json.loads(m.group(0))
    except ValueError as exc:
        raise ValueError(f"judge reply is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict) or "score" not in obj:
        raise ValueError("judge reply has no 'score'")
    raw = obj["score"]
    try:
        score = float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"judge score {raw!r} is not a number") from exc
    if score != int(score) or not 1 <= score <= 5:
        raise ValueError(f"judge score {raw!r} is not an integer from 1 to 5")
    return int(score), str(obj.get("reason") or "").strip()


def to_unit(score: int) -> float:
    """1-5 rubric score onto [0, 1]: 1 -> 0.0, 3 -> 0.5, 5 -> 1.0."""
    return (score - 1) / 4


class RubricJudge(Evaluator):
    """Score answers with a judge model through an OpenAI-compatible endpoint."""

    version = "1"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "aperture-local",
        rubric: str = DEFAULT_RUBRIC,
        name: str = "llm_judge",
        threshold: float = 0.75,
        include_image: bool = True,
        timeout_s: float = 60.0,
        max_reference_chars: int = 4000,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.model = model
        self.api_key = api_key
        self.rubric = rubric
        self.threshold = threshold
        self.include_image = include_image
        self.timeout_s = timeout_s
        self.max_reference_chars = max_reference_chars
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}  # clients do not cross process boundaries

    def client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                timeout=self.timeout_s,
                max_retries=0,
                default_headers={"x-aperture-task": JUDGE_TASK},
            )
        return self._client

    def messages(self, case: EvalCase, answer: str) -> list[dict[str, Any]]:
        """The judge prompt: rubric, task, question, reference (if loaded), answer, image."""
        parts = [f"Task: {case.task or 'unknown'}", f"Question: {case.prompt or '(not captured)'}"]
        if case.reference is not None and (ref := reference_text(case.reference)):
            parts.append(f"Ground truth text of the image:\n{ref[: self.max_reference_chars]}")
        parts.append(f"Answer to grade:\n{answer}")
        content: list[dict[str, Any]] = [{"type": "text", "text": "\n\n".join(parts)}]
        if self.include_image:
            for img in case.images:
                data = img.load()
                if data:
                    mime = f"image/{(img.format or 'png').lower().replace('jpg', 'jpeg')}"
                    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
                    content.append({"type": "image_url", "image_url": {"url": url}})
        return [{"role": "system", "content": self.rubric}, {"role": "user", "content": content}]

    def evaluate(self, case: EvalCase) -> list[Score]:
        if case.task == JUDGE_TASK:
            raise NotEvaluable("judge traffic is not judged")
        answer = usable_answer(case)
        import openai

        try:
            resp = self.client().chat.completions.create(
                model=self.model, messages=self.messages(case, answer), temperature=0
            )
        except (
            openai.APIConnectionError,
            openai.RateLimitError,
            openai.InternalServerError,
        ) as exc:
            return [
                Score.not_evaluable(
                    self.name, self.version, f"judge unavailable: {exc}", {"retryable": True}
                )
            ]
        except openai.APIStatusError as exc:
            raise NotEvaluable(f"judge refused the request: HTTP {exc.status_code}") from exc
        content = resp.choices[0].message.content if resp.choices else None
        try:
            score, reason = parse_verdict(content)
        except ValueError as exc:
            raise NotEvaluable(f"judge reply unusable: {exc}") from exc
        value = to_unit(score)
        details = {"judge_model": self.model, "rubric_score": score, "threshold": self.threshold}
        explanation = f"judge {score}/5: {reason}" if reason else f"judge {score}/5"
        return [
            Score.scored(
                self.name, self.version, value, value >= self.threshold, explanation, details
            )
        ]
