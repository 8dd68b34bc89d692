"""The simulated annotation loop behind ``medflow suggest-annotation simulate``.

A fully labelled cohort is split (per repeat) into a test set and a pool whose labels are
hidden. All strategies start from the same random ``start`` subjects; each round a small
model is trained on the labelled subjects, the strategy picks ``step`` more from the pool,
and the next model is trained. Dice on the test set against the fraction of the pool
labelled gives one curve per strategy and repeat; the model trained on the whole pool
gives the full-data line. Every round's training has the same number of optimisation
steps (``train_steps``; epochs = steps / labelled subjects), so curves compare data, not
effort. The full-data model is the reference the curves must reach, so it gets its own,
larger budget (``full_steps``, default ``FULL_STEPS_FACTOR`` x ``train_steps``): at the
rounds' budget it would see each pool subject a few times and score below small-set models.

Results are cached per (repeat, strategy, round) under ``<out>/work/``: a rerun with the
same settings resumes where a killed run stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.annotate.options import FeatureOptions

log = logging.getLogger("medflow")

# The full-data model's default step budget, in multiples of the rounds' --train-steps.
# A pool of 64 at 4 x 150 steps gets 10 epochs (rounded up), close to the 13 of the largest
# round set (12 subjects at 150 steps), where a 150-step full model got 3 and scored below
# 6-subject models.
FULL_STEPS_FACTOR = 4


@dataclass
class SimOptions:
    """Settings of a simulation (recorded in the sidecar)."""

    strategies: tuple[str, ...] = ("gradient", "uncertainty", "coreset", "random")
    rounds: int = 4
    start: int = 4
    step: int = 4
    repeats: int = 3
    test_fraction: float = 0.2
    train_steps: int = 300
    full_steps: int = 0                         # 0: FULL_STEPS_FACTOR x train_steps
    train: dict = field(default_factory=dict)   # segment-cascaded training options
    metric: str = "auto"                        # wt | mean | auto
    seed: int = 0
    features: FeatureOptions = field(default_factory=FeatureOptions)

    def full_budget(self) -> int:
        """Optimisation steps of the full-data model."""
        return self.full_steps or FULL_STEPS_FACTOR * self.train_steps

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = self.features.to_dict()
        return d

    def fingerprint(self, sheet: pd.DataFrame, full: bool = False) -> str:
        """What decides every cached round (not which strategies, how many repeats or how
        many rounds: round k depends only on the rounds before it, so adding any of them
        reuses the rounds already run; not the full-data budget, which no round uses).
        ``full=True``: the full-data model's key, which adds its step budget."""
        d = {k: v for k, v in self.to_dict().items()
             if k not in ("strategies", "repeats", "rounds", "full_steps")}
        if full:
            d["full_budget"] = self.full_budget()
        text = json.dumps([d, sorted(sheet["subject"])], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_cohort(sheet: pd.DataFrame, test_fraction: float, seed: int, repeat: int):
    """(pool, test) subject lists; stratified by ``subgroup`` when the sheet has one, so
    rare subgroups are in the test set in proportion."""
    rng = np.random.default_rng([seed, repeat, 11])
    groups = sheet["subgroup"] if "subgroup" in sheet.columns else pd.Series("all", sheet.index)
    test = []
    for g in sorted(groups.unique()):
        members = sorted(sheet.loc[groups == g, "subject"])
        n = int(round(test_fraction * len(members)))
        test += [members[i] for i in rng.permutation(len(members))[:n]]
    pool = [s for s in sheet["subject"] if s not in set(test)]
    return pool, sorted(test)


def dice_row(pred: np.ndarray, truth: np.ndarray, labels) -> dict:
    """Dice per foreground label, whole-foreground Dice (``dice_wt``: BraTS whole tumour)
    and their mean over labels present (``dice_mean``)."""
    out = {}
    for v in labels:
        if v == 0:
            continue
        a, b = pred == v, truth == v
        den = a.sum() + b.sum()
        out[f"dice_{v}"] = float(2 * (a & b).sum() / den) if den else np.nan
    a, b = pred != 0, truth != 0
    den = a.sum() + b.sum()
    out["dice_wt"] = float(2 * (a & b).sum() / den) if den else 1.0
    present = [out[f"dice_{v}"] for v in labels if v != 0 and not np.isnan(out[f"dice_{v}"])]
    out["dice_mean"] = float(np.mean(present)) if present else np.nan
    return out


def evaluate(model_dir: Path, sheet: pd.DataFrame, image_roles, label_role, device: str
             ) -> pd.DataFrame:
    """Dice of every test subject (first frame that has labels), one row each."""
    from medflow.annotate.features import read_channels
    from medflow.io.images import read_image
    from medflow.segment.modelio import load_model
    from medflow.segment.predict import label_dtype, segment

    model, _ = load_model(model_dir, device)
    rows = []
    for row in sheet.to_dict("records"):
        chans = read_channels(row, image_roles)
        truth = np.asarray(read_image(row[label_role], kind="label").data)
        truth = truth if truth.ndim == 3 else truth[..., 0]
        pred = np.zeros(chans[0].shape3, label_dtype(model.cfg.labels))
        segment(model, chans, pred, device=device)
        rows.append({"subject": row["subject"], "subgroup": row.get("subgroup"),
                     **dice_row(pred, truth, model.cfg.labels)})
    return pd.DataFrame(rows)


def train(sheet: pd.DataFrame, image_roles, label_role, out: Path, opts: SimOptions,
          seed: int, device: str, steps: int | None = None) -> Path:
    """A small model on the labelled subjects of ``sheet``; epochs from the step budget
    (``steps``, default ``opts.train_steps``)."""
    from medflow.segment.workflow import train_model

    out.mkdir(parents=True, exist_ok=True)
    csv = out / "labelled.csv"
    sheet.to_csv(csv, index=False)
    t = dict(opts.train)
    epochs = max(1, math.ceil((steps or opts.train_steps) / len(sheet)))
    train_model(sheet.reset_index(drop=True), tuple(image_roles), label_role, out / "model",
                epochs=epochs, patch=tuple(t["patch"]), stage1_factor=t["stage1_factor"],
                augment=t["augment"], val_fraction=0.0, channels=t["channels"],
                levels=t["levels"], lr=t["lr"], stages=t["stages"], regions=t["regions"],
                resume=False, device=device, seed=seed, samplesheet=csv)
    return out / "model"


def cached(path: Path, fingerprint: str, compute) -> dict:
    """``compute()`` once per settings: its JSON result is kept at ``path`` (beside the
    ``model`` folder it trained, which must still be there), with the CPU seconds it took
    (``cpu_s``: this process's user + system time, so resumed runs still add up)."""
    import time

    if path.exists() and (path.parent / "model" / "model.safetensors").exists():
        data = json.loads(path.read_text())
        if data.get("fingerprint") == fingerprint:
            return data
    cpu = time.process_time()
    data = {**compute(), "fingerprint": fingerprint}
    data["cpu_s"] = round(time.process_time() - cpu, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=float))
    tmp.replace(path)
    return data


def _score(model_dir: Path, test: pd.DataFrame, image_roles, label_role, device) -> dict:
    per = evaluate(model_dir, test, image_roles, label_role, device)
    return {"per_subject": per.to_dict("records")}


def run_simulation(sheet: pd.DataFrame, image_roles, label_role: str, opts: SimOptions,
                   outdir: Path, device: str = "cpu", progress=None) -> dict[str, pd.DataFrame]:
    """Run (or resume) every repeat, strategy and round.

    Returns:
        ``rounds`` (one row per strategy, repeat and round: labelled subjects, picks and
        per-subject Dice) and ``full`` (the whole-pool model per repeat) as long tables.
    """
    from medflow.annotate.features import cohort_thumbnails, feature_table, fit_latent_space
    from medflow.annotate.strategies import rank_units
    from medflow.annotate.suggest import EMBEDDING_STRATEGIES
    from medflow.annotate.table import FeatureSource
    from medflow.errors import InvalidDataError
    from medflow.segment.modelio import load_model

    fp, fp_full = opts.fingerprint(sheet), opts.fingerprint(sheet, full=True)
    work = Path(outdir) / "work"
    rows = sheet.set_index("subject", drop=False)
    rounds, full = [], []
    for r in range(opts.repeats):
        pool, test = split_cohort(sheet, opts.test_fraction, opts.seed, r)
        need = opts.start + opts.rounds * opts.step
        if need > len(pool):
            raise InvalidDataError(f"start {opts.start} + {opts.rounds} rounds x {opts.step} "
                                   f"= {need} subjects, but the pool has {len(pool)} (the "
                                   f"test set holds {len(test)})")
        order = np.random.default_rng([opts.seed, r, 12]).permutation(len(pool))
        start = sorted(pool[i] for i in order[:opts.start])
        pool_sheet, test_sheet = rows.loc[pool].reset_index(drop=True), rows.loc[test]
        seed = opts.seed * 1000 + r

        def fit(subjects, folder, seed=seed, test_sheet=test_sheet, steps=None):
            model = train(rows.loc[sorted(subjects)].reset_index(drop=True), image_roles,
                          label_role, folder, opts, seed, device, steps)
            return {"labelled": sorted(subjects),
                    **_score(model, test_sheet, image_roles, label_role, device)}

        base = cached(work / f"repeat{r}" / "start" / "result.json", fp,
                      lambda: fit(start, work / f"repeat{r}" / "start"))
        progress and progress(1)
        latent = {}

        def space(pool_sheet=pool_sheet, latent=latent, seed=seed):
            if not latent:  # the VAE is trained once per repeat, on the pool's images
                thumbs, _ = cohort_thumbnails(pool_sheet, image_roles, opts.features, set())
                fo = FeatureOptions(**{**opts.features.to_dict(), "seed": seed})
                _, latent["emb"], _ = fit_latent_space(thumbs, fo)
            return latent["emb"]

        for strategy in opts.strategies:
            labelled, model_dir = list(base["labelled"]), work / f"repeat{r}" / "start" / "model"
            rounds.append({"strategy": strategy, "repeat": r, "round": 0, "picked": [],
                           **base})
            for k in range(1, opts.rounds + 1):
                folder = work / f"repeat{r}" / strategy / f"round{k}"

                def step(labelled=labelled, model_dir=model_dir, folder=folder, k=k,
                         strategy=strategy):
                    emb = (space() if strategy in EMBEDDING_STRATEGIES
                           else np.empty((len(pool), 0), np.float32))
                    units = pd.DataFrame({"subject": pool, "slice": -1,
                                          "labelled": [s in set(labelled) for s in pool]})
                    model, _ = load_model(model_dir, device)
                    table = feature_table(pool_sheet, units, emb, model,
                                          image_roles, opts.features,
                                          uncertainty=strategy == "uncertainty",
                                          gradient=strategy == "gradient")
                    ranked = rank_units(FeatureSource(table), strategy, opts.step,
                                        seed * 100 + k)
                    picked = list(dict.fromkeys(ranked["subject"]))
                    return {"picked": picked, **fit(labelled + picked, folder)}

                res = cached(folder / "result.json", fp, step)
                rounds.append({"strategy": strategy, "repeat": r, "round": k, **res})
                labelled, model_dir = list(res["labelled"]), folder / "model"
                progress and progress(1)
        # the full-data model last: the strategies' rounds do not wait for the largest job
        full.append({"repeat": r, **cached(
            work / f"repeat{r}" / "full" / "result.json", fp_full,
            lambda: fit(pool, work / f"repeat{r}" / "full", steps=opts.full_budget()))})
        progress and progress(1)
    return {"rounds": rounds, "full": full}
