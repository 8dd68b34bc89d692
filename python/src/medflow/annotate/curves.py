"""Tables and the figure of a simulation: Dice against the fraction of the pool labelled,
per strategy (mean and spread over repeats), with the full-data line.

- ``curves.parquet``: one row per strategy, repeat and round: ``labelled_subjects``,
  ``fraction_labelled``, ``dice`` (the chosen metric), every Dice column, the test Dice per
  subgroup (``dice_<subgroup>``) and how many subjects of each subgroup are labelled
  (``labelled_<subgroup>``).
- ``full.parquet``: the same columns for the model trained on the whole pool.
- ``summary.parquet``: per strategy: area under the curve (mean Dice over the fraction
  range, trapezoid) mean and SD over repeats, and the smallest fraction whose mean Dice is
  within ``tolerance`` of the full-data mean.
- ``picks.parquet``: every subject picked, by strategy, repeat and round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TOLERANCE = 0.01  # "reaches full-data Dice": within one Dice point


def _dice(per_subject: list[dict], metric: str) -> dict:
    per = pd.DataFrame(per_subject)
    out = {c: float(per[c].mean()) for c in per.columns if c.startswith("dice_")}
    out["dice"] = out[f"dice_{metric}"]
    if "subgroup" in per and per["subgroup"].notna().any():
        for g, part in per.groupby("subgroup"):
            out[f"dice_{g}"] = float(part[f"dice_{metric}"].mean())
    return out


def tables(result: dict, pool_size: dict[int, int], subgroups: dict[str, str], metric: str
           ) -> dict[str, pd.DataFrame]:
    """The long tables from :func:`simulate.run_simulation`'s result."""
    groups = sorted(set(subgroups.values()))
    rows, picks = [], []
    for res in result["rounds"]:
        labelled = res["labelled"]
        row = {"strategy": res["strategy"], "repeat": res["repeat"], "round": res["round"],
               "labelled_subjects": len(labelled),
               "fraction_labelled": len(labelled) / pool_size[res["repeat"]],
               **_dice(res["per_subject"], metric)}
        for g in groups:
            row[f"labelled_{g}"] = sum(subgroups.get(s) == g for s in labelled)
        rows.append(row)
        picks += [{"strategy": res["strategy"], "repeat": res["repeat"], "round": res["round"],
                   "order": i + 1, "subject": s, "subgroup": subgroups.get(s)}
                  for i, s in enumerate(res.get("picked", []))]
    full = pd.DataFrame([{"repeat": f["repeat"], "labelled_subjects": len(f["labelled"]),
                          "fraction_labelled": 1.0, **_dice(f["per_subject"], metric)}
                         for f in result["full"]])
    curves = pd.DataFrame(rows)
    return {"curves": curves, "full": full, "summary": summary(curves, full),
            "picks": pd.DataFrame(picks, columns=["strategy", "repeat", "round", "order",
                                                  "subject", "subgroup"])}


def summary(curves: pd.DataFrame, full: pd.DataFrame, tolerance: float = TOLERANCE
            ) -> pd.DataFrame:
    """Per strategy: AUC (mean Dice over the fraction range) and the fraction reaching
    the full-data Dice within ``tolerance`` (mean over repeats; NaN if never)."""
    target = float(full["dice"].mean())
    out = []
    for strategy, part in curves.groupby("strategy", sort=False):
        aucs = []
        for _, rep in part.groupby("repeat"):
            rep = rep.sort_values("fraction_labelled")
            x, y = rep["fraction_labelled"].to_numpy(), rep["dice"].to_numpy()
            aucs.append(float(np.trapezoid(y, x) / (x[-1] - x[0])) if len(x) > 1 else y[0])
        mean = part.groupby("fraction_labelled")["dice"].agg(["mean", "std"])
        reached = mean.index[mean["mean"] >= target - tolerance]
        last = mean.iloc[-1]
        out.append({"strategy": strategy, "auc_mean": float(np.mean(aucs)),
                    "auc_sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
                    "reach_fraction": float(reached.min()) if len(reached) else np.nan,
                    "final_fraction": float(mean.index[-1]), "final_dice_mean": last["mean"],
                    "final_dice_sd": last["std"], "full_dice_mean": target,
                    "full_dice_sd": float(full["dice"].std(ddof=1)) if len(full) > 1 else 0.0,
                    "repeats": len(aucs)})
    return pd.DataFrame(out)


def plot(curves: pd.DataFrame, full: pd.DataFrame, path: Path, metric_name: str) -> Path:
    """Mean Dice per strategy with a band from the smallest to the largest repeat, and the
    full-data mean (solid) with its band and the one-point tolerance (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for strategy, part in curves.groupby("strategy", sort=False):
        g = part.groupby("fraction_labelled")["dice"]
        x = 100 * np.asarray(g.mean().index)
        line, = ax.plot(x, g.mean().to_numpy(), marker="o", ms=3, label=strategy)
        ax.fill_between(x, g.min().to_numpy(), g.max().to_numpy(), alpha=0.15,
                        color=line.get_color())
    m, lo, hi = full["dice"].mean(), full["dice"].min(), full["dice"].max()
    ax.axhline(m, color="k", lw=1.2, label=f"full data ({m:.3f})")
    ax.axhspan(lo, hi, color="k", alpha=0.08)
    ax.axhline(m - TOLERANCE, color="k", lw=0.8, ls=":", label="full data - 1 point")
    ax.set(xlabel="pool labelled (%)", ylabel=f"test Dice ({metric_name})")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
