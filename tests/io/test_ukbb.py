"""UK Biobank downloads: ``<zip>#<series>`` cells, manifests, and `medflow samplesheet
--from-ukbb`."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from medflow.cli import cli
from medflow.errors import InvalidDataError, MissingInputError
from medflow.io import Volume, read_image
from medflow.io.dicom_write import write_ukbb_zip
from medflow.io.images import split_series
from medflow.io.samplesheet import load_samplesheet
from medflow.io.ukbb import find_zips, manifest_series

from .conftest import oblique


def _download(folder, eid=1000000, la=("2Ch", "4Ch"), instance=2, cine=None):
    """The two zips of one participant visit, as UK Biobank names them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(eid)
    sa = cine or Volume(rng.integers(0, 500, (8, 9, 4, 3)).astype(np.int16), oblique())
    write_ukbb_zip(folder / f"{eid}_20209_{instance}_0.zip", {"CINE_segmented_SAX": sa},
                   patient_id=str(eid))
    views = {f"CINE_segmented_LAX_{v}": Volume(sa.data[:, :, 1:2], oblique(angle=a))
             for v, a in zip(la, (1.1, -0.9, 0.3))}
    write_ukbb_zip(folder / f"{eid}_20208_{instance}_0.zip", views, patient_id=str(eid))
    return sa


def test_cell_syntax_splits_only_zips_and_folders(tmp_path):
    assert split_series("a/1_20208_2_0.zip#CINE_segmented_LAX_4Ch") == (
        tmp_path.__class__("a/1_20208_2_0.zip"), "CINE_segmented_LAX_4Ch")
    assert split_series("scan#1.nii.gz") == (tmp_path.__class__("scan#1.nii.gz"), None)
    (tmp_path / "dicom").mkdir()
    assert split_series("dicom#2", base=tmp_path)[1] == "2"
    odd = tmp_path / "odd.zip#x"  # a file really named like a cell is that file
    odd.write_bytes(b"")
    assert split_series(odd) == (odd, None)


def test_zip_cell_reads_the_series(tmp_path):
    sa = _download(tmp_path)
    vol = read_image(f"{tmp_path}/1000000_20209_2_0.zip#CINE_segmented_SAX")
    np.testing.assert_array_equal(vol.data, sa.data)
    la = read_image(tmp_path / "1000000_20208_2_0.zip#CINE_segmented_LAX_4Ch")
    assert la.data.shape == (8, 9, 1, 3)
    with pytest.raises(InvalidDataError, match="but --series"):
        read_image(tmp_path / "1000000_20208_2_0.zip#CINE_segmented_LAX_4Ch", series="0")


def test_manifest_lists_series_even_with_ukbb_dates(tmp_path):
    _download(tmp_path)
    assert manifest_series(tmp_path / "1000000_20208_2_0.zip") == {
        "CINE_segmented_LAX_2Ch", "CINE_segmented_LAX_4Ch"}
    text = ("filename,patientid,studyid,aet,date,seriesid,series discription\n"
            "a.dcm,1,2,X,\"Mar 12, 2015\",1.2,CINE_segmented_LAX_3Ch\n"
            "b.dcm,1,2,X,Mar 12, 2015,1.2,CINE_segmented_LAX_2Ch\n")
    with zipfile.ZipFile(tmp_path / "m.zip", "w") as zf:
        zf.writestr("manifest.cvs", text)
    assert manifest_series(tmp_path / "m.zip") == {"CINE_segmented_LAX_3Ch",
                                                   "CINE_segmented_LAX_2Ch"}


def test_samplesheet_checks_zip_cells(tmp_path):
    _download(tmp_path / "d")
    sheet = tmp_path / "s.csv"
    sheet.write_text("subject,sa,la_4ch\n"
                     "p1,d/1000000_20209_2_0.zip#CINE_segmented_SAX,"
                     "d/1000000_20208_2_0.zip#CINE_segmented_LAX_4Ch\n")
    df = load_samplesheet(sheet)
    assert df.loc[0, "la_4ch"] == f"{tmp_path}/d/1000000_20208_2_0.zip#CINE_segmented_LAX_4Ch"
    sheet.write_text("subject,sa,la_3ch\n"
                     "p1,d/1000000_20209_2_0.zip#CINE_segmented_SAX,"
                     "d/1000000_20208_2_0.zip#CINE_segmented_LAX_3Ch\n")
    with pytest.raises(InvalidDataError, match=r"row 2, column 'la_3ch': no series "
                                               r"'CINE_segmented_LAX_3Ch' in 1000000_20208_2_0"
                                               r".zip \(it holds: CINE_segmented_LAX_2Ch, "
                                               r"CINE_segmented_LAX_4Ch\)"):
        load_samplesheet(sheet)
    sheet.write_text("subject,sa\np1,d/1000001_20209_2_0.zip#CINE_segmented_SAX\n")
    with pytest.raises(MissingInputError, match="file not found: d/1000001_20209_2_0.zip"):
        load_samplesheet(sheet)


def test_series_checked_from_headers_when_there_is_no_manifest(tmp_path):
    _download(tmp_path / "d")
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(tmp_path / "d" / "1000000_20208_2_0.zip") as src, \
            zipfile.ZipFile(plain, "w") as dst:
        for name in src.namelist():
            if name != "manifest.csv":
                dst.writestr(name, src.read(name))
    sheet = tmp_path / "s.csv"
    sheet.write_text("subject,la_2ch\np1,plain.zip#CINE_segmented_LAX_2Ch\n")
    assert load_samplesheet(sheet, kind="generic").loc[0, "la_2ch"].endswith("#CINE_segmented_LAX_2Ch")
    sheet.write_text("subject,la_2ch\np1,plain.zip#1\n")  # an index works too
    load_samplesheet(sheet, kind="generic")


def test_samplesheet_from_ukbb_folder(tmp_path, runner):
    _download(tmp_path / "dl" / "20209_and_20208", 1000000)
    _download(tmp_path / "dl", 1000001, la=("2Ch", "3Ch", "4Ch"), instance=3)
    (tmp_path / "dl" / "1000002_20208_2_0.zip").write_bytes(
        (tmp_path / "dl" / "1000001_20208_3_0.zip").read_bytes())  # long axis only
    out = tmp_path / "samplesheet.csv"
    res = runner.invoke(cli, ["samplesheet", "--from-ukbb", str(tmp_path / "dl"),
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "skipped 1000002 visit 2: no CINE_segmented_SAX" in res.output
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["subject", "sa", "la_2ch", "la_3ch", "la_4ch"]
    assert table["subject"].tolist() == ["1000000_2", "1000001_3"]
    assert table.loc[0, "la_3ch"] == "" and table.loc[1, "la_3ch"] == \
        "dl/1000001_20208_3_0.zip#CINE_segmented_LAX_3Ch"
    sheet = load_samplesheet(out)
    assert read_image(sheet.loc[1, "la_3ch"]).data.shape == (8, 9, 1, 3)


def test_two_zips_for_one_field_and_visit_are_refused(tmp_path, runner):
    _download(tmp_path / "a")
    _download(tmp_path / "b")
    with pytest.raises(InvalidDataError, match="more than one zip"):
        find_zips(tmp_path)
    res = runner.invoke(cli, ["samplesheet", "--from-ukbb", str(tmp_path), "--out",
                              str(tmp_path / "s.csv")])
    assert res.exit_code == 65 and not (tmp_path / "s.csv").exists()
    res = runner.invoke(cli, ["samplesheet", "--from-ukbb", str(tmp_path / "none"), "--out",
                              str(tmp_path / "s.csv")])
    assert res.exit_code == 66


def test_samplesheet_never_overwrites_a_zip(tmp_path, runner):
    _download(tmp_path / "dl")
    zpath = tmp_path / "dl" / "1000000_20209_2_0.zip"
    before = zpath.read_bytes()
    res = runner.invoke(cli, ["samplesheet", "--from-ukbb", str(tmp_path / "dl"),
                              "--out", str(zpath)])
    assert res.exit_code == 2 and zpath.read_bytes() == before
    # beside the zips is where a samplesheet usually goes: that is fine
    res = runner.invoke(cli, ["samplesheet", "--from-ukbb", str(tmp_path / "dl"),
                              "--out", str(tmp_path / "dl" / "samplesheet.csv")])
    assert res.exit_code == 0, res.output


def test_a_series_cell_protects_its_zip_in_every_tool(tmp_path, runner):
    _download(tmp_path / "dl")
    zpath = tmp_path / "dl" / "1000000_20209_2_0.zip"
    before = zpath.read_bytes()
    res = runner.invoke(cli, ["preprocess", "--input", f"{zpath}#CINE_segmented_SAX",
                              "--output", str(tmp_path / "dl" / "sa.nii.gz"), "--role", "image"])
    assert res.exit_code == 0, res.output  # beside the zip: fine
    from medflow.io.outputs import check_outputs
    from medflow.errors import OverwriteError

    with pytest.raises(OverwriteError, match="would overwrite the input"):
        check_outputs([zpath], [f"{zpath}#CINE_segmented_SAX"])
    with pytest.raises(OverwriteError):
        check_outputs([tmp_path / "dl" / "x.nii.gz"], [f"{tmp_path / 'dl'}#T1"])
    assert zpath.read_bytes() == before
