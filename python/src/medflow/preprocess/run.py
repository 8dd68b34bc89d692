"""Files in, files out: read inputs, run :func:`preprocess`, write outputs atomically with
their sidecars. Used by the command for one image and, per subject, for a samplesheet."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.errors import InvalidDataError, MedflowError
from medflow.io.atomic import OutputSet, atomic_outputs
from medflow.io.images import image_format, read_image, write_nifti
from medflow.io.paths import inside
from medflow.io.samplesheet import is_label_role, paired_image_role
from medflow.io.sidecar import Timer, make_sidecar, sidecar_path, write_json
from medflow.io.tables import write_table
from medflow.io.volume import Volume, same_grid
from medflow.preprocess.pipeline import PreprocessConfig, PreprocessError, preprocess

log = logging.getLogger("medflow")
TOOL = "preprocess"


@dataclasses.dataclass(frozen=True)
class Reference:
    """The grid of a reference image (its voxels are not kept)."""

    path: Path
    shape3: tuple[int, int, int]
    affine: np.ndarray


def load_reference(path: str | os.PathLike, series: str | None = None) -> Reference:
    vol = read_image(path, series=series)
    return Reference(Path(path), vol.shape3, vol.affine)


def output_name(outdir: Path, subject: str, role: str) -> Path:
    """``outdir/<subject>/<subject>_<role>_preproc.nii.gz``; ValueError for a subject or
    role that would leave ``outdir`` (``..``, a separator)."""
    return inside(outdir, subject, f"{subject}_{role}_preproc.nii.gz")


def _native(vol: Volume) -> Volume:
    # Big-endian voxels (some old NIfTI files) are written in native order.
    if vol.data.dtype.isnative:
        return vol
    return vol.with_data(vol.data.astype(vol.data.dtype.newbyteorder("=")))


def process_into(out: OutputSet, src: Path, dst: Path, config: PreprocessConfig, kind: str,
                 parameters: dict, *, series: str | None = None,
                 reference: Reference | None = None, mask_path: Path | None = None,
                 grids: dict[Path, tuple] | None = None, annotates: Path | None = None) -> dict:
    """Read ``src``, preprocess, write ``dst`` and its sidecar through ``out``; one table row.

    ``grids`` collects each input read (its geometry), so that a label map that
    ``annotates`` an image read earlier can be checked to lie on that image's grid.
    Raises the contract errors (66 missing, 65 invalid) naming the file at fault.
    """
    t0, timer = time.perf_counter(), Timer()
    vol = read_image(src, kind, series=series)
    if grids is not None:
        grid = grids.get(annotates) if annotates is not None else None
        if grid is not None and not same_grid((vol.shape3, vol.affine), grid):
            raise InvalidDataError(f"label grid {vol.shape3} does not match its image "
                                   f"{annotates} {grid[0]} (shape or affine differ)", src)
        grids[src] = (vol.shape3, vol.affine)
    mask = read_image(mask_path) if mask_path is not None else None
    timer.mark("read_s")
    try:
        result, steps = preprocess(vol, config,
                                   None if reference is None else (reference.shape3,
                                                                   reference.affine), mask)
    except PreprocessError as exc:
        at_fault = {"input": src, "reference": reference and reference.path,
                    "crop_mask": mask_path}[exc.source]
        raise InvalidDataError(str(exc), at_fault) from None
    timer.mark("preprocess_s")
    result = _native(result)
    write_nifti(result, out.path(dst))
    timer.mark("write_s")
    inputs = {"input": src, "reference": reference and reference.path, "crop_mask": mask_path}
    sidecar = make_sidecar(TOOL, {**parameters, "role": kind}, inputs, timer, steps=steps,
                           input_geometry=vol.geometry(), output_geometry=result.geometry(),
                           meta={k: v for k, v in vol.meta.items() if isinstance(v, str)})
    write_json(sidecar, out.path(sidecar_path(dst)))
    return {"shape": [int(s) for s in result.data.shape],
            **{f"spacing_{a}_mm": float(s) for a, s in zip("xyz", result.spacing)},
            "seconds": round(time.perf_counter() - t0, 3)}


def process_file(src: Path, dst: Path, config: PreprocessConfig, kind: str, parameters: dict,
                 **options) -> dict:
    """One input, one output (plus sidecar), written atomically."""
    with atomic_outputs() as out:
        return process_into(out, Path(src), Path(dst), config, kind, parameters, **options)


def image_roles(row: dict) -> dict[str, Path]:
    """The roles of a samplesheet row that hold images (other files, e.g. .json, skipped)."""
    roles = {}
    for role, value in row.items():
        if role == "subject" or not value:
            continue
        try:
            image_format(value)
        except InvalidDataError:
            log.info("%s: column '%s' is not an image; skipped", row["subject"], role)
            continue
        roles[role] = Path(value)
    return roles


def process_subject(subject: str, roles: dict[str, Path], outdir: Path,
                    config: PreprocessConfig, parameters: dict,
                    reference: Reference | None = None) -> tuple[list[dict], str | None]:
    """All image roles of one subject, written together or not at all.

    Returns ``(rows, None)`` or ``([], one-line error)`` for a data error.
    """
    rows = []
    images = [r for r in roles if not is_label_role(r)]
    grids: dict[Path, tuple] = {}
    try:
        with atomic_outputs() as out:
            # Images first, so each label map can be checked against its image's grid.
            for role in images + [r for r in roles if is_label_role(r)]:
                src = roles[role]
                kind = "label" if is_label_role(role) else "image"
                pair = paired_image_role(role, images) if kind == "label" else None
                cfg = dataclasses.replace(config, normalise="none") if kind == "label" else config
                dst = output_name(outdir, subject, role)
                row = process_into(out, src, dst, cfg, kind,
                                   {**parameters, "normalise": cfg.normalise,
                                    "subject": subject, "samplesheet_column": role},
                                   reference=reference, grids=grids,
                                   annotates=roles[pair] if pair else None)
                rows.append({"subject": subject, "role": role, "kind": kind,
                             "output": dst.relative_to(outdir).as_posix(), **row})
    except MedflowError as exc:
        return [], f"subject {subject}: {exc.format_message()}"
    return rows, None


def _worker_init(threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def process_samplesheet(sheet: pd.DataFrame, outdir: Path, config: PreprocessConfig,
                        parameters: dict, reference: Reference | None = None, jobs: int = 1,
                        on_result=None) -> tuple[pd.DataFrame, list[str]]:
    """Every subject of a validated samplesheet; returns (table, error lines).

    ``on_result(subject, error)`` is called after each subject (progress, error lines).
    Subjects are independent and run in ``jobs`` processes; the output does not depend
    on ``jobs``.
    """
    tasks = [(r["subject"], image_roles(r)) for r in sheet.to_dict("records")]
    args = [(s, roles, outdir, config, parameters, reference) for s, roles in tasks]
    if jobs > 1 and len(args) > 1:
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            results = list(_report(zip(tasks, pool.map(process_subject, *zip(*args))),
                                   on_result))
    else:
        results = list(_report(zip(tasks, (process_subject(*a) for a in args)), on_result))
    rows = [row for _, (subject_rows, _) in results for row in subject_rows]
    errors = [error for _, (_, error) in results if error]
    table = pd.DataFrame(rows, columns=["subject", "role", "kind", "output", "shape",
                                        "spacing_x_mm", "spacing_y_mm", "spacing_z_mm",
                                        "seconds"])
    return table, errors


def _report(results, on_result):
    for (subject, _), result in results:
        if on_result:
            on_result(subject, result[1])
        yield (subject, result)


def write_batch_table(table: pd.DataFrame, path: Path) -> None:
    with atomic_outputs() as out:
        write_table(table, out.path(path))
