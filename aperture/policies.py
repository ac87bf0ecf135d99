"""Where the gateway's routing policy comes from: a static rules file, or the versioned store.

With a rule store (``routing.rules_store`` or ``--rules-store``), the gateway hot-reloads: a
``PolicyHolder`` polls the store's pointer and swaps immutable snapshots; an empty store is
bootstrapped with the configured rules file as its first version. Without one, the rules file
is the only version (``file-<hash>``) and changes need a restart.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Query

from router.config import AppConfig
from router.errors import AuthenticationFailed
from router.metrics import GatewayMetrics
from router.policy import PolicySnapshot, RoutingPolicy
from router.rollout import actions
from router.rollout.base import RuleStore
from router.rollout.policy import PolicyHolder
from router.rollout.store import DirectoryRuleStore
from router.rules import RulesetError, content_hash, load_ruleset_text, validate_ruleset

log = logging.getLogger("aperture")

DEFAULT_RULES = """name: default
rules: []
default:
  route: {model: %s, detail: auto}
"""


def ruleset_validator(config: AppConfig) -> Callable[[str], list[str]]:
    """Problems that make a ruleset text unacceptable for this catalog (empty list: fine)."""

    def validate(text: str) -> list[str]:
        try:
            ruleset = load_ruleset_text(text)
        except RulesetError as exc:
            return list(exc.problems)
        problems, _warnings = validate_ruleset(ruleset, config.models)
        return problems

    return validate


def rules_file_text(config: AppConfig) -> str:
    path = config.resolve_config_path(config.routing.rules_file)
    if path is None:
        return DEFAULT_RULES % config.routing.default_model
    return path.read_text(encoding="utf-8")


def open_rule_store(config: AppConfig, path: Path | None = None, *, bootstrap: bool = True) -> DirectoryRuleStore:
    root = path or config.resolve_path(config.routing.rules_store)
    if root is None:
        raise ValueError("no rule store configured (routing.rules_store or --rules-store)")
    store = DirectoryRuleStore(root, validate=ruleset_validator(config))
    if bootstrap and not store.list():
        version = store.propose(rules_file_text(config), author="bootstrap", note="initial ruleset from the rules file")
        store.activate(version.id, actor="bootstrap", reason="empty store")
        log.info("rule store %s bootstrapped with %s", root, version.id)
    return store


def build_policy(version_id: str, text: str) -> RoutingPolicy:
    return RoutingPolicy(version_id, load_ruleset_text(text))


def policy_source(
    config: AppConfig, metrics: GatewayMetrics, *, rules_store: Path | None = None, db_path: Path | None = None
) -> tuple[Callable[[], PolicySnapshot], APIRouter | None, Callable[[], None]]:
    """(snapshot function, admin router or None, stop function)."""
    if rules_store is None and config.routing.rules_store is None:
        text = rules_file_text(config)
        problems = ruleset_validator(config)(text)
        if problems:
            raise ValueError("the rules file is not a valid ruleset: " + "; ".join(problems))
        snap = PolicySnapshot(active=build_policy(f"file-{content_hash(text)[:8]}", text))
        metrics.set_ruleset({"active": snap.active.version})
        return (lambda: snap), None, (lambda: None)

    store = open_rule_store(config, rules_store)
    holder: PolicyHolder[RoutingPolicy] = PolicyHolder(
        store, build=build_policy, poll_interval_s=config.routing.poll_interval_s, snapshot_factory=PolicySnapshot
    )
    holder.start()
    metrics.ruleset_load_failures.set_function(lambda: float(holder.load_failures))
    seen: dict[str, int | None] = {"generation": None}

    def snapshot() -> PolicySnapshot:
        snap: PolicySnapshot = holder.snapshot()
        if snap.generation != seen["generation"]:
            seen["generation"] = snap.generation
            metrics.set_ruleset({"active": snap.active.version, "canary": snap.canary.version if snap.canary else None})
        return snap

    return snapshot, admin_router(config, store, holder, db_path=db_path), holder.stop


def admin_router(config: AppConfig, store: RuleStore, holder: PolicyHolder[Any], *, db_path: Path | None = None) -> APIRouter:
    """``/admin/rules/...``: the same operations as ``aperture rules``, behind the admin key."""

    def require_admin(authorization: str | None = Header(default=None)) -> str:
        if not admin_authorized(authorization, config.admin_key()):
            raise AuthenticationFailed("an admin key is required (Authorization: Bearer <APERTURE_ADMIN_KEY>)",
                                       code="invalid_admin_key", param="authorization")
        return "admin"

    router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])
    _read_routes(router, config, store)
    _write_routes(router, store, holder, db_path)
    return router


def _read_routes(router: APIRouter, config: AppConfig, store: RuleStore) -> None:
    """The endpoints that only read the rule store: versions, diff, one version, validation."""
    validate = ruleset_validator(config)

    def pointer_json() -> dict[str, Any]:
        return store.pointer().to_json()

    @router.get("/rules")
    def list_versions() -> dict[str, Any]:
        return {"versions": [v.to_json() for v in store.list()], "pointer": pointer_json()}

    @router.get("/rules/diff")
    def diff(a: str = Query(...), b: str = Query(...)) -> dict[str, str]:
        return {"diff": store.diff(a, b)}

    @router.get("/rules/{version_id}")
    def show(version_id: str) -> dict[str, Any]:
        meta, text = store.get(version_id)
        return {"version": meta.to_json(), "text": text}

    @router.post("/rules/validate")
    def validate_text(text: str = Body(..., media_type="text/plain")) -> dict[str, Any]:
        problems = validate(text)
        warnings: list[str] = []
        if not problems:
            warnings = validate_ruleset(load_ruleset_text(text), config.models)[1]
        return {"valid": not problems, "problems": problems, "warnings": warnings}


def _write_routes(router: APIRouter, store: RuleStore, holder: PolicyHolder[Any], db_path: Path | None) -> None:
    """The endpoints that change the rules (propose, canary, promote, rollback); each refreshes
    this process's policy at once."""

    @router.post("/rules")
    def propose(text: str = Body(..., media_type="text/plain"), note: str = Query(""), author: str = Query("admin")) -> dict[str, Any]:
        return store.propose(text, author=author, note=note).to_json()

    @router.post("/rules/{version_id}/canary")
    def canary(version_id: str, fraction: float = Query(...)) -> dict[str, Any]:
        # The range is the rule store's to check, so the API and the CLI refuse alike
        # (400 invalid_canary_fraction).
        pointer = actions.start_canary(store, version_id, fraction, db_path=db_path, actor="admin-api")
        holder.refresh()
        return pointer.to_json()

    @router.post("/promote")
    def promote() -> dict[str, Any]:
        pointer = actions.manual_promote(store, db_path=db_path, actor="admin-api")
        holder.refresh()
        return pointer.to_json()

    @router.post("/rollback")
    def rollback(to: str | None = Query(None)) -> dict[str, Any]:
        pointer = actions.manual_rollback(store, to, db_path=db_path, actor="admin-api")
        holder.refresh()
        return pointer.to_json()


def admin_authorized(authorization: str | None, key: str | None) -> bool:
    """Only ``Authorization: Bearer <key>`` (the scheme in any case, one space) with the exact
    key, compared in constant time; a raw key, another scheme, or no key configured is refused."""
    if not key or authorization is None:
        return False
    scheme, space, token = authorization.partition(" ")
    if not space or scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.encode("utf-8"), key.encode("utf-8"))


__all__ = ["open_rule_store", "policy_source", "ruleset_validator"]
