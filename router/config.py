"""Gateway configuration: one YAML file, validated by pydantic, overridable from the environment.

``load_config(path)`` reads the YAML (with ``${VAR}`` / ``${VAR:-default}`` expansion, so
``examples/emulated.yaml`` can point at ``APERTURE_EMULATOR_URL``), then applies environment
overrides through pydantic-settings: ``APERTURE_TELEMETRY__DB_PATH=/tmp/x.duckdb`` sets
``telemetry.db_path`` (prefix ``APERTURE_``, nested with ``__``). Provider keys are never in the
file: a provider names the environment variable that holds its key.

Example::

    cfg = load_config("examples/emulated.yaml")
    spec = cfg.models["gpt-4o"]
    estimate_image_tokens(spec.image.to_rule(), 1024, 1024, "high")  # 765
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from collector.semconv import ProviderKind
from router.guardrails.config import GuardrailsConfig
from router.rollout.settings import AutopilotSettings, RolloutSettings
from router.tokens import TokenRule, rule_from_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderConfig(_Strict):
    kind: ProviderKind
    base_url: str
    api_key_env: str | None = None
    # Used only when the env var is unset: for local emulators, never for a real provider key.
    api_key_default: str | None = None
    connect_timeout_s: float = 5.0
    timeout_s: float = 120.0
    max_retries: int = 2
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    cooldown_failures: int = 5
    cooldown_s: float = 30.0

    def api_key(self) -> str | None:
        value = os.environ.get(self.api_key_env) if self.api_key_env else None
        return value or self.api_key_default


class Price(_Strict):
    """USD per 1M tokens. Cached input (a prompt-cache hit) and cache writes have their own prices
    where the provider charges differently; unset, they cost the full input price."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    effective_from: date | None = None


class ImageRuleConfig(_Strict):
    """Configurable constants of a model's image-token rule (see :class:`router.tokens.TokenRule`)."""

    rule: Literal["tile", "patch", "claude", "claude_legacy", "gemini_fixed", "gemini_tile", "gemini_media"]
    base: int | None = None
    tile: int | None = None
    max_dim: int | None = None
    patch_budget: int | None = None
    multiplier: float | None = None
    low_mode: Literal["fit512", "high"] | None = None
    max_edge: int | None = None
    max_tokens: int | None = None
    fixed_tokens: int | None = None
    tile_mode: Literal["crop15", "plain768"] | None = None
    view_side: int | None = None
    media_tokens: dict[str, int] | None = None
    media_view: dict[str, int] | None = None
    default_media: str | None = None

    def to_rule(self) -> TokenRule:
        return rule_from_config(self.model_dump())


class ModelLimits(_Strict):
    formats: list[str] = Field(default_factory=lambda: ["png", "jpeg", "gif", "webp"])
    max_image_bytes: int = 20 * 1024 * 1024
    max_images: int = 500
    max_request_image_bytes: int = 50 * 1024 * 1024
    max_side: int | None = None  # images beyond this are refused by the provider
    downscale_to: int | None = None  # the provider resizes beyond this anyway: send it pre-resized
    animated: bool = False


class ModelSpec(_Strict):
    id: str = ""
    provider: str
    upstream: str
    price: Price
    image: ImageRuleConfig
    limits: ModelLimits = Field(default_factory=ModelLimits)
    details: list[str] = Field(default_factory=lambda: ["low", "high", "auto"])
    media_resolution: bool = False
    url_images: bool = True  # the provider can fetch image URLs itself
    tools: bool = True
    max_output_tokens: int = 4096

    def token_rule(self) -> TokenRule:
        return self.image.to_rule()


class VirtualKey(_Strict):
    team: str
    rpm: int | None = None
    tpm: int | None = None
    daily_budget_usd: float | None = None


class TeamConfig(_Strict):
    daily_budget_usd: float | None = None


class ImagesConfig(_Strict):
    max_image_bytes: int = 20 * 1024 * 1024
    max_request_image_bytes: int = 50 * 1024 * 1024
    max_images: int = 500
    max_pixels: int = 178_956_970
    strip_metadata: bool = True
    downscale_to_provider_max: bool = True
    text_features: bool = True


class ServerConfig(_Strict):
    """Limits of the HTTP surface, enforced before a request reaches the pipeline.

    ``max_body_bytes`` (48 MiB) holds the largest inline request any provider takes (Anthropic
    32 MB, Gemini 20 MB inline; OpenAI's 20 MB per image is 26.7 MB as base64) with room to
    spare; bigger image sets go by URL, which the gateway fetches under ``images`` limits.
    ``max_json_depth`` is far above any chat body (a tool schema nests a dozen levels).
    """

    max_body_bytes: int = Field(default=48 * 1024 * 1024, gt=0)
    max_json_depth: int = Field(default=64, ge=8, le=512)


class SsrfConfig(_Strict):
    allow_networks: list[str] = Field(default_factory=list)
    allow_hosts: list[str] = Field(default_factory=list)
    connect_timeout_s: float = 3.0
    total_timeout_s: float = 10.0
    max_redirects: int = 3


class UpstreamConfig(_Strict):
    # What carries upstream requests: aiohttp (C parser and pool, the default) or httpx's own
    # httpcore (pure Python, kept as a fallback for environments where aiohttp misbehaves).
    engine: Literal["aiohttp", "httpcore"] = "aiohttp"


class TelemetryConfig(_Strict):
    service_name: str = "aperture-gateway"
    db_path: str | None = "aperture.duckdb"
    otlp: bool | None = None  # None: on when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set
    capture_content: bool = False
    blob_dir: str | None = None
    blob_retention_days: float | None = None
    # Where the embedded store's exporter turns spans into rows: a child process (the gateway's
    # requests never wait for that work's GIL) or its own thread (no extra process). The file
    # is written by this process either way.
    span_conversion: Literal["process", "thread"] = "process"


class BudgetsConfig(_Strict):
    max_request_cost_usd: float | None = None
    # Where the day's settled spend per key and team is kept across restarts (per process).
    ledger_file: str | None = None


def _default_redis_url() -> str:
    return os.environ.get("APERTURE_REDIS_URL") or "redis://127.0.0.1:6379/0"


class StateConfig(_Strict):
    """Where rate limits, budgets and breakers live: this process, or a Redis shared by replicas."""

    backend: Literal["memory", "redis"] = "memory"
    url: str = Field(default_factory=_default_redis_url)
    key_prefix: str = "aperture:"
    # Redis unreachable: "open" serves with this process's own limits; "closed" refuses (503).
    on_failure: Literal["open", "closed"] = "open"
    timeout_s: float = Field(default=0.25, gt=0)  # per state operation, connect included
    retry_interval_s: float = Field(default=1.0, ge=0)  # after a failure, how long before trying Redis again
    reservation_ttl_s: float = Field(default=900.0, gt=0)  # a replica that died mid-request frees its hold after this


class CacheConfig(_Strict):
    """The response cache: off unless enabled, for every team or for the listed ones."""

    enabled: bool = False
    teams: list[str] | None = None  # None: every team (when enabled)
    backend: Literal["memory", "redis"] = "memory"
    url: str | None = None  # redis backend; None: state.url
    ttl_s: float = Field(default=3600.0, gt=0)
    max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)  # memory backend's LRU cap
    max_entry_bytes: int = Field(default=1024 * 1024, gt=0)
    shared_across_teams: bool = False
    timeout_s: float = Field(default=0.25, gt=0)

    def enabled_for(self, team: str) -> bool:
        return self.enabled and (self.teams is None or team in self.teams)


class RoutingConfig(_Strict):
    rules_file: str | None = None
    rules_store: str | None = None
    default_model: str = "gpt-4o"
    explore_fraction: float = Field(default=0.0, ge=0.0, le=0.5)
    explore_models: list[str] = Field(default_factory=list)
    # What the canary/exploration split hashes: each request, the team, or the client's reference
    # id (x-aperture-reference-id) so that a labelled evaluation case always lands in the same arm.
    sticky: Literal["request", "team", "reference"] = "request"
    poll_interval_s: float = 0.5


class AppConfig(BaseSettings):
    """The whole gateway configuration. Environment variables (``APERTURE_…``) win over the file."""

    #: ``null`` in an environment variable is YAML's null, so a limit that defaults on (such as
    #: ``APERTURE_AUTOPILOT__MAX_CANARY_S``) can be switched off without a config file.
    model_config = SettingsConfigDict(env_prefix="APERTURE_", env_nested_delimiter="__", extra="forbid",
                                      env_parse_none_str="null")

    providers: dict[str, ProviderConfig]
    models: dict[str, ModelSpec]
    virtual_keys: dict[str, VirtualKey] = Field(default_factory=dict)
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    admin_key_env: str | None = "APERTURE_ADMIN_KEY"
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    ssrf: SsrfConfig = Field(default_factory=SsrfConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    autopilot: AutopilotSettings = Field(default_factory=AutopilotSettings)
    state: StateConfig = Field(default_factory=StateConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    base_dir: str = "."

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @field_validator("models")
    @classmethod
    def _fill_ids(cls, models: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        for model_id, spec in models.items():
            spec.id = model_id
        return models

    @model_validator(mode="after")
    def _check_references(self) -> AppConfig:
        for model_id, spec in self.models.items():
            if spec.provider not in self.providers:
                raise ValueError(f"model {model_id!r} names unknown provider {spec.provider!r}")
        if self.routing.default_model not in self.models:
            raise ValueError(f"routing.default_model {self.routing.default_model!r} is not in the catalog")
        for m in self.routing.explore_models:
            if m not in self.models:
                raise ValueError(f"routing.explore_models names unknown model {m!r}")
        return self

    @property
    def open_mode(self) -> bool:
        """No virtual keys configured: any bearer token is accepted (local use only)."""
        return not self.virtual_keys

    def resolve_path(self, value: str | None) -> Path | None:
        """A path the gateway writes (store, blobs, rule store, ledger), made absolute.

        One rule for every command: a relative path is relative to where the command runs, not
        to the config file, so ``aperture serve -c examples/x.yaml`` and ``aperture spend`` in
        the same directory meet at the same ``./aperture.duckdb``.
        """
        if value is None:
            return None
        return Path(value).expanduser().absolute()

    def resolve_config_path(self, value: str | None) -> Path | None:
        """A file shipped beside the config (``routing.rules_file``): relative to the config file."""
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def admin_key(self) -> str | None:
        return os.environ.get(self.admin_key_env) if self.admin_key_env else None


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""
    env = os.environ if environ is None else environ

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ValueError(f"environment variable {name} is not set and has no default")

    return _ENV_REF.sub(sub, text)


def parse_config(text: str, base_dir: str | Path = ".", environ: dict[str, str] | None = None) -> AppConfig:
    data: Any = yaml.safe_load(expand_env(text, environ))
    if not isinstance(data, dict):
        raise ValueError("the configuration file must hold a mapping")
    data.setdefault("base_dir", str(base_dir))
    return AppConfig(**data)


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> AppConfig:
    """``environ`` (default ``os.environ``) is what ``${VAR}`` in the file expands from."""
    p = Path(path)
    return parse_config(p.read_text(encoding="utf-8"), base_dir=p.resolve().parent, environ=environ)
