"""`medflow suggest-annotation [rank] ...` and `medflow suggest-annotation simulate ...`.

``rank`` is the default sub-command, so ``medflow suggest-annotation --model M ...`` ranks.
Torch is imported inside the commands so `medflow --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from medflow.options import (AUGMENT_MODES, device_option, parse_triplet, resolve_device,
                             seed_option, verbosity_options)

STRATEGY_CHOICE = click.Choice(["gradient", "uncertainty", "coreset", "typical", "random"])


class RankByDefault(click.Group):
    """A group whose first word may be omitted: anything but a sub-command name ranks."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["rank", *args]
        return super().parse_args(ctx, args)


def feature_options(f):
    """Latent-space options shared by rank and simulate."""
    f = click.option("--grid", default="16,16,8", show_default=True,
                     help="VAE thumbnail size X,Y,Z per subject (slices: X,Y,1).")(f)
    f = click.option("--latent", type=click.IntRange(2, 256), default=16, show_default=True,
                     help="VAE latent dimensions.")(f)
    f = click.option("--vae-steps", type=click.IntRange(min=1), default=300, show_default=True,
                     help="VAE training steps (batches of 16 units).")(f)
    f = click.option("--uncertainty-kind", type=click.Choice(["entropy", "disagreement"]),
                     default="entropy", show_default=True,
                     help="uncertainty: predictive entropy or MC-dropout disagreement.")(f)
    f = click.option("--mc-samples", type=click.IntRange(min=1), default=4, show_default=True,
                     help="MC-dropout draws for --uncertainty-kind disagreement.")(f)
    return f


def make_options(unit, grid, latent, vae_steps, uncertainty_kind, mc_samples, seed, device):
    from medflow.annotate.options import FeatureOptions

    g = tuple(int(v) for v in parse_triplet(grid, "--grid"))
    if any(v < 1 for v in g):
        raise click.BadParameter("sizes must be at least 1", param_hint="--grid")
    return FeatureOptions(unit=unit, grid=g, latent=latent, vae_steps=vae_steps,
                          uncertainty=uncertainty_kind,
                          mc_samples=mc_samples, seed=seed,
                          device="cpu" if device == "cpu" else resolve_device(device))


@click.group("suggest-annotation", cls=RankByDefault)
@verbosity_options
def suggest_annotation() -> None:
    """Pick the subjects (or slices) most worth annotating next.

    \b
    Example:
      medflow suggest-annotation --model model --samplesheet cohort.csv --label-role seg \\
          --budget 5% --strategy gradient --out suggestions.csv
      medflow suggest-annotation simulate --samplesheet het/samplesheet.csv \\
          --strategies gradient,uncertainty,coreset,random --rounds 4 --start 4 --step 4 \\
          --repeats 3 --out sim
    """


@suggest_annotation.command("rank")
@click.option("--samplesheet", type=click.Path(path_type=Path),
              help="The cohort: subjects with an empty label cell are the pool.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="The current segment-cascaded model (needed by gradient, uncertainty).")
@click.option("--image-role", default=None, help="Image column(s) [the model's].")
@click.option("--label-role", default=None, help="Label column [the model's].")
@click.option("--budget", default="10", show_default=True,
              help="Units to suggest: a number (10) or a percentage of the cohort (5%).")
@click.option("--strategy", type=STRATEGY_CHOICE, default="gradient", show_default=True)
@click.option("--unit", type=click.Choice(["subject", "slice"]), default="subject",
              show_default=True, help="Suggest whole subjects or single slices.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Ranked list (CSV) to write; its sidecar goes beside it.")
@click.option("--features", "features_in", type=click.Path(path_type=Path),
              help="Rank from a stored feature table (Parquet) instead of the images.")
@click.option("--save-features", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the feature table (Parquet) for re-ranking.")
@feature_options
@device_option
@seed_option
@verbosity_options
def rank_cmd(samplesheet, model_dir, image_role, label_role, budget, strategy, unit, out,
             features_in, save_features, grid, latent, vae_steps,
             uncertainty_kind, mc_samples, device, seed) -> None:
    """Rank the unlabelled subjects (or slices) and write the next ones to annotate.

    \b
    Example:
      medflow suggest-annotation rank --model model --samplesheet cohort.csv \\
          --label-role seg --budget 10 --strategy gradient --out suggestions.csv
      medflow suggest-annotation rank --features features.parquet --budget 1000 \\
          --strategy coreset --out suggestions.csv
    """
    from medflow.annotate.strategies import NEEDS_MODEL
    from medflow.annotate.suggest import parse_budget, suggest

    if (samplesheet is None) == (features_in is None):
        raise click.UsageError("give either --samplesheet or --features")
    if samplesheet is not None and model_dir is None:
        if strategy in NEEDS_MODEL:
            raise click.UsageError(f"--strategy {strategy} needs --model (the current model)")
        if not image_role:
            raise click.UsageError("--image-role is needed without --model")
    try:
        parse_budget(budget)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--budget") from None
    if samplesheet is not None:  # images and models: torch (not for a stored table)
        import torch

        torch.manual_seed(seed)
    opts = make_options(unit, grid, latent, vae_steps, uncertainty_kind, mc_samples, seed,
                        device if samplesheet is not None else "cpu")
    params = {"strategy": strategy, "budget": budget, "unit": unit, "seed": seed,
              **opts.to_dict()}
    ranked = suggest(samplesheet=samplesheet, model_dir=model_dir, image_role=image_role,
                     label_role=label_role, budget=budget, strategy=strategy, unit=unit,
                     opts=opts, out=out, features_in=features_in, features_out=save_features,
                     params=params)
    if ranked.empty:
        click.echo(f"{out}  0 suggestions: every {unit} already has a label")
    else:
        click.echo(f"{out}  {len(ranked)} {unit}(s): {', '.join(ranked['subject'][:5])}"
                   + (" ..." if len(ranked) > 5 else ""))


DEFAULT_ROLES = {"brats": ("t1,t1ce,t2,flair", "seg"), "cardiac": ("sa", "seg_sa")}


@suggest_annotation.command("simulate")
@click.option("--samplesheet", required=True, type=click.Path(path_type=Path),
              help="A fully labelled cohort (a 'subgroup' column is reported, never used).")
@click.option("--image-role", default=None, help="Image column(s) [brats: t1,t1ce,t2,flair; "
              "cardiac: sa].")
@click.option("--label-role", default=None, help="Label column [brats: seg; cardiac: seg_sa].")
@click.option("--strategies", default="gradient,uncertainty,coreset,random", show_default=True,
              help="Comma-separated strategies to compare.")
@click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--start", type=click.IntRange(min=1), default=4, show_default=True,
              help="Subjects labelled before the first round (random, shared).")
@click.option("--step", type=click.IntRange(min=1), default=4, show_default=True,
              help="Subjects labelled per round.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--test-fraction", type=click.FloatRange(0.05, 0.5), default=0.2,
              show_default=True, help="Held-out test subjects per repeat (by subgroup).")
@click.option("--train-steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="Optimisation steps of every round's training (epochs = steps / "
              "subjects).")
@click.option("--full-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Steps of the full-data reference model; 0: 4 x --train-steps.")
@click.option("--channels", type=click.IntRange(min=2), default=8, show_default=True)
@click.option("--levels", type=click.IntRange(2, 6), default=3, show_default=True)
@click.option("--patch", default="128,128,32", show_default=True,
              help="Stage-2 patch (clipped to the data).")
@click.option("--stage1-factor", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--augment", type=click.Choice(AUGMENT_MODES), default="standard",
              show_default=True, help="The small models' training augmentation (see "
              "segment-cascaded train --help).")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--metric", type=click.Choice(["auto", "wt", "mean"]), default="auto",
              show_default=True, help="wt: whole-foreground (whole tumour) Dice; mean: mean "
              "over labels; auto: wt for brats, mean otherwise.")
@click.option("--out", "outdir", required=True, type=click.Path(file_okay=False,
              path_type=Path), help="Folder for curves, summary, plot (and work/ cache).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads for torch (1 is fastest per core on a shared machine).")
@feature_options
@device_option
@seed_option
@verbosity_options
def simulate_cmd(samplesheet, image_role, label_role, strategies, rounds, start, step, repeats,
                 test_fraction, train_steps, full_steps, channels, levels, patch, stage1_factor,
                 augment, lr, metric, outdir, threads, grid, latent, vae_steps,
                 uncertainty_kind, mc_samples, device, seed) -> None:
    """Hide the labels of a fully labelled cohort and replay the annotation loop.

    \b
    Example:
      medflow demo-cohort --kind brats --heterogeneous --subjects 100 --shape 48,48,32 --out het
      medflow suggest-annotation simulate --samplesheet het/samplesheet.csv \\
          --strategies gradient,uncertainty,coreset,random --rounds 4 --start 4 --step 4 \\
          --repeats 3 --out sim
    """
    import torch

    from medflow.annotate.run import simulate

    names = tuple(s.strip() for s in strategies.split(",") if s.strip())
    bad = [s for s in names if s not in STRATEGY_CHOICE.choices]
    if bad or not names:
        raise click.BadParameter(f"unknown {bad}; choose from {STRATEGY_CHOICE.choices}",
                                 param_hint="--strategies")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    fopts = make_options("subject", grid, latent, vae_steps, uncertainty_kind, mc_samples,
                         seed, device)
    train = {"channels": channels, "levels": levels, "stage1_factor": stage1_factor,
             "patch": [int(v) for v in parse_triplet(patch, "--patch")], "augment": augment,
             "lr": lr, "stages": 2}
    summary = simulate(samplesheet, image_role, label_role, names, rounds, start, step, repeats,
                       test_fraction, train_steps, train, metric, fopts, seed, outdir,
                       DEFAULT_ROLES, full_steps)
    for row in summary.to_dict("records"):
        click.echo(f"{row['strategy']:12s} AUC {row['auc_mean']:.4f} +- {row['auc_sd']:.4f}  "
                   f"reaches full-data Dice {row['full_dice_mean']:.4f} - 0.01 at "
                   f"{100 * row['reach_fraction']:.1f} % of the pool")
    click.echo(f"{outdir}/curves.png")
