"""The install surface: a light base, extras for the heavy parts, every imported package declared."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("router", "collector", "evals", "optimizer", "emulator", "aperture")
HEAVY = {"onnxruntime", "rapidocr", "opencv-python", "opencv-python-headless", "matplotlib", "optuna", "scikit-learn"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return _normal(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip().lower())


def _declared(project: dict) -> set[str]:
    names = {_name(r) for r in project["dependencies"]}
    for reqs in project["optional-dependencies"].values():
        names |= {_name(r) for r in reqs}
    return names


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_base_install_leaves_out_the_heavy_packages() -> None:
    base = {_name(r) for r in _project()["dependencies"]}
    assert not base & HEAVY, base & HEAVY


def test_extras_exist_and_dev_pulls_in_all() -> None:
    extras = _project()["optional-dependencies"]
    assert {"emulator", "optimizer", "guardrails", "nsfw", "notebooks", "all", "dev"} <= set(extras)
    dev_spec = next(r for r in extras["dev"] if r.startswith("aperture-gateway["))
    assert {"all", "nsfw"} <= set(dev_spec.split("[", 1)[1].rstrip("]").split(","))
    all_spec = next(r for r in extras["all"] if "[" in r)
    for extra in ("emulator", "optimizer", "guardrails", "notebooks"):
        assert extra in all_spec
    assert "nsfw" not in all_spec  # AGPL-3.0 model: opt-in only
    assert "nudenet" in {_name(r) for r in extras["nsfw"]}
    assert {"nbclient", "ipykernel"} <= {_name(r) for r in extras["notebooks"]}
    assert {"onnxruntime", "rapidocr"} <= {_name(r) for r in extras["emulator"]}


def test_every_imported_third_party_package_is_declared() -> None:
    declared = _declared(_project()) | {"aperture-gateway"}
    dists = importlib.metadata.packages_distributions()
    local = set(PACKAGES) | {"benchmarks", "tests"}
    missing: dict[str, str] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for module in _imports(path):
                if module in local or module in sys.stdlib_module_names or module == "__future__":
                    continue
                owners = {_normal(d) for d in dists.get(module, [])}
                if not owners & declared:
                    missing[module] = str(path.relative_to(ROOT))
    assert not missing, f"imported but not declared in pyproject: {missing}"


def test_license_file_is_the_apache_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "Apache-2.0" in (ROOT / "pyproject.toml").read_text()


def test_makefile_installs_dev_extra() -> None:
    assert "'.[dev]'" in (ROOT / "Makefile").read_text()
