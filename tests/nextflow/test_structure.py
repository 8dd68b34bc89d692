"""Structural lint of the Nextflow side: processes, labels, includes, profiles, configs."""

import json
import os
import re
from pathlib import Path

import pytest

import medflow
from medflow.pipeline.stages import STAGES
from nfsource import (GPU_LABEL, RESOURCE_LABELS, ROOT, all_processes, block, includes,
                      module_files, processes, profiles)

PROCS = all_processes()
# DESIGN.md, "Nextflow conventions": the profiles. The design file lives beside the
# repository in the project's shared folder; when present, its list must equal this one.
DESIGN_PROFILES = ["test", "docker", "singularity", "apptainer", "gpu", "slurm", "awsbatch",
                   "google_batch", "k8s"]


def test_every_module_file_holds_one_process():
    for path in module_files():
        assert len(processes(path)) == 1, f"{path}: one process per module"


@pytest.mark.parametrize("name", sorted(PROCS))
def test_process_shape(name):
    proc = PROCS[name]
    where = proc.file.relative_to(ROOT)
    assert proc.tag and "meta.id" in proc.tag, f"{where}: tag with meta.id"
    resource = [label for label in proc.labels if label in RESOURCE_LABELS]
    assert len(resource) == 1, f"{where}: exactly one resource label, got {proc.labels}"
    assert set(proc.labels) <= {*RESOURCE_LABELS, GPU_LABEL}, f"{where}: unknown label"
    assert re.search(r"^\s*stub:\s*$", proc.body, re.M), f"{where}: stub block"
    assert "topic: versions" in proc.body and "medflow --version" in proc.body, \
        f"{where}: tool version emitted on the versions topic"
    assert "task.ext.when" in proc.body, f"{where}: when: task.ext.when"
    assert re.search(r"def args\s*=\s*task\.ext\.args \?: ''", proc.script_block()), \
        f"{where}: flags from task.ext.args"
    assert re.search(r"tuple val\(meta\), path\(", proc.body), f"{where}: tuple val(meta), path"


@pytest.mark.parametrize("name", sorted(PROCS))
def test_stub_creates_every_output(name):
    proc = PROCS[name]
    stub = proc.script("stub")
    for emit, pattern in proc.outputs.items():
        if "*" in pattern:
            continue  # optional globs (plots)
        made = pattern.replace("${prefix}", "").replace("${meta.role}", "")
        assert made in stub.replace("${prefix}", "").replace("${meta.role}", ""), \
            f"{proc.file.relative_to(ROOT)}: stub does not create {pattern} ({emit})"


def test_subject_outputs_named_from_prefix():
    for stage in STAGES:
        if stage.scope != "subject":
            continue
        proc = process_for(stage.process)
        assert "prefix = task.ext.prefix ?: \"${meta.id}\"" in proc.body.replace("    ", " ") \
            or re.search(r"prefix\s*=\s*task\.ext\.prefix \?: \"\$\{meta\.id\}\"", proc.body)
        for pattern in proc.outputs.values():
            assert pattern.startswith("${prefix}"), f"{proc.name}: {pattern} not from prefix"


def process_for(workflow_name: str):
    for module_proc, used_as, path in includes():
        if used_as == workflow_name:
            return processes(path)[module_proc]
    raise KeyError(f"main.nf includes no process used as {workflow_name}")


def test_model_stages_carry_process_gpu_and_use_the_gpu_only_when_allocated():
    for stage in STAGES:
        proc = process_for(stage.process)
        assert (GPU_LABEL in proc.labels) == (stage.device == "gpu"), proc.name
        if stage.device == "gpu":
            script = proc.script_block()
            assert "task.accelerator ? 'cuda' : 'cpu'" in script, proc.name
            assert "--device ${device}" in proc.script(), proc.name


def test_every_include_resolves_to_a_file_and_a_process():
    found = includes()
    assert found
    for module_proc, _, path in found:
        assert path.exists(), f"main.nf includes missing {path}"
        assert module_proc in processes(path), f"{path} defines no process {module_proc}"
    # every process called in main.nf was included
    text = (ROOT / "main.nf").read_text()
    called = set(re.findall(r"^\s*([A-Z][A-Z0-9_]+)\(", text, re.M))
    assert called <= {used for _, used, _ in found} | {"SEGMENT_AND_SCORE"}


def test_profiles_named_in_design_exist():
    design = ROOT.parent / "shared" / "DESIGN.md"
    if design.exists():
        text = design.read_text()
        start = text.index("- Profiles:")
        item = text[start:text.index("\n- ", start)]
        assert re.findall(r"`(\w+)`", item) == DESIGN_PROFILES
    assert set(DESIGN_PROFILES) <= set(profiles())
    # site profiles include their config file, which exists
    text = (ROOT / "nextflow.config").read_text()
    for name in re.findall(r"includeConfig '([^']+)'", text):
        assert (ROOT / name).exists(), name


def test_labels_defined_and_grow_with_attempt():
    base = (ROOT / "conf" / "base.config").read_text()
    for label in RESOURCE_LABELS:
        m = re.search(rf"withLabel:\s*'{label}'\s*\{{", base)
        assert m, f"base.config: no {label}"
        body = block(base, m.start())
        for key in ("memory", "time"):
            assert re.search(rf"{key}\s*=\s*\{{[^}}]*task\.attempt", body), f"{label}.{key}"


def retried_codes(config: str) -> set[int]:
    """The exit codes of ``task.exitStatus in ([a, b] + (x..y))``."""
    m = re.search(r"task\.exitStatus in \((.+?)\) \?", config)
    codes = {int(v) for v in re.findall(r"(?<![.\d])(\d+)(?![.\d])", re.sub(
        r"\d+\.\.\d+", "", m.group(1)))}
    for lo, hi in re.findall(r"(\d+)\.\.(\d+)", m.group(1)):
        codes |= set(range(int(lo), int(hi) + 1))
    return codes


def test_retry_policy_follows_exit_code_contract():
    codes = retried_codes((ROOT / "conf" / "base.config").read_text())
    assert 75 in codes and {130, 137, 143, 104} <= codes
    assert not codes & {0, 1, 2, 65, 66}


def test_container_follows_label_and_package_version():
    text = (ROOT / "nextflow.config").read_text()
    version = re.search(r"^\s*version\s*=\s*'([^']+)'", text, re.M).group(1)
    assert version == medflow.__version__
    assert 'container = "${params.container_registry}medflow:${manifest.version}"' in text
    gpu = block(text, re.search(r"withLabel:\s*'process_gpu'", text).start())
    assert "medflow-gpu:${manifest.version}" in gpu
    assert not any("container " in p.body for p in PROCS.values()), \
        "containers are chosen by label in nextflow.config, not per module"


def test_gpu_only_where_asked():
    base = (ROOT / "conf" / "base.config").read_text()
    assert "accelerator" not in re.sub(r"//.*", "", base), "no GPU without the gpu/site profile"
    for name in ("slurm", "awsbatch", "google_batch", "k8s"):
        assert "accelerator" in (ROOT / "conf" / f"{name}.config").read_text(), name
    text = (ROOT / "nextflow.config").read_text()
    gpu = block(text, re.search(r"^\s*gpu\s*\{", text, re.M).start())
    assert "accelerator" in gpu and "--gpus all" in gpu and "--nv" in gpu


def test_container_environment_safe_for_non_root():
    text = (ROOT / "nextflow.config").read_text()
    env = block(text, re.search(r"^env\s*\{", text, re.M).start())
    for var in ("MPLCONFIGDIR", "NUMBA_CACHE_DIR"):
        assert re.search(rf"{var}\s*=\s*'/tmp/", env), var
    assert "--shm-size" in text and "HOME=" in text
    assert "/dev/shm" in (ROOT / "conf" / "k8s.config").read_text()


def test_params_match_schema():
    text = (ROOT / "nextflow.config").read_text()
    body = block(text, re.search(r"^params\s*\{", text, re.M).start())
    names = set(re.findall(r"^\s*(\w+)\s*=", body, re.M))
    schema = json.loads((ROOT / "nextflow_schema.json").read_text())
    props = {k for group in schema["$defs"].values() for k in group["properties"]}
    assert names == props


def test_bin_holds_thin_executables():
    files = [p for p in (ROOT / "bin").iterdir() if not p.name.startswith(".")]
    assert files
    for path in files:
        assert os.access(path, os.X_OK), f"{path} not executable"
        assert path.read_text().startswith("#!/usr/bin/env "), f"{path}: shebang"
        assert len(path.read_text().splitlines()) < 100, f"{path}: keep logic in the package"


def test_nf_test_files_for_every_module_and_the_pipeline():
    tests = ROOT / "tests" / "nextflow"
    for path in module_files():
        rel = path.parent.relative_to(ROOT / "modules")
        test = tests / "modules" / rel / "main.nf.test"
        assert test.exists(), f"no nf-test file {test.relative_to(ROOT)}"
        text = test.read_text()
        name = next(iter(processes(path)))
        assert f'process "{name}"' in text
        assert 'options "-stub"' in text, f"{test}: a -stub test"
        assert len(re.findall(r"^\s*test\(", text, re.M)) >= 2, f"{test}: normal and stub"
    pipeline = (tests / "main.nf.test").read_text()
    assert 'profile "test"' in pipeline and 'options "-stub"' in pipeline
