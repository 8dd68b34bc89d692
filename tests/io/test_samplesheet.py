"""Samplesheet validation: every problem reported at once, before any work."""

from __future__ import annotations

import pytest

from medflow.errors import InvalidDataError, MissingInputError
from medflow.io.samplesheet import detect_kind, load_samplesheet


def _sheet(tmp_path, text):
    p = tmp_path / "samplesheet.csv"
    p.write_text(text)
    return p


def test_good_sheet_resolves_relative_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "sa.nii.gz").write_bytes(b"x")
    df = load_samplesheet(_sheet(tmp_path, "subject,sa,seg_sa\nA_1,a/sa.nii.gz,\n"))
    assert df.attrs["kind"] == "cardiac"
    assert df.loc[0, "sa"] == str(tmp_path / "a" / "sa.nii.gz")
    assert df.loc[0, "seg_sa"] is None


def test_all_problems_reported_together(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(b"x")
    text = ("subject,sa\n"
            "A,x.nii.gz\n"
            "A,x.nii.gz\n"          # duplicate
            "bad id!,x.nii.gz\n"    # bad ID
            "C,missing.nii.gz\n"    # missing file
            "D,\n")                 # empty required cell
    with pytest.raises(InvalidDataError) as err:
        load_samplesheet(_sheet(tmp_path, text))
    msg = err.value.format_message()
    assert "duplicate subject 'A'" in msg
    assert "row 4, column 'subject'" in msg
    assert "row 5, column 'sa': file not found" in msg
    assert "row 6, column 'sa': empty" in msg
    assert "\n" not in msg


def test_missing_required_column(tmp_path):
    with pytest.raises(InvalidDataError, match="missing column 'flair'"):
        load_samplesheet(_sheet(tmp_path, "subject,t1,t1ce,t2\nA,a,b,c\n"), check_files=False)


def test_only_missing_files_is_66(tmp_path):
    with pytest.raises(MissingInputError):
        load_samplesheet(_sheet(tmp_path, "subject,sa\nA,none.nii.gz\n"))


def test_missing_sheet_is_66(tmp_path):
    with pytest.raises(MissingInputError):
        load_samplesheet(tmp_path / "nope.csv")


def test_required_roles_from_the_command(tmp_path):
    (tmp_path / "x").write_bytes(b"x")
    with pytest.raises(InvalidDataError, match="missing column 'seg'"):
        load_samplesheet(_sheet(tmp_path, "subject,image\nA,x\n"), required_roles=("seg",))


def test_detect_kind():
    assert detect_kind(["subject", "sa"]) == "cardiac"
    assert detect_kind(["subject", "t1", "t1ce", "t2", "flair"]) == "brats"
    assert detect_kind(["subject", "image"]) == "generic"


def test_label_roles_and_the_image_they_annotate():
    from medflow.io.samplesheet import is_label_role, paired_image_role

    assert [r for r in ("sa", "seg_sa", "mask", "gt_ed", "t1") if is_label_role(r)] == [
        "seg_sa", "mask", "gt_ed"]
    assert paired_image_role("seg_sa", ["sa", "la_2ch"]) == "sa"
    assert paired_image_role("seg_la_2ch", ["sa", "la_2ch"]) == "la_2ch"
    assert paired_image_role("seg", ["t1", "t2"]) == "t1"
    assert paired_image_role("gt_ed", ["sa"]) is None
    assert paired_image_role("seg_xx", ["sa"]) is None
