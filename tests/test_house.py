"""The house rules, checked on the source: imports run downward only (schemas at the bottom, the
CLI on top), only ``flows/`` imports Prefect, only ``engine/`` imports Ray, and importing any
module changes nothing in the environment."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["schemas", "filters", "specialists", "engine", "flows", "cli"]
"""Bottom to top: a module may import its own floor and the floors below it."""


def modules() -> list[tuple[str, Path]]:
    out = []
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out.append((name.removesuffix(".__init__"), path))
    return out


def imported(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_imports_run_downward_only():
    upward = []
    for name, path in modules():
        floor = FLOORS.index(name.split(".")[0])
        for target in imported(path):
            top = target.split(".")[0]
            if top in FLOORS and FLOORS.index(top) > floor:
                upward.append(f"{name} imports {target}")
    assert upward == []


@pytest.mark.parametrize("library, allowed", [("prefect", "flows"), ("ray", "engine")])
def test_only_one_floor_knows_each_orchestrator(library, allowed):
    found = [name for name, path in modules() if any(t.split(".")[0] == library for t in imported(path))]
    assert found and all(n.startswith(allowed + ".") for n in found), found


def test_importing_any_module_changes_no_environment_variable(tmp_path):
    """In a fresh interpreter: every module of the project imported, the environment compared.
    The libraries they import are imported first (OpenCV, for one, sets variables of its own)."""
    names = [n for n, _ in modules()]
    libraries = sorted({t for _, path in modules() for t in imported(path)} - set(names) - set(FLOORS))
    script = (f"import json, os, importlib\nfor lib in {libraries!r}:\n"
              "    try:\n        importlib.import_module(lib)\n    except ImportError:\n        pass\n"
              "before = dict(os.environ)\n"
              f"for name in {names!r}:\n    importlib.import_module(name)\n"
              "after = dict(os.environ)\n"
              "print(json.dumps(sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))))\n")
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # not what the tests set
    env = {k: os.environ[k] for k in keep if k in os.environ} | {"HOME": str(tmp_path)}  # a home no run has touched
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    changed = json.loads(out.stdout.strip().splitlines()[-1])
    assert changed == []
    assert not (tmp_path / "ray_bootstrap_config.yaml").exists() and not (tmp_path / ".fld").exists()
