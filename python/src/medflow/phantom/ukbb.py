"""The synthetic cardiac cohort as UK Biobank delivers it: two zips per participant.

Field 20209 (short axis) holds one series per slice, ``CINE_segmented_SAX_b1`` ...
``_bN``; field 20208 (long axis) holds ``CINE_segmented_LAX_2Ch`` and ``_4Ch`` (the phantom
images no 3-chamber view, so there is no ``_3Ch``). Each zip has a ``manifest.csv``. The
voxels and geometry are those of the NIfTI cohort with the same seed (int16 written as
stored integers; positions to 10 significant digits), and the frame interval is the
TriggerTime step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medflow.io.atomic import OutputSet
from medflow.io.dicom_write import write_ukbb_zip
from medflow.io.ukbb import VIEWS, cell, zip_name
from medflow.io.volume import Volume
from medflow.phantom import cine_planes as cp

#: Resting heart rates drawn per subject (bpm), uniformly.
HEART_RATE_BPM = (55.0, 80.0)
#: Frame intervals are rounded to 10 microseconds (DICOM TriggerTime has ms decimals).
_INTERVAL_DECIMALS = 5
#: Which cines go into which field.
_FIELD_ROLES = {"20209": ("sa",), "20208": ("la_2ch", "la_4ch")}
_THICKNESS = {"sa": cp.SA_SLICE_THICKNESS_MM, "la_2ch": cp.LA_SLICE_THICKNESS_MM,
              "la_4ch": cp.LA_SLICE_THICKNESS_MM}


def draw_heart_rate(rng: np.random.Generator, frames: int) -> tuple[float, float]:
    """A heart rate (bpm) and the frame interval (s) of ``frames`` frames over one cycle.

    The interval is rounded to 10 us and the heart rate is the one it implies, so
    ``60 / (hr * frames) == interval`` holds for the numbers written.
    """
    hr = float(rng.uniform(*HEART_RATE_BPM))
    interval = round(60.0 / (hr * frames), _INTERVAL_DECIMALS)
    return 60.0 / (interval * frames), interval


def ukbb_roles(eid: int, instance: int = 2) -> dict[str, str]:
    """Samplesheet role -> ``<zip>#<series>`` for the cines this phantom writes."""
    return {role: cell(eid, role, instance) for roles in _FIELD_ROLES.values()
            for role in roles}


def write_ukbb_cines(out: OutputSet, folder: Path, eid: int, seed: int,
                     volumes: dict[str, Volume], instance: int = 2) -> list[Path]:
    """Write the 20209 and 20208 zips of one participant through ``out`` (atomic)."""
    written = []
    for field, roles in _FIELD_ROLES.items():
        series = {VIEWS[role][1]: volumes[role] for role in roles}
        thickness = {VIEWS[role][1]: _THICKNESS[role] for role in roles}
        final = Path(folder) / zip_name(eid, field, instance)
        write_ukbb_zip(out.path(final), series, per_slice_series=True, seed=seed,
                       patient_id=str(eid), slice_thickness_mm=thickness)
        written.append(final)
    return written
