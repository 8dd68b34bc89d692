"""The Nextflow side starts from UK Biobank zips: the samplesheet check splits a
``<zip>#<series>`` cell into the file to stage and the series, main.nf carries the series
in meta, and the preprocess module hands medflow ``'<zip>#<series>'``."""

import subprocess
import sys

import numpy as np

from medflow.io import Volume, make_affine
from medflow.io.dicom_write import write_ukbb_zip
from nfsource import ROOT, processes


def test_samplesheet_check_splits_zip_cells(tmp_path):
    sa = Volume(np.zeros((4, 5, 3, 2), np.int16), make_affine((1.8, 1.8, 10.0)))
    write_ukbb_zip(tmp_path / "d" / "1000000_20209_2_0.zip", {"CINE_segmented_SAX": sa})
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("subject,sa\n1000000_2,d/1000000_20209_2_0.zip#CINE_segmented_SAX\n")
    out = tmp_path / "valid.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "bin" / "medflow-samplesheet"),
                           "--samplesheet", str(sheet), "--source", str(sheet), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().splitlines()[1] == (
        f"1000000_2,sa,image,,{tmp_path}/d/1000000_20209_2_0.zip,CINE_segmented_SAX")
    sheet.write_text("subject,sa\n1000000_2,d/1000000_20209_2_0.zip#CINE_segmented_LAX_2Ch\n")
    proc = subprocess.run([sys.executable, str(ROOT / "bin" / "medflow-samplesheet"),
                           "--samplesheet", str(sheet), "--source", str(sheet), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 65 and "no series 'CINE_segmented_LAX_2Ch'" in proc.stderr


def test_workflow_stages_the_zip_and_module_names_the_series():
    main = (ROOT / "main.nf").read_text()
    assert "series: row.series" in main and "file(row.path, checkIfExists: true)" in main
    proc = processes(ROOT / "modules" / "local" / "preprocess" / "main.nf")["PREPROCESS"]
    script = proc.script_block()
    assert "meta.series ? \"'${image}#${meta.series}'\"" in script
    assert "--input ${source}" in script


def test_remote_samplesheet_keeps_uris_whole(tmp_path):
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("subject,sa\n1000000_2,d/1000000_20209_2_0.zip#CINE_segmented_SAX\n")
    out = tmp_path / "valid.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "bin" / "medflow-samplesheet"),
                           "--samplesheet", str(sheet), "--source", "s3://bucket/run/sheet.csv",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().splitlines()[1] == (
        "1000000_2,sa,image,,s3://bucket/run/d/1000000_20209_2_0.zip,CINE_segmented_SAX")
