"""From a folder of UK Biobank zips to pipeline results: `medflow samplesheet --from-ukbb`,
then `medflow pipeline` on its `<zip>#<series>` cells, the same results as from NIfTI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medflow.cli import cli
from medflow.io import read_image
from medflow.io.dicom_write import write_ukbb_zip


def test_ukbb_download_to_pipeline_results(runner, cohort, tiny_model, tmp_path):
    download = tmp_path / "download"
    for i, s in enumerate(("s0", "s1")):
        sa = read_image(cohort.parent / s / "sa.nii.gz")
        write_ukbb_zip(download / f"{2000000 + i}_20209_2_0.zip", {"CINE_segmented_SAX": sa},
                       patient_id=str(2000000 + i))
    sheet = tmp_path / "samplesheet.csv"
    res = runner.invoke(cli, ["samplesheet", "--from-ukbb", str(download), "--out", str(sheet)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "results"
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir", str(out),
                              "--model", str(tiny_model)])
    assert res.exit_code == 0, res.output
    assert "2 of 2 subjects done, 0 failed" in res.output
    for i, s in enumerate(("s0", "s1")):
        subject = f"{2000000 + i}_2"
        seg = read_image(out / "segment" / subject / f"{subject}_sa_seg.nii.gz", kind="label")
        cell = pd.read_csv(sheet).set_index("subject").loc[subject, "sa"]
        image = read_image(sheet.parent / cell)
        # the zip holds the NIfTI's voxels in the same world (this affine is left-handed
        # in LPS, so DICOM's slice order runs the other way)
        nifti = read_image(cohort.parent / s / "sa.nii.gz")
        np.testing.assert_array_equal(image.data, nifti.data[:, :, ::-1])
        np.testing.assert_allclose(image.affine @ [0, 0, 5, 1], nifti.affine @ [0, 0, 0, 1],
                                   atol=1e-4)
        assert seg.data.shape == image.data.shape and np.allclose(seg.affine, image.affine)
        if i:
            continue
        # what the pipeline ran is the tool on the zip cell, by hand
        res = runner.invoke(cli, ["segment-cascaded", "predict", "--model", str(tiny_model),
                                  "--input", str(sheet.parent / cell), "--output",
                                  str(tmp_path / f"{s}.nii.gz"), "--tta", "2"])
        assert res.exit_code == 0, res.output
        np.testing.assert_array_equal(seg.data, read_image(tmp_path / f"{s}.nii.gz").data)
        side = json.loads((out / "preprocess" / subject / f"{subject}_sa_preproc.json")
                          .read_text())
        assert side["inputs"]["input"]["path"].endswith("_20209_2_0.zip#CINE_segmented_SAX")
        assert side["meta"]["source_series"][0][0] == "CINE_segmented_SAX_b1"
    trace = pd.read_parquet(out / "pipeline_info" / "trace.parquet")
    assert set(trace["status"]) <= {"done", "skipped", "cached"}


def test_results_inside_a_dicom_series_cell_are_refused(runner, cohort, tmp_path):
    # a `folder#series` cell reads the folder: outputs inside it would be written into
    # the user's export (issue 11's rule, applied to the file a cell names)
    from medflow.io.dicom_write import write_dicom_series

    export = tmp_path / "export"
    write_dicom_series(read_image(cohort.parent / "s0" / "sa.nii.gz"), export / "sa",
                       "CINE_segmented_SAX")
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text(f"subject,sa\ns0,{export}#CINE_segmented_SAX\n")
    before = sorted(p.name for p in export.rglob("*"))
    res = runner.invoke(cli, ["pipeline", "--input", str(sheet), "--outdir",
                              str(export / "results"), "--stages", "preprocess"])
    assert res.exit_code == 2, res.output
    assert "would overwrite the input" in res.output or str(export) in res.output
    assert sorted(p.name for p in export.rglob("*")) == before
