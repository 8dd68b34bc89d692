"""File-level steps of ``medflow suggest-annotation``: budgets, the checks on the cohort
and the model, and the ranked list written atomically with its sidecar."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.errors import InvalidDataError

log = logging.getLogger("medflow")
COLUMNS = ["rank", "subject", "slice", "strategy", "score", "reason"]
EMBEDDING_STRATEGIES = ("gradient", "coreset", "typical")


def parse_budget(text: str) -> tuple[int | None, float | None]:
    """``"10"`` -> (10, None); ``"5%"`` -> (None, 5.0). ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", str(text))
    if not m or (not m.group(2) and "." in m.group(1)):
        raise ValueError(f"budget {text!r}: a whole number of units (10) or a percentage (5%)")
    value = float(m.group(1))
    if m.group(2):
        if not 0 < value <= 100:
            raise ValueError(f"budget {text!r}: a percentage in (0, 100]")
        return None, value
    if value < 1:
        raise ValueError(f"budget {text!r}: at least 1 unit")
    return int(value), None


def resolve_budget(text: str, n_units: int, n_pool: int, unit: str, path=None) -> int:
    """The number of units to suggest.

    Args:
        text: ``"10"`` units, or ``"5%"`` of all the cohort's units (rounded up, at least 1).
        n_units / n_pool: units in the cohort / without a label.

    Raises:
        InvalidDataError: the budget is larger than the unlabelled pool (exit 65).
    """
    count, percent = parse_budget(text)
    budget = count if count is not None else max(1, math.ceil(percent / 100.0 * n_units - 1e-9))
    if budget > n_pool:
        raise InvalidDataError(f"budget {budget} {unit}(s) ({text.strip()}) is larger than the "
                               f"unlabelled pool: {n_pool} of {n_units} {unit}(s) have no label",
                               path)
    return int(budget)


def labelled_subjects(sheet: pd.DataFrame, label_role: str | None) -> set[str]:
    """Subjects whose ``label_role`` cell names a file."""
    if not label_role or label_role not in sheet.columns:
        return set()
    has = sheet[label_role].map(lambda v: isinstance(v, str) and bool(v))
    return set(sheet.loc[has, "subject"])


def check_model_labels(card: dict, sheet: pd.DataFrame, label_role: str,
                       labelled: set[str]) -> None:
    """Every label value of the labelled subjects must be one the model knows (else 65)."""
    from medflow.io.images import read_image

    known = {int(v) for v in card["config"]["labels"]}
    for row in sheet[sheet["subject"].isin(labelled)].to_dict("records"):
        values = set(np.unique(np.asarray(read_image(row[label_role], kind="label").data))
                     .astype(int).tolist())
        if not values <= known:
            raise InvalidDataError(f"label values {sorted(values - known)} are not the "
                                   f"model's labels {sorted(known)}: the model does not "
                                   f"match this samplesheet's '{label_role}'", row[label_role])


def image_roles_of(card: dict | None, given: str | None) -> tuple[str, ...]:
    """``--image-role`` if given, else the model card's image roles."""
    if given:
        return tuple(r.strip() for r in given.split(",") if r.strip())
    if card is None:
        raise ValueError("--image-role is needed without --model")
    return tuple(card["training"]["image_roles"])


def empty_result(unit: str) -> pd.DataFrame:
    cols = COLUMNS if unit == "slice" else [c for c in COLUMNS if c != "slice"]
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("subject", "strategy", "reason")
                                      else float if c == "score" else np.int64)
                         for c in cols})


def finish_table(ranked: pd.DataFrame, strategy: str, unit: str) -> pd.DataFrame:
    """The ranked list as written: rank, subject, [slice], strategy, score, reason."""
    out = ranked.assign(strategy=strategy)
    out = out[COLUMNS] if unit == "slice" else out[[c for c in COLUMNS if c != "slice"]]
    return out if len(out) else empty_result(unit)


def sheet_files(sheet: pd.DataFrame) -> list[str]:
    """Every file a loaded samplesheet names (not its subject IDs or metadata values)."""
    from medflow.io.samplesheet import is_metadata_column

    return [v for c in sheet.columns if c != "subject" and not is_metadata_column(c)
            for v in sheet[c] if isinstance(v, str) and v]


def write_outputs(table: pd.DataFrame, out: Path, sidecar: dict,
                  features: pd.DataFrame | None = None,
                  features_out: str | os.PathLike | None = None) -> None:
    """Write the CSV (and the feature table) and the JSON sidecar, all or nothing."""
    from medflow.io.atomic import atomic_outputs
    from medflow.io.sidecar import sidecar_path, write_json
    from medflow.io.tables import write_table

    with atomic_outputs() as o:
        table.to_csv(o.path(out), index=False, float_format="%.6g", lineterminator="\n")
        if features is not None and features_out is not None:
            write_table(features, o.path(features_out))
        write_json(sidecar, o.path(sidecar_path(out)))


def suggest(*, samplesheet, model_dir, image_role, label_role, budget, strategy, unit, opts,
            out: Path, features_in=None, features_out=None, params: dict) -> pd.DataFrame:
    """The whole command: checks, features (or a stored feature table), ranking, outputs.

    Returns:
        The ranked table written to ``out`` (empty when every unit has a label).
    """
    from medflow.annotate.strategies import rank_units
    from medflow.annotate.table import FeatureSource
    from medflow.io.outputs import check_outputs
    from medflow.io.sidecar import Timer, make_sidecar, sidecar_path

    timer, facts = Timer(), {}
    inputs = {"samplesheet": samplesheet, "features": features_in}
    outputs = [out, sidecar_path(out), features_out]
    if features_in is not None:  # the scale path: a stored table, streamed
        check_outputs(outputs, [features_in])
        src, features = FeatureSource(features_in), None
        n_units, n_labelled = src.counts()
    else:
        from medflow.annotate.features import (cohort_thumbnails, feature_table,
                                               fit_latent_space)
        from medflow.io.samplesheet import load_samplesheet

        model, card = None, None
        if model_dir is not None:
            from medflow.segment.modelio import load_model

            model, card = load_model(model_dir, opts.device)
            inputs["model_weights"] = Path(model_dir) / "model.safetensors"
        roles = image_roles_of(card, image_role)
        label_role = label_role or (card["training"].get("label_role") if card else None)
        sheet = load_samplesheet(samplesheet, required_roles=roles)
        check_outputs(outputs, [samplesheet, model_dir, *sheet_files(sheet)])
        labelled = labelled_subjects(sheet, label_role)
        n_units, n_labelled = len(sheet), len(labelled)
        if unit == "subject" and n_labelled < n_units:
            resolve_budget(budget, n_units, n_units - n_labelled, unit, samplesheet)
        if card is not None and labelled:
            check_model_labels(card, sheet, label_role, labelled)
        features = None
        if n_labelled < n_units:
            thumbs, units = cohort_thumbnails(sheet, roles, opts, labelled)
            emb = np.empty((len(units), 0), np.float32)
            if strategy in EMBEDDING_STRATEGIES:
                _, emb, facts = fit_latent_space(thumbs, opts)
                timer.mark("embedding_s")
            features = feature_table(sheet, units, emb, model, roles, opts,
                                     uncertainty=strategy == "uncertainty",
                                     gradient=strategy == "gradient")
            n_units, n_labelled = len(units), int(units["labelled"].sum())
        src = FeatureSource(features) if features is not None else None
        params = {**params, "image_roles": list(roles), "label_role": label_role}
    pool = n_units - n_labelled
    if pool == 0:
        log.warning("every %s of the cohort has a label: nothing to suggest", unit)
        ranked, n = empty_result(unit), 0
    else:
        n = resolve_budget(budget, n_units, pool, unit, features_in or samplesheet)
        ranked = finish_table(rank_units(src, strategy, n, opts.seed), strategy, unit)
    timer.mark("rank_s")
    sidecar = make_sidecar("suggest-annotation", params, inputs, timer, units=n_units,
                           labelled_units=n_labelled, unlabelled_units=pool, budget_units=n,
                           unit=unit, strategy=strategy, **facts)
    write_outputs(ranked, out, sidecar, features, features_out)
    return ranked
