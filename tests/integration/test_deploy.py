"""The deploy kit holds together: TraceQL parses with Grafana's grammar, compose and provisioning
files are consistent, and every metric the dashboard queries is one the running gateway exports."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "aperture.json"
TRACEQL_DOC = ROOT / "docs" / "traceql.md"
JS = ROOT / "tests" / "js"
EXAMPLE = ROOT / "examples" / "emulated.yaml"


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest their panels


def _targets(kind: str) -> list[dict[str, Any]]:
    return [
        t for p in _panels(_dashboard()["panels"]) for t in p.get("targets", [])
        if (t.get("datasource") or p.get("datasource") or {}).get("type") == kind
    ]


def dashboard_traceql() -> list[str]:
    return [t["query"] for t in _targets("tempo")]


def doc_traceql() -> list[str]:
    return [m.strip() for m in re.findall(r"```traceql\n(.*?)```", TRACEQL_DOC.read_text(), flags=re.S)]


# ---------------------------------------------------------------- (a) TraceQL grammar


@pytest.fixture(scope="module")
def traceql_parser() -> Path:
    """A directory holding parse.mjs next to an installed @grafana/lezer-traceql (cached across runs)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed: cannot run Grafana's TraceQL grammar")
    cache = Path(os.environ.get("APERTURE_NODE_CACHE") or Path.home() / ".cache" / "aperture" / "traceql-parser")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers share the cache
        wanted = (JS / "package.json").read_text()
        installed = cache / "node_modules" / "@grafana" / "lezer-traceql" / "package.json"
        if not installed.exists() or (cache / "package.json").read_text() != wanted:
            (cache / "package.json").write_text(wanted)
            subprocess.run(
                ["npm", "install", "--prefix", str(cache), "--no-audit", "--no-fund", "--no-package-lock"],
                check=True, capture_output=True, timeout=300,
            )
        shutil.copyfile(JS / "parse.mjs", cache / "parse.mjs")
    return cache


def parse(parser_dir: Path, queries: list[str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["node", str(parser_dir / "parse.mjs")], input=json.dumps(queries), capture_output=True,
        text=True, check=True, timeout=60,
    )
    return json.loads(out.stdout)


def test_dashboard_and_doc_have_traceql_to_check() -> None:
    assert len(dashboard_traceql()) >= 5
    assert len(doc_traceql()) >= 10


def test_every_traceql_query_parses_with_grafanas_grammar(traceql_parser: Path) -> None:
    queries = dashboard_traceql() + doc_traceql()
    results = parse(traceql_parser, queries)
    failed = [(r["query"], r["errors"]) for r in results if not r["ok"]]
    assert len(results) == len(queries)
    assert failed == []


@pytest.mark.parametrize(
    ("query", "position"),
    [
        ("{ span.image.cost_usd > }", 24),
        ('{ name = "image" && span.image.cost_usd >> 0.01 }', 41),
        ('{ name = "image"', 16),
    ],
)
def test_the_checker_rejects_broken_queries_at_the_right_place(traceql_parser: Path, query: str, position: int) -> None:
    (result,) = parse(traceql_parser, [query])
    assert not result["ok"]
    assert result["errors"][0]["from"] == position


# ---------------------------------------------------------------- (b) compose and provisioning


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        sources.append(source)
    return sources


def test_compose_services_are_complete_and_reference_real_files() -> None:
    compose = _yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"gateway", "collector", "tempo", "prometheus", "grafana"} <= set(services)
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context.is_dir(), name
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
        for source in _bind_sources(service):
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in named_volumes, f"{name}: undeclared volume {source}"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_gateway_and_collector_commands() -> None:
    services = _yaml(DEPLOY / "compose.yaml")["services"]
    gateway = services["gateway"]
    assert gateway["command"][:2] == ["aperture", "serve"]
    assert gateway["command"][gateway["command"].index("--host") + 1] == "0.0.0.0"
    assert gateway["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://tempo:4318"
    assert services["collector"]["command"][:2] == ["aperture", "collector"]
    prometheus = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    port = gateway["command"][gateway["command"].index("--port") + 1]
    assert jobs["aperture-gateway"]["metrics_path"] == "/metrics"
    assert jobs["aperture-gateway"]["static_configs"][0]["targets"] == [f"gateway:{port}"]


def test_tempo_receives_otlp_on_every_interface_and_stores_locally() -> None:
    tempo = _yaml(DEPLOY / "tempo" / "tempo.yaml")
    protocols = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert tempo["storage"]["trace"]["backend"] == "local"
    assert "local-blocks" in tempo["overrides"]["defaults"]["metrics_generator"]["processors"]


def _datasources() -> list[dict[str, Any]]:
    doc = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    assert doc["apiVersion"] == 1
    return doc["datasources"]


def test_grafana_provisioning_files_have_the_required_fields() -> None:
    sources = _datasources()
    for source in sources:
        assert {"name", "type", "uid", "access", "url"} <= set(source), source
    assert len({s["uid"] for s in sources}) == len(sources)
    assert {s["type"] for s in sources} == {"prometheus", "tempo"}
    providers = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["name"]
    grafana = _yaml(DEPLOY / "compose.yaml")["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith(".")}
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"


def test_dashboard_panels_have_unique_ids_and_provisioned_datasources() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    uids = {s["uid"]: s["type"] for s in _datasources()}
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"] if "datasource" in t)]
        for ref in refs:
            assert uids.get(ref["uid"]) == ref["type"], (panel["title"], ref)
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_dockerfile_builds_the_package_on_python_311_slim() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, flags=re.M)
    assert "pip install ." in text
    for source in re.findall(r"^COPY (\S+) \./", text, flags=re.M):
        assert (ROOT / source).exists(), source


# ---------------------------------------------------------------- (c) PromQL names vs /metrics

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
    "unless", "inf", "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, labels,
    keywords, durations or Grafana variables."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # $__rate_interval, ${var}
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", text):
        if match.group(1).lower() not in _KEYWORDS:
            names.add(match.group(1))
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum by (model) (rate(aperture_cost_usd_total[$__rate_interval])) * 3600", {"aperture_cost_usd_total"}),
        ('histogram_quantile(0.99, sum by (le, provider) (rate(x_bucket{provider="openai"}[5m])))', {"x_bucket"}),
        ("a / on (job) group_left b offset 5m", {"a", "b"}),
        ("sum(rate(errs_total[1m])) / clamp_min(sum(rate(reqs_total[1m])), 1e-9)", {"errs_total", "reqs_total"}),
        ('max without (instance) (up{job=~"a|b"}) > bool 0', {"up"}),
    ],
)
def test_promql_name_extraction(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def exported_names(text: str) -> set[str]:
    """Sample names in a Prometheus text exposition."""
    return {
        re.split(r"[{\s]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture()
def metrics_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """/metrics of a real gateway (emulator upstream, DuckDB store) after one good and one bad request."""
    from aperture.servers import running_app
    from aperture.wiring import build_gateway_app
    from emulator.testing import running_emulator
    from router.config import load_config

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)  # no span export beyond the DuckDB file
    with running_emulator(mode="instant", catalog=str(EXAMPLE)) as emulator_url:
        monkeypatch.setenv("APERTURE_EMULATOR_URL", emulator_url)
        app = build_gateway_app(load_config(EXAMPLE), db_path=tmp_path / "store.duckdb")
        with running_app(app, name="gateway") as url, httpx.Client(base_url=url, timeout=60) as client:
            png = (
                "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4"
                "//8/AAX+Av4N70a4AAAAAElFTkSuQmCC"
            )
            body = {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "Read the text."},
                    {"type": "image_url", "image_url": {"url": png, "detail": "low"}},
                ]}],
            }
            ok = client.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer any"})
            assert ok.status_code == 200, ok.text
            bad = client.post("/v1/chat/completions", json={**body, "model": "no-such-model"},
                              headers={"authorization": "Bearer any"})
            assert bad.json()["error"]["code"] == "model_not_found"
            return client.get("/metrics").text


def test_every_dashboard_metric_is_exported_by_the_gateway(metrics_text: str) -> None:
    exported = exported_names(metrics_text)
    wanted = {name for t in _targets("prometheus") for name in promql_metric_names(t["expr"])}
    assert wanted, "the dashboard queries no Prometheus metric"
    assert sorted(wanted - exported) == []
    # the panels the dashboard promises are there
    for name in ("aperture_cost_usd_total", "aperture_errors_total", "aperture_upstream_latency_seconds_bucket",
                 "aperture_ruleset_active", "aperture_spans_dropped", "aperture_images_total",
                 "aperture_image_tokens_estimated_total", "aperture_image_tokens_billed_total"):
        assert name in wanted
