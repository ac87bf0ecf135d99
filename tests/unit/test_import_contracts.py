"""The import directions of DESIGN.md, as import-linter contracts ([tool.importlinter] in
pyproject.toml), enforced under `make test` as well as `make lint`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    return list(config["tool"]["importlinter"]["contracts"])


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(_contracts())} kept, 0 broken" in done.stdout


def test_every_project_package_is_under_contract() -> None:
    """A new top-level package must be given its directions, not slip past the linter."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    roots = set(config["tool"]["importlinter"]["root_packages"])
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert found <= roots, found - roots
    sources = {m.split(".")[0] for c in _contracts() for m in c["source_modules"]}  # type: ignore[attr-defined]
    assert roots <= sources | {"aperture"}
