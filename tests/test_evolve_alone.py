"""`evolve` is a library: every module imports with torch and the EPLB evaluator unavailable."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: a meta-path finder refuses torch and evaluator, then every evolve module
# is imported; it prints the modules it imported, and any that failed with the reason.
PROBE = r"""
import importlib, pkgutil, sys
BLOCKED = ("torch", "evaluator")

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked for this check")
        return None

sys.meta_path.insert(0, Refuse())
import evolve
names = ["evolve"] + [m.name for m in pkgutil.walk_packages(evolve.__path__, "evolve.")]
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("modules", len(names))
print("failed", failed)
print("loaded", loaded)
"""


def test_every_evolve_module_imports_without_torch_or_evaluator():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["failed"] == "[]", lines["failed"]
    assert lines["loaded"] == "[]"
    assert int(lines["modules"]) >= 20  # the walk really found the package's modules


def test_the_probe_would_notice_a_module_that_needs_torch(tmp_path):
    """The check can fail: a package importing torch is reported, not silently passed."""
    package = tmp_path / "evolve"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "uses_torch.py").write_text("import torch\n")
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert "evolve.uses_torch: ImportError: torch is blocked" in proc.stdout, proc.stdout + proc.stderr


def test_import_evolve_stays_light_and_the_api_loads_on_first_use():
    code = ("import sys, evolve; light = 'pandas' not in sys.modules and 'evolve.api' not in sys.modules; "
            "from evolve import open_archive, run_campaign, resume_campaign; print(light, callable(open_archive))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "True"], proc.stderr
