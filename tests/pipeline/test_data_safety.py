"""`medflow pipeline` never loses or mixes a user's data (issue 11, docs/data-safety.md):
inputs where outputs would go, two runs on one folder, a runner killed or interrupted
while a task runs, outputs replaced behind its back, stale temporaries, unsafe subject
IDs, a results folder that cannot be written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from medflow.cli import cli
from medflow.io.sidecar import sha256
from medflow.pipeline import execute, plan
from medflow.pipeline.runner import RunResult

SUBJECTS = ["s0", "s1", "s2"]


def pipeline(runner, sheet, out, *args):
    return runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                               *args])


def trace(out) -> dict[str, str]:
    df = pd.read_parquet(out / "pipeline_info" / "trace.parquet")
    return dict(zip(df["task"], df["status"]))


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


def assert_unlocked(folder: Path) -> None:
    from medflow.io.lock import folder_lock

    with folder_lock(folder):
        pass


def test_inputs_where_outputs_go_are_refused_before_any_work(runner, cohort, tmp_path):
    # Re-running on earlier preprocessed images stored under this run's output names.
    out = tmp_path / "results"
    rows = []
    for s in SUBJECTS:
        dst = out / "preprocess" / s / f"{s}_sa_preproc.nii.gz"
        dst.parent.mkdir(parents=True)
        shutil.copy(cohort.parent / s / "sa.nii.gz", dst)
        rows.append({"subject": s, "sa": str(dst)})
    sheet = tmp_path / "again.csv"
    pd.DataFrame(rows).to_csv(sheet, index=False)
    before = {r["sa"]: Path(r["sa"]).read_bytes() for r in rows}
    res = pipeline(runner, sheet, out, "--stages", "preprocess")
    assert res.exit_code == 2, res.output
    line = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(line) == 1 and "would overwrite the input" in line[0]
    assert line[0].count(str(out / "preprocess" / "s0" / "s0_sa_preproc.nii.gz")) == 2
    assert {p: Path(p).read_bytes() for p in before} == before  # every input intact
    assert not (out / "pipeline_info").exists()  # nothing ran, nothing written


def test_clean_up_removes_only_what_the_task_wrote(tmp_path):
    """A failing task removes this attempt's outputs and those an earlier run recorded,
    never a file it did not create (an input stored under an output's name)."""
    info, folder = tmp_path / "info", tmp_path / "preprocess" / "s0"
    folder.mkdir(parents=True)
    image, sidecar = folder / "s0_sa_preproc.nii.gz", folder / "s0_sa_preproc.json"
    image.write_bytes(b"somebody else's file")
    sidecar.write_text("{}")
    missing = tmp_path / "missing.nii.gz"
    task = plan.Task("preprocess", "s0", [["preprocess", "--input", str(missing), "--output",
                                           str(image)]], [missing], [image, sidecar])
    record = execute.record_path(info, task)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"fingerprint": {}, "outputs": {str(sidecar): sha256(sidecar)}}))
    outcome = execute.run_task(info, task, 1, resume=False)
    assert outcome.status == "failed" and outcome.exit_code == 66, outcome
    assert image.read_bytes() == b"somebody else's file"
    assert not sidecar.exists() and not record.exists()


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                not in ("Z", "X"))
    except OSError:
        return False


def _start_segment_run(cohort, out, model) -> tuple[subprocess.Popen, int]:
    """A runner on the segment stage, one task at a time; returns it and its running
    task's process once that has run for a moment."""
    proc = subprocess.Popen([sys.executable, "-m", "medflow", "pipeline", "--input",
                             str(cohort), "--outdir", str(out), "--model", str(model),
                             "--stages", "segment", "--jobs", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        kids = _children(proc.pid)
        if kids:
            time.sleep(0.5)
            return proc, kids[0]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no task started")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_stage_and_a_second_run_is_refused(runner, cohort, tiny_model,
                                                                tmp_path, sig):
    out = tmp_path / "results"
    proc, child = _start_segment_run(cohort, out, tiny_model)
    try:
        # a second run on the same folder while the first holds it: refused at once
        second = pipeline(runner, cohort, out, "--model", str(tiny_model))
        assert second.exit_code == 75, second.output
        assert f"in use by pid {proc.pid} on " in second.output
        assert len([ln for ln in second.output.splitlines() if ln.strip()]) == 1
    finally:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    lines = [ln for ln in (stdout + stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and f"interrupted by {sig.name}" in lines[0], lines
    assert not _alive(child)
    status = trace(out)
    assert "cancelled" in status.values() and "done" not in status.values(), status
    assert not list((out / "segment").rglob("*.nii.gz"))  # no partial outputs ...
    assert not temporaries(out)                          # ... and no temporaries
    table = pd.read_parquet(out / "cohort.parquet")
    assert table["status"].str.contains(sig.name).all()
    assert_unlocked(out)


def test_killed_runner_takes_its_task_with_it(cohort, tiny_model, tmp_path):
    out = tmp_path / "results"
    proc, child = _start_segment_run(cohort, out, tiny_model)
    proc.kill()  # SIGKILL: the runner cannot clean up or signal anything
    proc.communicate()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the task outlived its runner"
    time.sleep(1)
    assert not list((out / "segment").rglob("*.nii.gz"))  # it committed nothing
    assert_unlocked(out)  # nothing holds the folder any more


def test_resume_verifies_outputs_and_removes_stale_temporaries(runner, cohort, tmp_path):
    # Output checksums are one mechanism for every stage; preprocess is the cheap one.
    out = tmp_path / "results"
    res = pipeline(runner, cohort, out, "--stages", "preprocess")
    assert res.exit_code == 0, res.output
    pre0 = out / "preprocess" / "s0" / "s0_sa_preproc.nii.gz"
    original, stamp = pre0.read_bytes(), pre0.stat()
    # a stray process of another run replaces an output, keeping its timestamps
    shutil.copy(out / "preprocess" / "s1" / "s1_sa_preproc.nii.gz", pre0)
    os.utime(pre0, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    # and killed writers left temporaries beside a cached task's and the runner's files
    s1 = out / "preprocess" / "s1"
    stale = [s1 / ".s1_sa_preproc.nii.gz.k2j_x9ab.tmp.nii.gz",
             s1 / ".s1_seg_sa_preproc.json.abcdefgh.tmp.json",
             out / ".cohort.parquet.q1w2e3r4.tmp.parquet",
             out / "pipeline_info" / ".trace.parquet.zz99yy88.tmp.parquet"]
    for path in stale:
        path.write_bytes(b"truncated")
    mine = s1 / ".notes.txt"
    mine.write_text("a user's own file")
    res = pipeline(runner, cohort, out, "--stages", "preprocess", "--resume")
    assert res.exit_code == 0, res.output
    assert trace(out) == {"preprocess:s0": "done", "preprocess:s1": "cached",
                          "preprocess:s2": "cached"}
    assert pre0.read_bytes() == original  # rerun: the same bytes as the first run
    assert not any(p.exists() for p in stale) and mine.exists()


@pytest.mark.parametrize("subject", ["..", "."])
def test_unsafe_subject_ids_stop_the_run(runner, cohort, tmp_path, subject):
    text = cohort.read_text().splitlines()
    text[2] = text[2].replace("s1,", f"{subject},", 1)
    cohort.write_text("\n".join(text) + "\n")
    out = tmp_path / "results"
    res = pipeline(runner, cohort, out, "--stages", "preprocess")
    assert res.exit_code == 65, res.output
    assert f"row 3, column 'subject': bad subject ID '{subject}'" in res.output
    assert not out.exists() and not (tmp_path / f"{subject}_sa_preproc.nii.gz").exists()


def test_paths_built_from_data_stay_in_their_folder(tmp_path):
    ctx = plan.Context(pd.DataFrame({"subject": [".."], "sa": [str(tmp_path / "a.nii.gz")]}),
                       tmp_path / "results", None, ("sa",), None)
    from medflow.pipeline.stages import get_stage

    with pytest.raises(ValueError, match="not a single file or folder name"):
        plan.subject_tasks(ctx, get_stage("preprocess"), [".."])


def test_results_folder_that_cannot_be_written_exits_73(runner, cohort, tmp_path,
                                                       monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = pipeline(runner, cohort, blocker / "results", "--stages", "preprocess")
    assert res.exit_code == 73 and "a file is in the way" in res.output, res.output
    assert str(blocker / "results") in res.output
    if os.geteuid() != 0:  # permissions do not stop root
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        res = pipeline(runner, cohort, ro / "results", "--stages", "preprocess")
        assert res.exit_code == 73 and "permission denied" in res.output, res.output

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("medflow.pipeline.runinfo.write_json", full)
    out = tmp_path / "results"
    res = pipeline(runner, cohort, out, "--stages", "preprocess")
    assert res.exit_code == 73, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no space left on device" in lines[0], lines
    assert str(out / "pipeline_info") in lines[0]
    assert not temporaries(out)


def test_exit_code_when_outputs_could_not_be_written():
    from medflow.errors import EXIT_CANT_WRITE, EXIT_DATA

    def result(*codes):
        return RunResult(outcomes=[execute.Outcome(f"t{i}", "segment", f"s{i}", "failed", c)
                                   for i, c in enumerate(codes)])

    assert result(65, 73).exit_code == EXIT_CANT_WRITE
    assert result(65, 66).exit_code == EXIT_DATA
    assert result(73, 1).exit_code == 1
    assert RunResult(stopped_by="SIGTERM").exit_code == 130


def test_a_task_that_cannot_write_stops_the_run_with_73(runner, cohort, tmp_path):
    out = tmp_path / "results"
    (out / "preprocess").mkdir(parents=True)
    (out / "preprocess" / "s0").write_text("a file where s0's folder goes")
    res = pipeline(runner, cohort, out, "--stages", "preprocess", "--jobs", "1")
    assert res.exit_code == 73, res.output
    assert "preprocess:s0: exit 73" in res.output and "a file is in the way" in res.output
    assert trace(out) == {"preprocess:s0": "failed", "preprocess:s1": "cancelled",
                          "preprocess:s2": "cancelled"}
    assert (out / "preprocess" / "s0").read_text() == "a file where s0's folder goes"
