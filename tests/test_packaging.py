"""Packaging: every package is listed in pyproject, and the shipped defaults and the serve entry point
reach a built wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_every_package_is_listed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = {name: REPO / folder for name, folder in config.get("package-dir", {}).items()}
    found = set()
    for top in ("gpu_matcher", "bokeh_app", "kernels"):
        for folder in [REPO / top, *(p for p in (REPO / top).rglob("*") if p.is_dir())]:
            if "__pycache__" in folder.parts or not any(f.is_file() for f in folder.iterdir()):
                continue
            found.add(".".join(folder.relative_to(REPO).parts))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert all(folder.is_dir() for folder in mapped.values())
    assert listed - found == set(mapped)


def test_wheel_carries_defaults_and_serve(tmp_path):
    src = tmp_path / "src"                        # a copy: the build writes build/ and *.egg-info
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "tests",
                                                             "__pycache__", ".hypothesis", ".pytest_cache"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             str(src), "-w", str(tmp_path / "wheel")], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"no wheel could be built here: {result.stderr.strip()[-200:]}")
    wheel = zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl")))
    names = wheel.namelist()
    assert "gpu_matcher/configs/defaults.yaml" in names
    assert wheel.read("gpu_matcher/configs/defaults.yaml") == (REPO / "configs" / "defaults.yaml").read_bytes()
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[lstmvis.commands]" in entry_points and "serve = " in entry_points

    # Installed from the wheel (into a bare target folder), the defaults come from the package data.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(next((tmp_path / "wheel").glob("*.whl")))], check=True, capture_output=True)
    code = ("import gpu_matcher, gpu_matcher.defaults as d; "
            "print(gpu_matcher.__file__); print(d.shipped_path()); print(d.section('match')['top'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(target)}, check=True).stdout.split("\n")
    assert out[0].startswith(str(target)) and out[1] == str(target / "gpu_matcher" / "configs" / "defaults.yaml")
    assert int(out[2]) > 0
