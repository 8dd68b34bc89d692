"""What the two commands do, between resolving their options and printing a line.

``train_model``: read (a sample of) the cohort's series, train, save the model folder.
``assign_images``: stream every series through a model into ``clusters.parquet``, the
montage, the map and the sidecar (scores and the column check included).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import click

from medflow.cluster.assign import Assigner, series_items
from medflow.cluster.catalogue import Entry, iter_series
from medflow.cluster.data import collect, pick_entries
from medflow.cluster.encoder import EncoderConfig, TrainConfig
from medflow.cluster.figures import embedding_map, montage
from medflow.cluster.modelio import TOOL, load_model, save_model
from medflow.cluster.table import ClusterTable, add_column_flags, summary
from medflow.errors import InvalidDataError
from medflow.io.atomic import atomic_outputs
from medflow.io.outputs import output_error, output_folder, remove_new_folders
from medflow.io.sidecar import Timer, make_sidecar, write_json

log = logging.getLogger("medflow")


def listing_digest(entries: list[Entry]) -> str:
    """SHA-256 of the image list (path, size, modification time): the identity of a
    cohort without hashing every image again (the pipeline hashes its inputs itself)."""
    import hashlib

    h = hashlib.sha256()
    for e in entries:
        st = e.path.stat() if e.path.exists() else None
        h.update(f"{e.path}\t{st.st_size if st else -1}\t{st.st_mtime_ns if st else -1}\n"
                 .encode())
    return h.hexdigest()


def _no_images(source: Path, skipped: list) -> InvalidDataError:
    why = f"; {len(skipped)} unreadable, e.g. {skipped[0][1]}" if skipped else ""
    return InvalidDataError(f"no readable image found{why}", source)


def train_model(entries: list[Entry], source: Path, out: Path, enc: EncoderConfig,
                cfg: TrainConfig, k: int | None, seed: int, device: str,
                parameters: dict) -> dict:
    """Train on the cohort's own series and write the model folder; returns the card."""
    import torch

    timer = Timer()
    chosen = pick_entries(entries, cfg.max_series, seed)
    data = collect(chosen, enc.positions, enc.frames, 2 * enc.size)
    timer.mark("read_s")
    n = len(data.series)
    if n == 0:
        raise _no_images(source, data.skipped)
    if k is not None and k > n:
        raise click.UsageError(f"--k {k} is more than the {n} image(s) that could be read "
                               f"from {source}")
    if n < 2:
        raise InvalidDataError(f"only {n} readable image: clustering needs at least 2", source)
    from medflow.cluster.train import fit

    cpu0 = os.times()
    model, extra, facts = fit(data, enc, cfg, k, seed, device)
    cpu1 = os.times()
    timer.mark("train_s")
    card = {"training": {"series": n, "slices": len(data), "entries": len(chosen),
                         "entries_available": len(entries), "skipped": len(data.skipped),
                         "skipped_files": [{"path": p, "reason": r} for p, r in data.skipped],
                         "source": str(source), "source_listing_sha256": listing_digest(chosen),
                         "seed": seed, "device": device, "torch_threads": torch.get_num_threads(),
                         "train_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 2),
                         **facts},
            "hyperparameters": {**{k2: v for k2, v in vars(cfg).items() if k2 != "extra"}},
            "parameters": parameters, "timings": timer.as_dict()}
    save_model(out, model, extra, card)
    return card


def assign_images(model_dir: Path, entries: list[Entry], source: Path, out: Path,
                  device: str, with_truth: bool, parameters: dict) -> dict:
    """Assign every series; write clusters.parquet (+ .json), montage.png and map.png.

    Returns:
        The summary: images, skipped, cluster sizes, scores (with truth), column check.
    """
    timer = Timer()
    model, extra, card = load_model(model_dir, device)
    cfg = model.cfg
    with_columns = any(e.column for e in entries)
    skipped: list[tuple[str, str]] = []
    created: list[Path] = []  # removed again when the command fails
    output_folder(out, created)  # 73 when it cannot be made
    try:  # the streamed table is written next to its final place (a full disk: 73)
        fd, tmp = tempfile.mkstemp(prefix=".clusters.", suffix=".parquet", dir=out)
    except OSError as exc:
        remove_new_folders(created)
        raise output_error(exc, out) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        table = ClusterTable(tmp, with_truth, with_columns)
        assigner = Assigner(model, extra, device)
        items = series_items(iter_series(entries, skipped), cfg.positions, cfg.frames,
                             2 * cfg.size)
        for a in assigner.run(items):
            table.add(a)
        table.close()
        timer.mark("assign_s")
        if table.n == 0:
            raise _no_images(source, skipped)
        checks = table.checks()
        facts = summary(table, skipped, checks)
        final = out / "clusters.parquet"
        with atomic_outputs() as o:
            table_tmp = o.path(final)
            if with_columns:
                add_column_flags(tmp, table_tmp, checks)
            else:
                os.replace(tmp, table_tmp)
            _figures(o, out, table, table_tmp)
            timer.mark("total_s")
            inputs = {"model_weights": model_dir / "model.safetensors",
                      "model_card": model_dir / "model.json"}
            if source.is_file():
                inputs["samplesheet"] = source
            write_json(make_sidecar(TOOL, parameters, inputs, timer, subcommand="assign",
                                    input_listing_sha256=listing_digest(entries),
                                    model_format=card["format"], **facts),
                       o.path(out / "clusters.json"))
    except BaseException:
        tmp.unlink(missing_ok=True)
        remove_new_folders(created)
        raise
    tmp.unlink(missing_ok=True)
    return facts


def _figures(o, out: Path, table: ClusterTable, written: Path) -> None:
    """montage.png and map.png (the map reads three columns back from the table)."""
    import pyarrow.parquet as pq

    cols = ["map_x", "map_y", "cluster"] + (["flagged"] if table.with_columns else [])
    t = pq.read_table(str(written), columns=cols).to_pandas()
    flagged = t["flagged"].to_numpy(bool) if "flagged" in t else None
    montage(table.typical_members(), dict(table.sizes), o.path(out / "montage.png"),
            "typical members per cluster (closest to the centre first)")
    embedding_map(t["map_x"].to_numpy(), t["map_y"].to_numpy(), t["cluster"].to_numpy(),
                  flagged, o.path(out / "map.png"))
