"""Syntax pass: every .nf, .config and nf-test file parsed by Groovy 4 (parse phase only).

The Groovy jar comes from the npm package npm-groovy-lint and the launcher is compiled by
`make tools`; one JVM reads every file. A deliberately broken file is parsed in the same
run, so the check is seen to fail when it should.
"""

import shutil
import subprocess

import pytest

from nfsource import ROOT

JAR = ROOT / ".tools" / "groovy" / "groovy-4.0.26.jar"
CLASSES = ROOT / ".tools" / "classes"


def nextflow_sources():
    files = [ROOT / "main.nf", ROOT / "nextflow.config", *sorted((ROOT / "conf").glob("*.config"))]
    files += sorted((ROOT / "modules").rglob("*.nf"))
    files += sorted((ROOT / "tests" / "nextflow").rglob("*.nf.test"))
    files += sorted((ROOT / "tests" / "nextflow").rglob("*.config"))
    return files


def test_every_nextflow_file_parses_with_groovy4(tmp_path):
    if not (JAR.exists() and (CLASSES / "GroovyParse.class").exists()):
        pytest.fail("Groovy parse tools missing: run `make tools` (make test does)")
    if shutil.which("java") is None:
        pytest.fail("java (17) not found on PATH")
    broken = tmp_path / "broken.nf"
    broken.write_text("process BROKEN {\n    input:\n    tuple val(meta), path(x\n}\n")
    files = nextflow_sources()
    assert len(files) >= 10
    proc = subprocess.run(["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp",
                           f"{JAR}:{CLASSES}", "GroovyParse", *map(str, files), str(broken)],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout.splitlines()
    failures = [line for line in out if line.startswith("FAIL") and str(broken) not in line]
    assert not failures, "\n".join(failures)
    missing = [f for f in files if f"ok {f}" not in out]
    assert not missing, proc.stdout + proc.stderr
    # the broken file is reported with its position, and makes the run exit 1
    assert proc.returncode == 1
    bad = [line for line in out if line.startswith(f"FAIL {broken}")]
    assert bad and "@ line" in bad[0], proc.stdout
