"""Without the extras (no OCR model, ONNX, OpenCV, matplotlib, Optuna, scikit-learn, SciPy) the
gateway, the collector and the CLI still import and serve; a command that needs an extra says so
in one line. The heavy packages are hidden from a subprocess, as if never installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = ("rapidocr", "onnxruntime", "cv2", "matplotlib", "optuna", "sklearn", "scipy", "threadpoolctl",
          "nbclient", "ipykernel")

BLOCKER = f"""
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HIDDEN!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Hide())
"""


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_gateway_serves_without_the_extras(tmp_path: Path) -> None:
    done = _run(f"""
        from fastapi.testclient import TestClient
        import aperture.cli, collector.receiver
        from aperture.wiring import build_gateway_app
        from router.config import load_config
        cfg = load_config({str(ROOT / 'examples' / 'emulated.yaml')!r})
        app = build_gateway_app(cfg, db_path=None)
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
            assert "aperture_requests" in client.get("/metrics").text
        print("served", sorted(m for m in sys.modules if m.split(".")[0] in {HIDDEN!r}))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "served []"


def test_a_command_that_needs_an_extra_names_it(tmp_path: Path) -> None:
    (tmp_path / "a.duckdb").touch()
    done = _run(f"""
        from aperture.cli import app
        app(["optimize", "--db", "a.duckdb", "--config", {str(ROOT / 'examples' / 'loop.yaml')!r},
             "--rules-store", "rules"], prog_name="aperture")
    """, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["error: this command needs 'optuna': pip install 'aperture-gateway[optimizer]'"]


def test_emulate_vision_without_the_ocr_extra_names_it(tmp_path: Path) -> None:
    done = _run("""
        from aperture.cli import app
        app(["emulate", "--port", "1"], prog_name="aperture")
    """, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["error: this command needs 'rapidocr': pip install 'aperture-gateway[emulator]'"]
