"""The shared data-safety rules in medflow.io (docs/data-safety.md): never write over an
input, outputs that cannot be written (disk full, read-only, a file in the way) exit 73,
stale temporaries, the results-folder lock, and subject IDs that are one folder name."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medflow.errors import BusyError, OutputError, OverwriteError
from medflow.io.atomic import (atomic_outputs, atomic_path, remove_stale_temporaries,
                               temporary_target)
from medflow.io.lock import LOCK_NAME, folder_lock
from medflow.io.outputs import check_outputs, output_folder
from medflow.io.samplesheet import load_samplesheet

ROOT = os.geteuid() == 0  # permissions do not stop root


def test_check_outputs_catches_every_name_of_an_input(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    image = data / "sa.nii.gz"
    image.write_bytes(b"image")
    (tmp_path / "link.nii.gz").symlink_to(image)
    os.link(image, tmp_path / "hard.nii.gz")
    dicom = tmp_path / "series"
    dicom.mkdir()
    for out in (image, tmp_path / "data" / ".." / "data" / "sa.nii.gz",
                tmp_path / "link.nii.gz", tmp_path / "hard.nii.gz", dicom / "new.json"):
        with pytest.raises(OverwriteError) as err:
            check_outputs([tmp_path / "fine.nii.gz", out], [None, image, dicom])
        assert err.value.exit_code == 2 and "would overwrite the input" in str(err.value)
        assert str(out) in str(err.value)
    check_outputs([tmp_path / "fine.nii.gz", None], [image, dicom])  # no clash: no error


def test_two_outputs_that_are_one_file_are_refused(tmp_path):
    """e.g. super-resolve's --output and --output-image naming one file: the second write
    would replace the first, and the sidecar would name it twice."""
    (tmp_path / "link.nii.gz").symlink_to(tmp_path / "out.nii.gz")
    for second in (tmp_path / "out.nii.gz", tmp_path / "link.nii.gz"):
        with pytest.raises(OverwriteError) as err:
            check_outputs([tmp_path / "out.nii.gz", None, second], [])
        assert err.value.exit_code == 2 and "two outputs would be one file" in str(err.value)


def test_disk_full_while_writing_exits_73_and_leaves_nothing(tmp_path):
    with pytest.raises(OutputError) as err:
        with atomic_outputs() as out:
            out.path(tmp_path / "a.nii.gz").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.exit_code == 73 and "no space left" in str(err.value)
    assert str(tmp_path) in str(err.value)
    assert list(tmp_path.iterdir()) == []
    # an error that says nothing about the place (a bad input read) stays what it was
    with pytest.raises(FileNotFoundError):
        with atomic_outputs() as out:
            out.path(tmp_path / "a.nii.gz")
            raise FileNotFoundError(errno.ENOENT, "gone", str(tmp_path / "input"))


def test_a_folder_that_cannot_be_made_exits_73(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for target in (blocker, blocker / "results"):
        with pytest.raises(OutputError) as err:
            output_folder(target)
        assert err.value.exit_code == 73 and "a file is in the way" in str(err.value)
    with pytest.raises(OutputError):
        with atomic_path(blocker / "x.json") as tmp:
            tmp.write_text("{}")

    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(OutputError) as err:
        output_folder(tmp_path / "new")
    assert "permission denied" in str(err.value) and str(tmp_path / "new") in str(err.value)


@pytest.mark.skipif(ROOT, reason="permissions do not stop root")
def test_read_only_folder_exits_73(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError):
            output_folder(ro / "results")
        with pytest.raises(OutputError):
            with atomic_path(ro / "x.json") as tmp:
                tmp.write_text("{}")
    finally:
        ro.chmod(0o755)


def test_stale_temporaries_only_of_the_atomic_writer(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_outputs() as out:
            left = out.path(tmp_path / "s0_sa_seg.nii.gz")
            other = out.path(tmp_path / "s0_sa_seg.json")
            raise RuntimeError
    # what a SIGKILL leaves: the same names, never renamed
    for path in (left, other):
        path.write_bytes(b"truncated")
    assert temporary_target(left) == "s0_sa_seg.nii.gz"
    keep = [tmp_path / ".hidden.nii.gz", tmp_path / ".x.nii.gz.abcdefgh.tmp.json",
            tmp_path / "s0_sa_seg.nii.gz", tmp_path / ".in.nii.gz.abcdefgh.tmp.nii.gz"]
    for path in keep:
        path.write_bytes(b"keep")
    assert remove_stale_temporaries(tmp_path, names=["s0_sa_seg.json"]) == [other]
    assert sorted(remove_stale_temporaries(tmp_path, keep=[keep[3]])) == [left]
    assert all(p.exists() for p in keep)


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(BusyError) as err:
            with folder_lock(tmp_path):
                pass
        text = str(err.value)
        assert err.value.exit_code == 75 and f"pid {os.getpid()}" in text
        assert socket.gethostname() in text and "started" in text
    with folder_lock(tmp_path):  # released at exit
        pass
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_lock_held_by_another_process_and_freed_when_it_dies(tmp_path):
    code = ("import sys, time; from medflow.io.lock import folder_lock\n"
            f"with folder_lock({str(tmp_path)!r}):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=f"pid {holder.pid} on "):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up ran, yet the kernel freed the lock
        holder.wait()
    with folder_lock(tmp_path):
        pass


@pytest.mark.parametrize("subject", ["..", "."])
def test_subject_ids_dot_and_dotdot_are_refused(tmp_path, subject):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    sheet = tmp_path / "s.csv"
    sheet.write_text(f"subject,t1\nok,a.nii.gz\n{subject},a.nii.gz\n")
    with pytest.raises(Exception) as err:
        load_samplesheet(sheet, kind="generic")
    assert err.value.exit_code == 65
    assert f"row 3, column 'subject': bad subject ID '{subject}'" in str(err.value)


def test_role_names_are_one_file_name_part(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    sheet = tmp_path / "s.csv"
    sheet.write_text("subject,../t1,.x\nok,a.nii.gz,a.nii.gz\n")
    with pytest.raises(Exception) as err:
        load_samplesheet(sheet, kind="generic")
    assert err.value.exit_code == 65
    assert "column '../t1': not a valid role name" in str(err.value)
    assert "column '.x': not a valid role name" in str(err.value)


def test_every_test_named_in_the_data_safety_page_exists():
    import re

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "data-safety.md").read_text()
    names = set(re.findall(r"\b(test_\w+)\b(?!\.py)", text))  # tests, not test files
    defined = {m for f in (root / "tests").rglob("test_*.py")
               for m in re.findall(r"^def (test_\w+)", f.read_text(), re.M)}
    assert len(names) > 20 and not names - defined, names - defined
