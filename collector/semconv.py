"""Names that several packages share: span attribute keys, store columns, tasks, small types.

A dependency-free leaf (standard library only), the way the OpenTelemetry
semantic-conventions package holds attribute names: the router writes these keys, the
collector maps them to columns, evals and the optimizer read the columns. Every package
may import this module; copying one of its constants elsewhere is a bug waiting to drift.

Example::

    from collector import semconv as sc

    span.set_attribute(sc.IMAGE_SHA256, digest)
    column = sc.IMAGE_ATTRIBUTE_COLUMNS[sc.IMAGE_SHA256]   # "sha256"
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal

# --- OTel GenAI semantic conventions (the subset Aperture writes) -------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
#: A captured image part in ``gen_ai.input.messages`` is ``{"type": "uri", "modality": "image",
#: "uri": "sha256:<hex>"}``: the blob store's key, never the bytes.
IMAGE_URI_PREFIX: Final = "sha256:"
ERROR_TYPE: Final = "error.type"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"

# --- OpenInference (llm.*), written alongside gen_ai.* so Phoenix-style viewers read spans -----
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
OPENINFERENCE_KIND_LLM: Final = "LLM"
INPUT_VALUE: Final = "input.value"
INPUT_MIME_TYPE: Final = "input.mime_type"
OUTPUT_VALUE: Final = "output.value"
OUTPUT_MIME_TYPE: Final = "output.mime_type"
LLM_PROVIDER: Final = "llm.provider"
LLM_SYSTEM: Final = "llm.system"
LLM_MODEL_NAME: Final = "llm.model_name"
LLM_TOKEN_COUNT_PROMPT: Final = "llm.token_count.prompt"
LLM_TOKEN_COUNT_COMPLETION: Final = "llm.token_count.completion"
LLM_TOKEN_COUNT_TOTAL: Final = "llm.token_count.total"
LLM_COST_PROMPT: Final = "llm.cost.prompt"
LLM_COST_COMPLETION: Final = "llm.cost.completion"
LLM_COST_TOTAL: Final = "llm.cost.total"

#: ``gen_ai.operation.name`` of a request span.
OPERATION_CHAT: Final = "chat"
#: Name of the child span written once per image.
IMAGE_SPAN_NAME: Final = "image"

# --- One child span per image --------------------------------------------------------------
IMAGE_INDEX: Final = "image.index"
IMAGE_SHA256: Final = "image.sha256"
IMAGE_BYTES: Final = "image.bytes"
IMAGE_WIDTH: Final = "image.width"
IMAGE_HEIGHT: Final = "image.height"
IMAGE_FORMAT: Final = "image.format"
IMAGE_SOURCE: Final = "image.source"
IMAGE_DETAIL: Final = "image.detail"
IMAGE_TOKENS_ESTIMATED: Final = "image.tokens_estimated"
IMAGE_TOKENS_BILLED: Final = "image.tokens_billed"
IMAGE_COST_USD: Final = "image.cost_usd"
IMAGE_TRANSCODED_FROM: Final = "image.transcoded_from"
IMAGE_RESIZED_TO: Final = "image.resized_to"

# --- aperture.* ----------------------------------------------------------------------------
APERTURE_TEAM: Final = "aperture.team"
APERTURE_RULESET_VERSION: Final = "aperture.ruleset.version"
APERTURE_RULESET_ARM: Final = "aperture.ruleset.arm"
APERTURE_RULE_ID: Final = "aperture.rule.id"
APERTURE_REQUESTED_MODEL: Final = "aperture.requested_model"
APERTURE_TASK: Final = "aperture.task"
APERTURE_REFERENCE_ID: Final = "aperture.reference_id"
APERTURE_REQUEST_ID: Final = "aperture.request_id"
APERTURE_ROUTE: Final = "aperture.route"
APERTURE_ROUTE_PROPENSITY: Final = "aperture.route.propensity"
APERTURE_COST_ESTIMATED_USD: Final = "aperture.cost.estimated_usd"
APERTURE_COST_BILLED_USD: Final = "aperture.cost.billed_usd"
APERTURE_CACHE_HIT: Final = "aperture.cache.hit"  # bool, on requests that consulted the response cache
APERTURE_CACHE_SAVED_USD: Final = "aperture.cache.saved_usd"  # what the cached answer cost when it was paid
APERTURE_RETRY_COUNT: Final = "aperture.retry_count"
APERTURE_ATTEMPT: Final = "aperture.attempt"
APERTURE_FALLBACK_PATH: Final = "aperture.fallback_path"
APERTURE_IMAGE_COUNT: Final = "aperture.image_count"
APERTURE_REPLAY: Final = "aperture.replay"
#: A replay the gateway itself sent: a canary request shadowed on the active version.
APERTURE_SHADOW: Final = "aperture.shadow"
APERTURE_OUTPUT_TEXT: Final = "aperture.output_text"
#: The provider kind (``openai``/``anthropic``/``gemini``), the store's ``provider`` column;
#: ``gen_ai.provider.name`` carries the conventions' spelling (``gcp.gemini``) beside it.
APERTURE_PROVIDER: Final = "aperture.provider"
APERTURE_IMAGE_TEXT_HEIGHT_PX: Final = "aperture.image.text_height_px"
APERTURE_IMAGE_TOKENS_LOW_ESTIMATE: Final = "aperture.image.tokens_low_estimate"
#: ``"estimate"`` on an image span whose tokens were never billed (a stream cut before usage).
APERTURE_IMAGE_BILLED_FROM: Final = "aperture.image.billed_from"

# --- The canary guard's span and event (``router/rollout/guard.py``) ------------------------
ROLLOUT_GUARD_SPAN_NAME: Final = "aperture.rollout.guard"
ROLLOUT_DECISION_EVENT: Final = "aperture.rollout.decision"
APERTURE_ROLLOUT_ID: Final = "aperture.rollout.id"
APERTURE_ROLLOUT_ACTION: Final = "aperture.rollout.action"
APERTURE_ROLLOUT_REASON: Final = "aperture.rollout.reason"
APERTURE_ROLLOUT_CANDIDATE_VERSION: Final = "aperture.rollout.candidate_version"
APERTURE_ROLLOUT_ACTIVE_VERSION: Final = "aperture.rollout.active_version"
APERTURE_ROLLOUT_FRACTION: Final = "aperture.rollout.fraction"
APERTURE_ROLLOUT_N_CANARY: Final = "aperture.rollout.n_canary"
APERTURE_ROLLOUT_N_ACTIVE: Final = "aperture.rollout.n_active"
APERTURE_ROLLOUT_STATISTICS: Final = "aperture.rollout.statistics"


def rollout_metric_key(metric: str, statistic: str) -> str:
    """``aperture.rollout.<metric>.<statistic>``: one guard statistic of one evaluator."""
    return f"aperture.rollout.{metric}.{statistic}"


#: (column, attribute) pairs of ``image_spans`` beyond the span's own ids and times, in
#: column order. The collector pairs each with a coercion; the ``spans`` view rebuilds
#: attributes from them.
IMAGE_COLUMN_KEYS: tuple[tuple[str, str], ...] = (
    ("image_index", IMAGE_INDEX),
    ("sha256", IMAGE_SHA256),
    ("bytes", IMAGE_BYTES),
    ("width", IMAGE_WIDTH),
    ("height", IMAGE_HEIGHT),
    ("format", IMAGE_FORMAT),
    ("source", IMAGE_SOURCE),
    ("detail", IMAGE_DETAIL),
    ("tokens_estimated", IMAGE_TOKENS_ESTIMATED),
    ("tokens_billed", IMAGE_TOKENS_BILLED),
    ("cost_usd", IMAGE_COST_USD),
    ("transcoded_from", IMAGE_TRANSCODED_FROM),
    ("resized_to", IMAGE_RESIZED_TO),
    ("provider", APERTURE_PROVIDER),
    ("model", GEN_AI_REQUEST_MODEL),
    ("team", APERTURE_TEAM),
    ("ruleset_version", APERTURE_RULESET_VERSION),
    ("rule_id", APERTURE_RULE_ID),
    ("arm", APERTURE_RULESET_ARM),
    ("requested_model", APERTURE_REQUESTED_MODEL),
    ("task", APERTURE_TASK),
    ("reference_id", APERTURE_REFERENCE_ID),
    ("request_id", APERTURE_REQUEST_ID),
    ("text_height_px", APERTURE_IMAGE_TEXT_HEIGHT_PX),
    ("tokens_low_estimate", APERTURE_IMAGE_TOKENS_LOW_ESTIMATE),
    ("propensity", APERTURE_ROUTE_PROPENSITY),
)

#: attribute → ``image_spans`` column.
IMAGE_ATTRIBUTE_COLUMNS: Mapping[str, str] = {key: column for column, key in IMAGE_COLUMN_KEYS}

# --- Tasks ---------------------------------------------------------------------------------
Task = Literal["transcribe", "extract", "describe"]
TASK_TRANSCRIBE: Final = "transcribe"
TASK_EXTRACT: Final = "extract"
TASK_DESCRIBE: Final = "describe"
TASKS: tuple[str, ...] = (TASK_TRANSCRIBE, TASK_EXTRACT, TASK_DESCRIBE)
#: The task a request without ``x-aperture-task`` (or ``metadata.task``) is taken to be.
DEFAULT_TASK: Final = TASK_TRANSCRIBE
#: The evaluator whose score is "quality" for each task (names of ``evals`` evaluators).
QUALITY_EVALUATORS: Mapping[str, str] = {
    TASK_TRANSCRIBE: "ocr_faithfulness",
    TASK_EXTRACT: "field_accuracy",
    TASK_DESCRIBE: "grounding",
}

# --- Small shared types --------------------------------------------------------------------
ProviderKind = Literal["openai", "anthropic", "gemini"]
PROVIDER_KINDS: tuple[str, ...] = ("openai", "anthropic", "gemini")
#: Provider kind -> ``gen_ai.provider.name`` as the GenAI conventions spell it (a test checks
#: these against opentelemetry-semantic-conventions' ``GenAiProviderNameValues``).
PROVIDER_SEMCONV_NAMES: Mapping[str, str] = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
#: OpenInference's ``llm.provider`` values (``google`` for Gemini).
PROVIDER_OPENINFERENCE_NAMES: Mapping[str, str] = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}


def semconv_provider_name(kind: str) -> str:
    """``gen_ai.provider.name`` of a provider kind (an unknown kind is written as is)."""
    return PROVIDER_SEMCONV_NAMES.get(kind, kind)


def utc_now() -> datetime:
    """Naive UTC: every TIMESTAMP column in the store holds UTC."""
    return datetime.now(UTC).replace(tzinfo=None)

# --- Image guardrails ------------------------------------------------------------------------
IMAGE_GUARDRAIL_DETECTOR: Final = "image.guardrail.detector"
IMAGE_GUARDRAIL_VERDICT: Final = "image.guardrail.verdict"
IMAGE_GUARDRAIL_SCORE: Final = "image.guardrail.score"
IMAGE_GUARDRAIL_LATENCY_MS: Final = "image.guardrail.latency_ms"
IMAGE_GUARDRAIL_ACTION: Final = "image.guardrail.action"
IMAGE_GUARDRAIL_ERROR: Final = "image.guardrail.error"
#: Span event name, one per detector verdict.
IMAGE_GUARDRAIL_EVENT: Final = "image.guardrail"
#: How a failed detector was treated: "open" (let through) or "closed" (as if it fired).
IMAGE_GUARDRAIL_FAILED: Final = "image.guardrail.failed"
#: "inline" (the request waited for it) or "shadow" (recorded after the fact).
IMAGE_GUARDRAIL_MODE: Final = "image.guardrail.mode"
#: On an image span: the sha256 the client sent, when a redaction replaced the image
#: (``image.sha256`` is then the sha256 of the redacted bytes that were forwarded).
IMAGE_GUARDRAIL_ORIGINAL_SHA256: Final = "image.guardrail.original_sha256"
#: The span a shadow-mode guardrail run writes when it finishes (a child of the request span).
GUARDRAIL_SHADOW_SPAN_NAME: Final = "guardrail shadow"
