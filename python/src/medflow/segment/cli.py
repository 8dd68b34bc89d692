"""`medflow segment-cascaded train|predict`: thin commands around the cascade.

Torch and the model code are imported inside the commands so `medflow --help` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import click

from medflow.errors import TransientError
from medflow.options import (AUGMENT_MODES, NiftiPath, device_option, is_quiet, parse_triplet,
                             resolve_device, seed_option, show_progress, verbosity_options)

log = logging.getLogger("medflow")


@contextlib.contextmanager
def oom_is_transient():
    """GPU (or host) out of memory -> TransientError (exit 75: the pipeline retries)."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError as exc:
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        raise TransientError(f"GPU out of memory ({str(exc).splitlines()[0]}); retry with "
                             "more GPU memory, a smaller --patch, or --device cpu") from None


class ByteSize(click.ParamType):
    """A memory size: ``16G``, ``1500M``, ``2GiB`` or plain bytes (K, M, G, T are 1024-based)."""

    name = "size"
    UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:] in "kmgt" else ""
        try:
            number = float(text[:len(text) - len(unit)])
        except ValueError:
            self.fail(f"{value!r} is not a size such as 16G or 1500M", param, ctx)
        if not 0 < number < float("inf"):     # NaN, inf, 0 and negatives
            self.fail(f"{value!r} must be a positive, finite size", param, ctx)
        return int(number * self.UNITS[unit])


def _say(line: str) -> None:
    """One informational line on stderr (stdout stays for results), unless --quiet."""
    if not is_quiet():
        click.echo(f"medflow: {line}", err=True)


def _roles(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


@click.group("segment-cascaded")
@verbosity_options
def segment_cascaded() -> None:
    """Two-stage memory-efficient cascaded U-net: train and predict.

    \b
    Example:
      medflow segment-cascaded train --samplesheet demo/samplesheet.csv --out model
      medflow segment-cascaded predict --model model --input sa.nii.gz --output seg.nii.gz
    """


@segment_cascaded.command("train")
@click.option("--samplesheet", required=True, type=click.Path(path_type=Path),
              help="CSV with a subject column and image/label columns.")
@click.option("--image-role", default="sa", show_default=True,
              help="Image column(s), comma-separated for several channels (t1,t1ce,t2,flair).")
@click.option("--label-role", default="seg_sa", show_default=True, help="Label map column.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write (model.safetensors, model.json, curve).")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--patch", default=None,
              help="Stage-2 patch X,Y,Z (clipped to the data; also the inference window) "
                   "[default: planned from the data].")
@click.option("--stage1-factor", type=click.IntRange(min=1), default=None,
              help="Stage-1 downsampling (no axis made coarser than the coarsest one) "
                   "[default: planned].")
@click.option("--augment", type=click.Choice(AUGMENT_MODES),
              default="standard", show_default=True,
              help="standard: flips, rotation, scaling, gamma, bias field, noise. gin-ipa: "
                   "random shallow-convnet re-texturing + consistency. remap: standard, plus "
                   "a copy through a random, often non-monotone intensity curve (other "
                   "contrasts) with wider noise, + consistency. adv-chain: standard, plus a "
                   "copy through noise, bias field, gamma, affine and smooth deformation "
                   "chained in random order, their parameters optimised against the current "
                   "model (--adv-steps), + consistency; 3-4x the CPU time "
                   "of standard. gin-ipa+adv-chain: the chain on the second GIN-IPA copy.")
@click.option("--adv-steps", type=click.IntRange(1, 5), default=1, show_default=True,
              help="adv-chain: gradient-ascent steps on the chain's parameters per sample.")
@click.option("--cooperative", is_flag=True,
              help="Also train a shape-correcting network on the segmenter's probabilities "
                   "(saved with the model; predict --refine uses it), with hard examples "
                   "from masking stage 2's bottleneck features (random and gradient-"
                   "targeted, channel-wise and spatial). Composes with every --augment.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.2, show_default=True,
              help="Fraction of subjects held out for validation Dice.")
@click.option("--channels", type=click.IntRange(min=2), default=None,
              help="Stage-2 width at full resolution (doubles per level; stage 1 half) "
                   "[default: planned, 8].")
@click.option("--levels", type=click.IntRange(min=2, max=6), default=None,
              help="U-net levels [default: planned from the patch, at most 5].")
@click.option("--memory-budget", type=ByteSize(), default="16G", show_default=True,
              help="Training memory the plan fits (a 16 GB GPU); prediction is planned "
                   "for CPU separately (see predict --max-memory).")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Learning rate.")
@click.option("--single-stage", is_flag=True, help="Baseline: stage 2 alone, no cascade.")
@click.option("--regions", type=click.Choice(["none", "brats"]), default="none",
              show_default=True, help="brats: WT/TC/ET uncertainty maps at prediction.")
@click.option("--temporal-context", "context", default="none", show_default=True,
              help="Cines: other frames fed beside each frame, comma-separated: 'ed' (frame "
                   "0), -1/+1 (neighbours). The model then needs the cine at predict time.")
@click.option("--phase-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Cines: draw frames up to 1 + this times as often the more their labels "
                   "differ from the first frame's (end systole most).")
@click.option("--phase-loss-weight", type=click.FloatRange(min=0), default=0.0,
              show_default=True, help="Cines: extra loss weight of voxels whose label "
                                      "differs from the first frame's.")
@click.option("--resume", is_flag=True, help="Continue the run saved in --out (with the same "
              "--augment and --cooperative).")
@device_option
@seed_option
@verbosity_options
def train_cmd(samplesheet, image_role, label_role, out, epochs, patch, stage1_factor, augment,
              adv_steps, cooperative, val_fraction, channels, levels, memory_budget, lr,
              single_stage, regions, context, phase_weight, phase_loss_weight, resume, device,
              seed) -> None:
    """Train both stages of the cascade on a samplesheet.

    Patch, levels, widths and the stage-1 factor are planned from the training images'
    median shape and spacing under --memory-budget (nnU-Net's experiment planning);
    the plan goes into the model card and is printed in one line. Options given
    explicitly override it.

    \b
    Example:
      medflow demo-cohort --kind cardiac --subjects 16 --out demo
      medflow segment-cascaded train --samplesheet demo/samplesheet.csv \\
          --image-role sa --label-role seg_sa --epochs 20 --augment gin-ipa --out model
      medflow segment-cascaded train --samplesheet demo/samplesheet.csv \\
          --augment adv-chain --adv-steps 1 --out model_adv
      medflow segment-cascaded train --samplesheet demo/samplesheet.csv \\
          --memory-budget 8G --out model
      medflow segment-cascaded train --samplesheet demo/samplesheet.csv \\
          --augment gin-ipa --cooperative --out model_coop
    """
    import torch

    from medflow.io.outputs import check_outputs
    from medflow.io.samplesheet import load_samplesheet
    from medflow.segment.workflow import train_model, train_outputs

    from medflow.segment.context import parse_context

    patch_size = tuple(int(v) for v in parse_triplet(patch, "--patch")) if patch else None
    try:
        context_frames = parse_context(context)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--temporal-context") from None
    roles = _roles(image_role)
    df = load_samplesheet(samplesheet, required_roles=(*roles, label_role))
    check_outputs(train_outputs(out),
                  [samplesheet, *(v for c in (*roles, label_role) for v in df[c] if v)])
    dev = resolve_device(device)
    torch.manual_seed(seed)
    with oom_is_transient():
        card = train_model(df, roles, label_role, out, epochs=epochs, patch=patch_size,
                           stage1_factor=stage1_factor, augment=augment,
                           val_fraction=val_fraction, channels=channels, levels=levels,
                           memory_budget=memory_budget, lr=lr,
                           stages=1 if single_stage else 2, regions=regions,
                           resume=resume, device=dev, seed=seed, samplesheet=samplesheet,
                           context=context_frames, phase_weight=phase_weight,
                           phase_loss_weight=phase_loss_weight, adv_steps=adv_steps,
                           cooperative=cooperative, progress=show_progress(), announce=_say)
    dice = card["validation"].get("dice", {})
    click.echo(f"{out}  validation Dice: " + (", ".join(f"{k} {v:.3f}" for k, v in dice.items())
                                               or "n/a"))


@segment_cascaded.command("predict")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Model folder written by train.")
@click.option("--input", "inputs", multiple=True, type=click.Path(path_type=Path),
              help="Image (repeat for several channels in the model's order).")
@click.option("--output", type=NiftiPath(),
              help="Label map to write (.nii is written through a memory map).")
@click.option("--probabilities", type=NiftiPath(),
              help="Also write class probabilities (X,Y,Z[,T],C float32).")
@click.option("--uncertainty", type=NiftiPath(),
              help="Also write uncertainty 0-100 (region models: one file per region).")
@click.option("--uncertainty-kind", type=click.Choice(["entropy", "disagreement"]),
              default="entropy", show_default=True)
@click.option("--tta", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Test-time flips per window.")
@click.option("--mc-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Monte-Carlo dropout draws per window.")
@click.option("--overlap", type=click.FloatRange(0, 0.9), default=None,
              help="Sliding-window overlap [default: the model's, 0.5, lowered to 0.25 or "
                   "0.125 when a volume would need more than 512 windows].")
@click.option("--max-memory", type=ByteSize(), default=None,
              help="Refuse (exit 2, or 65 when the input itself needs more) if the estimated "
                   "peak memory exceeds this; large volumes are cut into tiles to fit it "
                   "[default: no limit, tiles fit 2 GiB].")
@click.option("--samplesheet", type=click.Path(path_type=Path),
              help="Batch mode: segment every subject of this samplesheet.")
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path),
              help="Batch mode: results folder (<subject>/<subject>_<role>_seg.nii.gz).")
@click.option("--image-role", default=None, help="Batch mode: image column(s) [model's].")
@click.option("--save-probabilities", is_flag=True, help="Batch mode: also probabilities.")
@click.option("--save-uncertainty", is_flag=True, help="Batch mode: also uncertainty.")
@click.option("--ventricle-anatomy/--no-ventricle-anatomy", default=True, show_default=True,
              help="Cardiac short-axis models: blood pool outside the ventricles (LV not "
                   "ringed by myocardium, e.g. the atrium in the basal slice at end "
                   "systole; RV in a slice without myocardium) becomes background.")
@click.option("--calibration/--no-calibration", default=True, show_default=True,
              help="Use the calibrator stored with the model by 'calibrate' (if any) for "
                   "probabilities, uncertainty and labels.")
@click.option("--refine", is_flag=True,
              help="Pass each window's probabilities through the shape-correcting network "
                   "of a model trained with --cooperative (exit 65 if it has none); "
                   "labels, probabilities and uncertainty are then the refined ones. Not "
                   "with a stored calibrator (fitted on the unrefined output): add "
                   "--no-calibration.")
@device_option
@seed_option
@verbosity_options
def predict_cmd(model_dir, inputs, output, probabilities, uncertainty, uncertainty_kind, tta,
                mc_samples, overlap, max_memory, samplesheet, outdir, image_role,
                save_probabilities, save_uncertainty, ventricle_anatomy, calibration, refine,
                device, seed) -> None:
    """Segment images (3D, or every frame of a 4D cine) with a trained cascade.

    \b
    Example:
      medflow segment-cascaded predict --model model --input sa.nii.gz --output seg.nii.gz \\
          --uncertainty unc.nii.gz --tta 4
      medflow segment-cascaded predict --model model --samplesheet demo/samplesheet.csv \\
          --outdir results/segment
      medflow segment-cascaded predict --model model --input image.nii --output seg.nii \\
          --max-memory 2G
      medflow segment-cascaded predict --model model_coop --input sa.nii.gz \\
          --output seg.nii.gz --refine

    Peak memory depends on the model's patch and the memory target, not on the volume:
    stage 1 runs on windows of the grid it was trained on, stage 2 is stitched slab by slab,
    and a plane too large for the target is cut into tiles (same output).
    """
    from medflow.segment.calibrate import load_calibrator
    from medflow.segment.infer import return_freed_memory
    from medflow.segment.modelio import load_model
    from medflow.segment.cooperative import require_refiner
    from medflow.segment.workflow import predict_batch, predict_files

    single = bool(inputs or output)
    if single == bool(samplesheet or outdir):
        raise click.UsageError("give either --input/--output or --samplesheet/--outdir")
    if single and not (inputs and output):
        raise click.UsageError("--input and --output go together")
    if not single and not (samplesheet and outdir):
        raise click.UsageError("--samplesheet and --outdir go together")
    dev = resolve_device(device)
    return_freed_memory()
    model, card = load_model(model_dir, dev)
    calibrator = load_calibrator(model_dir, card) if calibration else None
    if refine:  # once, before any subject of a batch
        require_refiner(model, model_dir)
    if refine and calibrator is not None:
        raise click.UsageError("--refine: the model's calibrator was fitted on the "
                               "unrefined probabilities; add --no-calibration")
    if calibrator is not None and calibrator.net is not None:
        calibrator.net.to(dev)
    options = dict(tta=tta, mc=mc_samples, kind=uncertainty_kind, device=dev, seed=seed,
                   progress=show_progress(), overlap=overlap, max_memory=max_memory,
                   ventricle_anatomy=ventricle_anatomy, calibrator=calibrator, refine=refine)
    with oom_is_transient():
        if single:
            predict_files(model, card, model_dir, list(inputs), output, probabilities,
                          uncertainty, **options)
            click.echo(str(output))
        else:
            roles = _roles(image_role) if image_role else tuple(card["training"]["image_roles"])
            n = predict_batch(model, card, model_dir, samplesheet, outdir, roles,
                              save_probabilities, save_uncertainty, **options)
            click.echo(f"{outdir}  {n} subject(s)")



from medflow.segment.cli_calibrate import calibrate_cmd  # noqa: E402 (after the group)

segment_cascaded.add_command(calibrate_cmd)
