"""Builds a running system from configuration: tracer provider and exporters, policy source, app.

This is the one place that knows every package (DESIGN.md: ``aperture/`` is the composition
root). The router gets a ``TracerProvider`` and a snapshot function; it never imports the
collector's writer.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from router.config import AppConfig

log = logging.getLogger("aperture")


def default_db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """``--db`` wins, then ``APERTURE_DB``, then ``./aperture.duckdb`` (DESIGN.md)."""
    return Path(db or os.environ.get("APERTURE_DB") or "aperture.duckdb")


def otlp_from_env() -> bool:
    """The standard OTLP variables say where to export: their presence turns export on."""
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


OTLP_PROTOCOLS = ("http/protobuf", "grpc")


def otlp_protocol(environ: Mapping[str, str] | None = None) -> str:
    """The OTLP protocol the standard variables ask for (traces-specific first), http/protobuf by default.

    ``http/json`` is in the spec but has no Python exporter, so it is refused rather than ignored.
    """
    env = os.environ if environ is None else environ
    raw = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    protocol = raw.strip().lower()
    if protocol not in OTLP_PROTOCOLS:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={raw!r} is not supported; use one of {', '.join(OTLP_PROTOCOLS)}")
    return protocol


def otlp_span_exporter(environ: Mapping[str, str] | None = None) -> SpanExporter:
    """An OTLP span exporter for the protocol in the environment; endpoint, headers and compression
    come from the other ``OTEL_EXPORTER_OTLP_*`` variables, read by the exporter itself."""
    if otlp_protocol(environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def otlp_wanted(config: AppConfig) -> bool:
    if config.telemetry.otlp is not None:
        return config.telemetry.otlp
    return otlp_from_env()


@dataclass
class Telemetry:
    provider: TracerProvider
    exporters: list[SpanExporter] = field(default_factory=list)

    def dropped(self) -> int:
        return sum(int(getattr(e, "dropped", 0)) for e in self.exporters)

    def flush(self) -> None:
        """Every finished span stored or sent, and the store file let go (the embedded exporter
        holds it between batches; ``TracerProvider.force_flush`` alone leaves it held)."""
        self.provider.force_flush()
        for exporter in self.exporters:
            exporter.force_flush()

    def shutdown(self) -> None:
        self.provider.force_flush()
        self.provider.shutdown()


def build_telemetry(
    config: AppConfig,
    *,
    db_path: Path | None = None,
    extra_exporters: list[SpanExporter] | None = None,
    schedule_delay_ms: int = 500,
    embedded_store: bool = True,
    serves_requests: bool = True,
) -> Telemetry:
    """A tracer provider exporting to DuckDB (embedded default) and/or OTLP (standard env vars).

    ``embedded_store=False`` (a worker among several) writes no DuckDB file and always exports
    OTLP, so that one collector is the store's only writer. ``serves_requests=False`` (the
    autopilot, a few spans a minute) converts spans on the exporter's thread whatever
    ``telemetry.span_conversion`` says: no request waits for that GIL, so no child is worth it.
    """
    path = (db_path or config.resolve_path(config.telemetry.db_path)) if embedded_store else None
    return telemetry_for(
        config.telemetry.service_name, path, otlp_wanted(config) or not embedded_store,
        extra_exporters=extra_exporters, schedule_delay_ms=schedule_delay_ms,
        span_conversion=config.telemetry.span_conversion if serves_requests else "thread",
    )


def telemetry_for(
    service_name: str,
    db_path: Path | None,
    otlp: bool,
    *,
    extra_exporters: list[SpanExporter] | None = None,
    schedule_delay_ms: int = 500,
    span_conversion: Literal["process", "thread"] = "thread",
) -> Telemetry:
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporters: list[SpanExporter] = []
    path = db_path
    if path is not None:
        from collector.exporter import DuckDBSpanExporter

        exporters.append(DuckDBSpanExporter(path, convert_in=span_conversion))
    if otlp and (spool_root := os.environ.get(WORKER_SPOOL_ENV)):
        from collector.delivery import exporter_from_env

        # A serve worker: what the collector does not take waits in a local spool (replayed).
        exporters.append(exporter_from_env(spool_root, int(os.environ.get(WORKER_SPOOL_BYTES_ENV) or 256 << 20)))
    elif otlp:
        exporters.append(otlp_span_exporter())
    for exporter in [*exporters, *(extra_exporters or [])]:
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=2048, schedule_delay_millis=schedule_delay_ms)
        )
    return Telemetry(provider, [*exporters, *(extra_exporters or [])])


#: The collector's generation-0 threshold for a gateway process (CPython's default is 700
#: allocations). A request and the span exporter allocate thousands of short-lived objects, so
#: at 700 the collector ran ~160 times a second (and its older generations with it), each pass
#: a pause of the event loop. Objects freed by reference counting, nearly all of them, never
#: wait for it; only cyclic garbage lives a little longer (docs/benchmarks.md, "Issue #19,
#: third round").
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Run the cyclic garbage collector less often in a gateway process (see ``GC_THRESHOLDS``)."""
    gc.set_threshold(*GC_THRESHOLDS)


def build_gateway_app(
    config: AppConfig,
    *,
    db_path: Path | None = None,
    upstream_transport: Any = None,
    fetcher: Any = None,
    extra_exporters: list[SpanExporter] | None = None,
    rules_store: Path | None = None,
    embedded_store: bool = True,
) -> Any:
    """The whole gateway: app + telemetry + policy source (static rules file or versioned store).

    With ``embedded_store=False`` spans leave by OTLP only and admin rollout actions are not
    recorded in the store (the collector holds its write lock).
    """
    from router.app import build_app
    from router.metrics import GatewayMetrics

    tune_gc()
    telemetry = build_telemetry(config, db_path=db_path, extra_exporters=extra_exporters, embedded_store=embedded_store)
    metrics = GatewayMetrics()
    metrics.add_dropped_source(telemetry.dropped)
    snapshot, admin_router, stop_policies = build_policy_source(
        config, metrics, rules_store=rules_store, db_path=db_path if embedded_store else None
    )

    def shutdown() -> None:
        stop_policies()
        telemetry.shutdown()

    app = build_app(
        config, snapshot=snapshot, upstream_transport=upstream_transport, fetcher=fetcher,
        tracer_provider=telemetry.provider, metrics=metrics, admin_router=admin_router, on_shutdown=shutdown,
        guardrails=build_guardrail_detectors(config),
    )
    app.state.telemetry = telemetry
    return app


def build_guardrail_detectors(config: AppConfig) -> Any:
    """The guardrails' detectors (the rapidocr reader, the face and NSFW models), once per process;
    ``None`` when no detector is on anywhere in the config, so a gateway without guardrails never
    loads a model. A model is loaded only when its detector is on somewhere; one whose package is
    missing becomes an ``UnavailableDetector`` (its detector then fails open or closed)."""
    guard = config.guardrails
    if not guard.active_anywhere():
        return None
    from aperture.guardrail_ocr import RapidOcrReader
    from router.guardrails.config import DetectorName
    from router.guardrails.faces import HaarFaceDetector
    from router.guardrails.nsfw import NudeNetDetector
    from router.guardrails.regions import DetectorUnavailable, RegionDetector, UnavailableDetector
    from router.guardrails.stage import Detectors

    def load(name: DetectorName, build: Callable[[], RegionDetector]) -> RegionDetector | None:
        if not guard.active_anywhere(name):
            return None
        try:
            return build()
        except DetectorUnavailable as exc:
            return UnavailableDetector(str(exc))

    return Detectors(reader=RapidOcrReader(), cache_size=guard.cache_size,
                     faces=load("faces", HaarFaceDetector), nsfw=load("nsfw", NudeNetDetector))


def build_policy_source(
    config: AppConfig, metrics: Any, *, rules_store: Path | None = None, db_path: Path | None = None
) -> tuple[Callable[[], Any], Any, Callable[[], None]]:
    from aperture.policies import policy_source

    return policy_source(config, metrics, rules_store=rules_store, db_path=db_path)


WORKER_CONFIG_ENV = "APERTURE_SERVE_CONFIG"
STARTUP_FAILURE = 3  # uvicorn's code for "this worker will never start": its supervisor stops, not respawns
WORKER_RULES_STORE_ENV = "APERTURE_SERVE_RULES_STORE"
WORKER_SPOOL_ENV = "APERTURE_SERVE_SPOOL_DIR"  # root of the workers' span spools (one slot each)
WORKER_SPOOL_BYTES_ENV = "APERTURE_SERVE_SPOOL_BYTES"


def worker_app() -> Any:
    """App factory for one of ``aperture serve --workers N``'s processes.

    uvicorn's multi-process mode imports the app by name in each worker, so the worker builds
    its own app from the config file named by ``APERTURE_SERVE_CONFIG`` (and the rule store
    in ``APERTURE_SERVE_RULES_STORE``, if any). It writes no DuckDB file: its spans go by OTLP to
    the endpoint in the standard ``OTEL_EXPORTER_OTLP_*`` variables (the collector ``serve``
    started, or one named with ``--collector``)::

        uvicorn.run("aperture.wiring:worker_app", factory=True, workers=4)
    """
    from router.config import load_config

    try:
        config_file = os.environ.get(WORKER_CONFIG_ENV)
        if not config_file:
            raise RuntimeError(f"{WORKER_CONFIG_ENV} must name the gateway config file")
        if not otlp_from_env():
            raise RuntimeError("a gateway worker needs OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT")
        rules_store = os.environ.get(WORKER_RULES_STORE_ENV)
        return build_gateway_app(load_config(config_file), rules_store=Path(rules_store) if rules_store else None,
                                 embedded_store=False)
    except Exception as exc:
        # Respawning would fail the same way forever; this exit code stops the supervisor.
        log.error("gateway worker could not start: %s", exc)
        raise SystemExit(STARTUP_FAILURE) from exc
