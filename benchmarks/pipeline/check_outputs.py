"""`medflow.io.outputs.check_outputs` over a UK Biobank-sized plan: 100,000 subjects, the pipeline's outputs per
subject (preprocess 4 files, segment 3, record+log x2) against 3 inputs per subject; the
input files exist (empty), the outputs do not (a first run)."""
import os, sys, time
from pathlib import Path
from medflow.io.outputs import check_outputs

n = int(sys.argv[1]); root = Path(sys.argv[2])
data, out = root / "data", root / "results"
inputs, outputs = [], []
for i in range(n):
    s = f"sub-{i:06d}"
    d = data / s
    d.mkdir(parents=True, exist_ok=True)
    for name in ("sa.nii.gz", "seg_sa.nii.gz"):
        (d / name).touch()
        inputs.append(d / name)
    for role in ("sa", "seg_sa"):
        outputs += [out / "preprocess" / s / f"{s}_{role}_preproc.nii.gz",
                    out / "preprocess" / s / f"{s}_{role}_preproc.json"]
    outputs += [out / "segment" / s / f"{s}_sa_{w}" for w in ("seg.nii.gz", "unc.nii.gz", "seg.json")]
    for st in ("preprocess", "segment"):
        outputs += [out / "pipeline_info" / "tasks" / st / f"{s}.json",
                    out / "pipeline_info" / "logs" / st / f"{s}.log"]
t0 = time.perf_counter(); c0 = time.process_time()
check_outputs(outputs, inputs)
print(f"{n} subjects: {len(outputs)} outputs vs {len(inputs)} inputs: "
      f"{time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU")
