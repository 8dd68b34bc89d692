"""Benchmark: UK Biobank zips to NIfTI, medflow against SimpleITK's ImageSeriesReader.

Per subject, one UK Biobank-sized pair of zips (written here, deterministic): field 20209
with one series per short-axis slice (10 slices, 208 x 192, 50 frames each, int16) and
field 20208 with the 2- and 4-chamber series (one slice, 50 frames each). Both sides
start from the zips and end with NIfTI files on disk:

  ours: medflow.io.read_image on ``<zip>#CINE_segmented_SAX`` (and the two long-axis
        cells): safe extraction, one header parse per file, pixels read straight into a
        (X, Y, Z, T) array, time axis kept; write_nifti (.nii.gz).
  peer: safe extraction (the same medflow.io.safezip), then for every series
        ImageSeriesReader (GetGDCMSeriesIDs / GetGDCMSeriesFileNames / Execute) and
        sitk.WriteImage (.nii.gz). SimpleITK has no cine: each per-slice series becomes
        a 3D image of its 50 frames; it reads the same files and pixels.

Both write gzip at level 1 (nibabel's default; ITK is told the same). Reading and writing
are timed apart, so the reader's ratio is not hidden by gzip. Times are CPU seconds of
this process (single-threaded on both sides; ITK is set to 1 thread) and wall seconds;
ratios are ours / peer over all subjects (target <= 1).

Run:  python benchmarks/preprocess/bench_ingest.py [--subjects 3] [--frames 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medflow.io import Volume, make_affine, read_image, write_nifti
from medflow.io import safezip
from medflow.io.dicom_write import write_ukbb_zip

SA_SHAPE, LA_SHAPE = (208, 192, 10), (208, 192, 1)


def smooth_cine(shape, frames: int, seed: int) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(size=(*shape, 2)).astype(np.float32),
                                   (4, 4, 0, 0))
    t = np.linspace(0, 2 * np.pi, frames, endpoint=False)
    data = base[..., :1] + base[..., 1:] * np.sin(t)
    return np.clip(600 + 3000 * data, 0, 4000).astype(np.int16)


def write_subject(folder: Path, eid: int, frames: int) -> list[str]:
    """The subject's two zips; returns its three ``zip#series`` cells."""
    sa = Volume(smooth_cine(SA_SHAPE, frames, eid), make_affine((1.8, 1.8, 10.0),
                origin=(80.0, -120.0, 40.0)), frame_interval_s=0.0286)
    la = {f"CINE_segmented_LAX_{v}": Volume(smooth_cine(LA_SHAPE, frames, eid + k),
                                             make_affine((1.8, 1.8, 6.0), origin=(0, k, 0)),
                                             frame_interval_s=0.0286)
          for k, v in enumerate(("2Ch", "4Ch"))}
    write_ukbb_zip(folder / f"{eid}_20209_2_0.zip", {"CINE_segmented_SAX": sa},
                   patient_id=str(eid))
    write_ukbb_zip(folder / f"{eid}_20208_2_0.zip", la, patient_id=str(eid))
    return [f"{folder}/{eid}_20209_2_0.zip#CINE_segmented_SAX",
            f"{folder}/{eid}_20208_2_0.zip#CINE_segmented_LAX_2Ch",
            f"{folder}/{eid}_20208_2_0.zip#CINE_segmented_LAX_4Ch"]


class Clock:
    """CPU and wall seconds spent inside ``with clock:`` blocks."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0

    def __enter__(self):
        self._c, self._w = time.process_time(), time.perf_counter()

    def __exit__(self, *exc):
        self.cpu += time.process_time() - self._c
        self.wall += time.perf_counter() - self._w


def ours(cells: list[str], out: Path) -> tuple[Clock, Clock, int]:
    read, write, n = Clock(), Clock(), 0
    for i, cell in enumerate(cells):
        with read:
            vol = read_image(cell)
        with write:
            write_nifti(vol, out / f"ours_{i}.nii.gz")
        n += vol.data.size
    return read, write, n


def peer(zips: list[Path], out: Path) -> tuple[Clock, Clock, int]:
    read, write, n = Clock(), Clock(), 0
    for z in zips:
        with read:
            folder_cm = safezip.extracted(z)
            folder = folder_cm.__enter__()
        try:
            reader = sitk.ImageSeriesReader()
            with read:
                ids = reader.GetGDCMSeriesIDs(str(folder))
            for i, sid in enumerate(ids):
                with read:
                    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), sid))
                    img = reader.Execute()
                with write:
                    sitk.WriteImage(img, str(out / f"peer_{z.stem}_{i}.nii.gz"), True, 1)
                n += img.GetNumberOfPixels()
        finally:
            folder_cm.__exit__(None, None, None)
    return read, write, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=3)
    ap.add_argument("--frames", type=int, default=50)
    args = ap.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for s in range(args.subjects):
            eid = 1000000 + s
            cells = write_subject(tmp, eid, args.frames)
            zips = sorted({Path(c.split("#")[0]) for c in cells})
            (tmp / "o").mkdir(exist_ok=True)
            a, b = ours(cells, tmp / "o"), peer(zips, tmp / "o")
            assert a[2] == b[2], f"different voxel counts: {a[2]} vs {b[2]}"
            rows.append((a, b))
            print(f"subject {eid} ({a[2] / 1e6:.1f} M voxels): read ours {a[0].cpu:.2f} s "
                  f"CPU, SimpleITK {b[0].cpu:.2f} s; read + write ours "
                  f"{a[0].cpu + a[1].cpu:.2f} s, SimpleITK {b[0].cpu + b[1].cpu:.2f} s")
    n = len(rows)
    read = [sum(r[k][0].cpu for r in rows) / n for k in (0, 1)]
    both = [sum(r[k][0].cpu + r[k][1].cpu for r in rows) / n for k in (0, 1)]
    wall = [sum(r[k][0].wall + r[k][1].wall for r in rows) / n for k in (0, 1)]
    print(f"per subject, CPU s: read ours {read[0]:.2f} / SimpleITK {read[1]:.2f} "
          f"(ratio {read[0] / read[1]:.2f}); zip to NIfTI ours {both[0]:.2f} / SimpleITK "
          f"{both[1]:.2f} (ratio {both[0] / both[1]:.2f}, target <= 1); wall s zip to NIfTI "
          f"ours {wall[0]:.2f} / SimpleITK {wall[1]:.2f}")


if __name__ == "__main__":
    main()
