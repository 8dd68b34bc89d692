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


def test_many_problems_stay_one_short_line_that_says_where_paths_were_read(tmp_path):
    """A samplesheet copied away from its files: 40 rows, 3 columns, 120 missing files."""
    (tmp_path / "elsewhere").mkdir()
    rows = "".join(f"S{i},S{i}/sa.nii.gz,S{i}/la_2ch.nii.gz,S{i}/seg_sa.nii.gz\n"
                   for i in range(40))
    with pytest.raises(MissingInputError) as err:
        load_samplesheet(_sheet(tmp_path / "elsewhere", "subject,sa,la_2ch,seg_sa\n" + rows))
    msg = err.value.format_message()
    assert msg.count("file not found") == 5 and "120 problems" in msg
    assert "and 115 more" in msg and str(tmp_path / "elsewhere") in msg
    assert len(msg) < 800 and "\n" not in msg


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


def test_a_long_list_of_empty_cells_is_counted_not_listed():
    import pandas as pd

    from medflow.uncertainty.inputs import cases_from_samplesheet
    from medflow.uncertainty.regions import CARDIAC

    sheet = pd.DataFrame({"subject": [f"S{i}" for i in range(30)], "seg": ["s"] * 30,
                          "t1": [None] * 30, "pred": ["p"] * 30, "unc": ["u"] * 30})
    sheet.attrs["path"] = "sheet.csv"
    with pytest.raises(InvalidDataError) as err:
        cases_from_samplesheet(sheet, CARDIAC)
    msg = err.value.format_message()
    assert "30 empty cell(s): S0: t1; S1: t1" in msg and "and 25 more" in msg
