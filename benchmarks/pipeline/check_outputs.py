"""`medflow.io.outputs.check_outputs` on a UK Biobank-sized plan (see README.md).

Per subject: 2 existing inputs (sa, seg_sa) and 11 planned outputs (preprocess 4 files,
segment 3, a task record and a log for each of the 2 stages), as on a first run.

Usage: python check_outputs.py SUBJECTS FOLDER   (creates 2 x SUBJECTS empty files)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from medflow.io.outputs import check_outputs


def plan(n: int, root: Path) -> tuple[list[Path], list[Path]]:
    data, out = root / "data", root / "results"
    inputs, outputs = [], []
    for i in range(n):
        s = f"sub-{i:06d}"
        (data / s).mkdir(parents=True, exist_ok=True)
        for name in ("sa.nii.gz", "seg_sa.nii.gz"):
            (data / s / name).touch()
            inputs.append(data / s / name)
        for role in ("sa", "seg_sa"):
            outputs += [out / "preprocess" / s / f"{s}_{role}_preproc.{ext}"
                        for ext in ("nii.gz", "json")]
        outputs += [out / "segment" / s / f"{s}_sa_{w}"
                    for w in ("seg.nii.gz", "unc.nii.gz", "seg.json")]
        for stage in ("preprocess", "segment"):
            outputs += [out / "pipeline_info" / "tasks" / stage / f"{s}.json",
                        out / "pipeline_info" / "logs" / stage / f"{s}.log"]
    return inputs, outputs


def main() -> None:
    n, root = int(sys.argv[1]), Path(sys.argv[2])
    inputs, outputs = plan(n, root)
    t0, c0 = time.perf_counter(), time.process_time()
    check_outputs(outputs, inputs)
    print(f"{n} subjects: {len(outputs)} outputs vs {len(inputs)} inputs: "
          f"{time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU")


if __name__ == "__main__":
    main()
