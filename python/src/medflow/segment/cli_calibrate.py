"""`medflow segment-cascaded calibrate`: fit a post-hoc calibrator and store it with the model.

Kept beside ``cli.py`` (which registers it on the group) so that file stays readable.
"""

from __future__ import annotations

from pathlib import Path

import click

from medflow.options import device_option, resolve_device, seed_option, verbosity_options


@click.command("calibrate")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Model folder written by train; the calibrator is stored in it.")
@click.option("--samplesheet", required=True, type=click.Path(path_type=Path),
              help="Validation subjects with label maps (not the training subjects).")
@click.option("--method", type=click.Choice(["temperature", "local"]), default="local",
              show_default=True, help="temperature: one global T (baseline); local: a "
                                      "per-voxel T from the logits and their spread under "
                                      "intensity perturbations.")
@click.option("--image-role", default=None, help="Image column(s) [the model's].")
@click.option("--label-role", default=None, help="Label map column [the model's].")
@click.option("--copies", type=click.IntRange(0, 8), default=2, show_default=True,
              help="Re-textured (GIN) copies of each validation frame fitted on besides the "
                   "clean one.")
@click.option("--max-voxels", type=click.IntRange(min=100), default=20000, show_default=True,
              help="Voxels sampled per frame and copy (around the heart).")
@click.option("--frames", type=click.IntRange(min=1), default=5, show_default=True,
              help="Labelled frames per validation subject, evenly spaced over a cine.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Passes over the voxels when fitting the local network.")
@device_option
@seed_option
@verbosity_options
def calibrate_cmd(model_dir, samplesheet, method, image_role, label_role, copies, max_voxels,
                  frames, epochs, device, seed) -> None:
    """Fit a calibrator on labelled validation data and store it with the model
    (calibration.safetensors, a 'calibration' entry in model.json naming the weights'
    checksum, calibrate.json). predict then uses it unless --no-calibration.

    \b
    Example:
      medflow segment-cascaded calibrate --model model --samplesheet val.csv --method local
      medflow segment-cascaded predict --model model --input sa.nii.gz --output seg.nii.gz \\
          --probabilities prob.nii.gz
    """
    import torch

    from medflow.io.outputs import check_outputs
    from medflow.io.samplesheet import load_samplesheet
    from medflow.segment.calibrate import CALIBRATION, calibrate_model
    from medflow.segment.cli import oom_is_transient
    from medflow.segment.modelio import load_model

    dev = resolve_device(device)
    model, card = load_model(model_dir, dev)
    training = card.get("training", {})
    roles = tuple(r.strip() for r in (image_role or ",".join(training.get("image_roles", [])))
                  .split(",") if r.strip())
    label_role = label_role or training.get("label_role", "seg_sa")
    df = load_samplesheet(samplesheet, required_roles=(*roles, label_role))
    check_outputs([Path(model_dir) / n for n in (CALIBRATION, "calibrate.json")],
                  [samplesheet, *(v for c in (*roles, label_role) for v in df[c] if v)])
    torch.manual_seed(seed)
    with oom_is_transient():
        entry = calibrate_model(model, card, model_dir, df, roles, label_role, method,
                                copies=copies, max_voxels=max_voxels, epochs=epochs,
                                frames=frames,
                                seed=seed, device=dev, samplesheet=samplesheet)
    v = entry["validation"]
    after = v.get("ece_local", v["ece_temperature"])
    click.echo(f"{model_dir}  {method}: T {v['temperature']:.3f}, validation ECE "
               f"{v['ece_uncalibrated']:.4f} -> {after:.4f}")
