"""`medflow super-resolve train-prior|train|predict`: thin commands around the methods.

Torch and the models are imported inside the commands so `medflow --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from medflow.options import (NiftiPath, device_option, jobs_option, resolve_device,
                             seed_option, verbosity_options)

METHODS = ("latent", "joint", "nearest", "linear", "sdf")


def _roles(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


def _frames(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--frames: ``all`` or a comma-separated choice of ``ed`` and ``es`` (a usage error,
    exit 2, before any file is read; a 3D stack would otherwise hide a typo)."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if names == ["all"] or (names and set(names) <= {"ed", "es"}):
        return ",".join(names)
    raise click.BadParameter(f"takes ed, es, ed,es or all, got {value!r}")


@click.group("super-resolve")
@verbosity_options
def super_resolve() -> None:
    """Thick-slice cardiac segmentations (and images) to high-resolution 3D shapes.

    \b
    Example:
      medflow demo-cohort --kind cardiac --subjects 24 --out demo
      medflow super-resolve train-prior --samplesheet demo/samplesheet.csv --out prior
      medflow super-resolve predict --model prior --input demo/sub-000/seg_sa.nii.gz \\
          --la-4ch demo/sub-000/seg_la_4ch.nii.gz --output hr_{frame}.nii.gz
    """


@super_resolve.command("train-prior")
@click.option("--samplesheet", required=True, type=click.Path(path_type=Path),
              help="CSV with a subject column and high-resolution label map columns.")
@click.option("--label-role", default="gt_ed,gt_es", show_default=True,
              help="High-resolution label columns (comma-separated); every map is a shape.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write (model.safetensors, model.json, curve).")
@click.option("--epochs", type=click.IntRange(min=1), default=150, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--latent", type=click.IntRange(min=2), default=32, show_default=True,
              help="Latent dimensions.")
@click.option("--lr", type=float, default=1e-2, show_default=True, help="Learning rate.")
@click.option("--beta", type=float, default=1e-3, show_default=True, help="KL weight.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Fraction of subjects held out for validation Dice.")
@device_option
@seed_option
@verbosity_options
def train_prior_cmd(samplesheet, label_role, out, epochs, batch, latent, lr, beta,
                    val_fraction, device, seed) -> None:
    """Train the shape prior (3D VAE in the heart-centred frame) of the latent method.

    \b
    Example:
      medflow super-resolve train-prior --samplesheet demo/samplesheet.csv \\
          --label-role gt_ed,gt_es --epochs 150 --out prior
    """
    from medflow.superres.workflow import train_prior_files

    card = train_prior_files(samplesheet, _roles(label_role), out, epochs=epochs, batch=batch,
                             latent=latent, lr=lr, beta=beta, val_fraction=val_fraction,
                             device=resolve_device(device), seed=seed)
    dice = card["validation"].get("dice_stack_encoder_only", {})
    click.echo(f"{out}  validation Dice: " + (", ".join(f"{k} {v:.3f}" for k, v in dice.items())
                                               or "n/a"))


@super_resolve.command("train")
@click.option("--method", type=click.Choice(["joint"]), default="joint", show_default=True)
@click.option("--samplesheet", required=True, type=click.Path(path_type=Path),
              help="CSV with thick-slice and high-resolution columns.")
@click.option("--image-role", default="sa", show_default=True, help="Thick-slice image.")
@click.option("--label-role", default="seg_sa", show_default=True, help="Thick-slice labels.")
@click.option("--hr-image-role", default="hr_ed,hr_es", show_default=True,
              help="High-resolution images of the ED and ES frames.")
@click.option("--hr-label-role", default="gt_ed,gt_es", show_default=True,
              help="High-resolution labels of the ED and ES frames (same grids).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--prior", type=click.Path(path_type=Path),
              help="A train-prior folder: motion-correct every stack with it (the latent "
                   "method's shifts) before the network, in training and prediction; it is "
                   "copied into the model folder.")
@click.option("--la-roles", default="", help="With --prior: long-axis label columns that "
                                             "refine the shifts (seg_la_2ch,seg_la_4ch).")
@click.option("--steps", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=2, show_default=True,
              help="Patches (32^3 voxels) per step.")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--remap", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Fraction of patches whose input and target images go through one random "
                   "intensity curve (another contrast), so the labels do not hang on one.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True)
@device_option
@seed_option
@verbosity_options
def train_cmd(method, samplesheet, image_role, label_role, hr_image_role, hr_label_role, out,
              prior, la_roles, steps, batch, lr, remap, val_fraction, device, seed) -> None:
    """Train the joint image/label super-resolution network on thick/HR pairs.

    \b
    Example:
      medflow super-resolve train --method joint --samplesheet demo/samplesheet.csv \\
          --prior prior --la-roles seg_la_2ch,seg_la_4ch --out joint
    """
    from medflow.superres.workflow import train_joint_files

    if la_roles and prior is None:
        raise click.UsageError("--la-roles refine the --prior's motion correction: give --prior")
    card = train_joint_files(samplesheet, image_role, label_role, _roles(hr_image_role),
                             _roles(hr_label_role), out, steps=steps, batch=batch, lr=lr,
                             val_fraction=val_fraction, device=resolve_device(device), seed=seed,
                             prior=prior, la_roles=_roles(la_roles), remap=remap)
    val = card["validation"]
    click.echo(f"{out}  validation: " + (str(val) if val else "none (no subject held out: "
                                         "--val-fraction 0, or one subject)"))


#: Options a method does not use: given on the command line they are a usage error (exit 2)
#: rather than silently ignored. The baselines use no model, fit nothing and read no long
#: axis; only latent writes a decoded shape.
UNUSED = {m: ("model_dir", "la_2ch", "la_4ch", "la_roles", "iterations", "label_thickness",
              "shape_from") for m in ("nearest", "linear", "sdf")} | {"joint": ("shape_from",)}
#: ... and by a joint model trained without a shape prior (no motion correction to refine).
UNUSED_NO_PRIOR = ("la_2ch", "la_4ch", "la_roles", "iterations", "label_thickness")


def _refuse_unused(names: tuple[str, ...], what: str) -> None:
    """Usage error (2) naming those of ``names`` (parameter names) given on the command
    line: options ``what`` does not use."""
    ctx = click.get_current_context()
    given = [p for p in ctx.command.params if p.name in names
             and ctx.get_parameter_source(p.name) not in (None,
                                                          click.core.ParameterSource.DEFAULT)]
    if given:
        raise click.UsageError(f"{', '.join(p.opts[0] for p in given)}: not used by {what}")


def _check_method_options(method: str | None, model_dir: Path | None) -> str | None:
    """Refuse options the method does not use, the --model's card's method when --method is
    not given (before any input is read); returns the method."""
    if method is not None:   # checked before the folder: a baseline given --model says so
        _refuse_unused(UNUSED.get(method, ()), f"--method {method}")
    if model_dir is None:
        return method
    from medflow.superres.modelio import read_card

    card = read_card(model_dir, method)  # missing (66), foreign or another method (65)
    if method is None:
        method = card.get("method")
        _refuse_unused(UNUSED.get(method, ()), f"--method {method} (the --model's)")
    if method == "joint" and not card.get("training", {}).get("motion_correction"):
        _refuse_unused(UNUSED_NO_PRIOR, "a joint model trained without --prior (it has no "
                                        "motion correction for them to refine)")
    return method


@super_resolve.command("predict")
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="latent or joint (the --model's), or a baseline: nearest, linear, sdf.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Model folder (train-prior for latent, train for joint).")
@click.option("--input", "seg", type=click.Path(path_type=Path),
              help="Short-axis label stack (3D or cine).")
@click.option("--image", type=click.Path(path_type=Path),
              help="Its image (joint: required; latent, baselines: B-spline interpolated).")
@click.option("--la-2ch", type=click.Path(path_type=Path),
              help="latent, or joint trained with --prior: 2-chamber labels (cine, or one "
                   "frame: ED's, used for ED only).")
@click.option("--la-4ch", type=click.Path(path_type=Path),
              help="latent, or joint trained with --prior: 4-chamber labels (as --la-2ch).")
@click.option("--output", type=NiftiPath(),
              help="Labels to write; {frame} in the name is ed, es or tNN (without it, "
                   "several frames are written as NAME_ed.nii.gz, NAME_es.nii.gz).")
@click.option("--output-image", type=NiftiPath(),
              help="Super-resolved image to write (joint; B-spline with latent or a baseline).")
@click.option("--frames", default="ed,es", show_default=True, callback=_frames,
              help="ed,es, ed, es or all (ED = frame 0, ES = least LV blood pool).")
@click.option("--grid-like", type=click.Path(path_type=Path),
              help="Write on this image's grid [default: 1.25 mm, the stack's axes].")
@click.option("--iterations", type=click.IntRange(min=1), default=120, show_default=True,
              help="latent (and a joint model's motion correction): optimisation steps per "
                   "frame.")
@click.option("--label-thickness", type=click.FloatRange(min=0), default=0.0,
              show_default=True,
              help="latent (and a joint model's motion correction): slice profile of the "
                   "labels, mm (0: each slice's labels are its "
                   "centre plane, as a 2D segmentation labels it).")
@click.option("--shape-from", type=click.Choice(["stack", "prior"]), default="stack",
              show_default=True,
              help="latent: write the stack with the fitted shifts undone, interpolated "
                   "between slices like sdf (stack), or the prior's decoded shape (prior).")
@click.option("--samplesheet", type=click.Path(path_type=Path),
              help="Batch mode: every subject of this samplesheet.")
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path),
              help="Batch mode: <outdir>/<subject>/<subject>_<role>_hr_<frame>.nii.gz.")
@click.option("--label-role", default="seg_sa", show_default=True,
              help="Batch mode: label column.")
@click.option("--image-role", default=None,
              help="Batch mode: image column [joint: the column the model was trained on].")
@click.option("--la-roles", default="", help="Batch mode, latent (or joint with a prior): "
                                             "long-axis label columns "
                                             "(seg_la_2ch,seg_la_4ch).")
@jobs_option
@device_option
@seed_option
@verbosity_options
def predict_cmd(method, model_dir, seg, image, la_2ch, la_4ch, output, output_image, frames,
                grid_like, iterations, label_thickness, shape_from, samplesheet, outdir,
                label_role, image_role, la_roles, jobs, device, seed) -> None:
    """Super-resolve a short-axis label stack (ED and ES by default) to 1.25 mm 3D.

    latent fits the shape prior and one in-plane shift per slice (motion correction); the
    shifts are in each output's JSON sidecar (truth.json's convention). It writes the stack
    with those shifts undone (and --image, B-spline), or with --shape-from prior the
    decoded shape. joint super-resolves the image and labels with its network; one trained
    with --prior first undoes the shifts that prior finds (long-axis labels refine them).

    \b
    Example:
      medflow super-resolve predict --model prior --input seg_sa.nii.gz \\
          --la-2ch seg_la_2ch.nii.gz --la-4ch seg_la_4ch.nii.gz --output hr_{frame}.nii.gz
      medflow super-resolve predict --method sdf --input seg_sa.nii.gz --frames ed \\
          --output hr.nii.gz
      medflow super-resolve predict --model joint --input seg_sa.nii.gz --image sa.nii.gz \\
          --output hr_{frame}.nii.gz --output-image hrimg_{frame}.nii.gz
      medflow super-resolve predict --model prior --samplesheet sheet.csv --outdir results
    """
    from medflow.superres.workflow import predict_command

    single = bool(seg or output)
    if single == bool(samplesheet or outdir):
        raise click.UsageError("give either --input/--output or --samplesheet/--outdir")
    if single and not (seg and output):
        raise click.UsageError("--input and --output go together")
    if not single and not (samplesheet and outdir):
        raise click.UsageError("--samplesheet and --outdir go together")
    if output_image is not None and image is None:
        raise click.UsageError("--output-image needs --image (the stack's image)")
    if method in ("latent", "joint", None) and model_dir is None:
        raise click.UsageError("--model is needed (or --method nearest|linear|sdf)")
    method = _check_method_options(method, model_dir)
    if method == "joint" and single and image is None:
        raise click.UsageError("--method joint super-resolves the image with its labels: "
                               "give --image")
    la = {k: v for k, v in (("2ch", la_2ch), ("4ch", la_4ch)) if v is not None}
    written = predict_command(
        method, model_dir, seg=seg, image=image, la=la, output=output,
        output_image=output_image, frames=frames, grid_like=grid_like, iterations=iterations,
        label_thickness=label_thickness, shape_from=shape_from, samplesheet=samplesheet,
        outdir=outdir, label_role=label_role, image_role=image_role,
        la_roles=_roles(la_roles), jobs=jobs,
        device=resolve_device(device) if model_dir else "cpu", seed=seed)
    for path in written:
        click.echo(str(path))
