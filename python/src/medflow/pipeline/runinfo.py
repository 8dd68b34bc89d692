"""What a run records about itself (``pipeline_info/``) and the one line it ends with."""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from medflow import __version__
from medflow.io.atomic import atomic_path
from medflow.io.sidecar import write_json
from medflow.pipeline.stages import Stage

PACKAGES = ("numpy", "nibabel", "SimpleITK", "torch", "safetensors", "pandas", "pyarrow",
            "matplotlib", "click")


def write_run_info(info: Path, opts: Options, stages: list[Stage]) -> None:
    """``versions.json`` and ``params.json`` in ``pipeline_info/``."""
    versions = {"medflow": __version__, "python": platform.python_version(),
                "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}
    params["stages_run"] = [s.name for s in stages]
    params["command_line"] = " ".join(["medflow", *sys.argv[1:]]) if sys.argv else ""
    params["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for name, data in (("versions.json", versions), ("params.json", params)):
        with atomic_path(info / name) as tmp:
            write_json(data, tmp)


def summary_line(result: RunResult, outdir: Path) -> str:
    """One line: subjects done and failed, tasks run and cached, time, where the table is."""
    n = len(result.status)
    failed = result.failed_subjects
    counts = {k: sum(o.status == k for o in result.outcomes)
              for k in ("done", "cached", "failed", "skipped", "cancelled")}
    cohort_failed = [o.stage for o in result.failed_tasks if o.subject is None]
    text = (f"{n - len(failed)} of {n} subjects done, {len(failed)} failed"
            + (f" ({', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''})" if failed else "")
            + (f"; cohort stage(s) failed: {', '.join(cohort_failed)}" if cohort_failed else "")
            + f"; tasks: {counts['done']} run, {counts['cached']} cached, {counts['failed']} "
              f"failed, {counts['skipped']} skipped"
              + (f", {counts['cancelled']} cancelled" if counts["cancelled"] else "")
              + f"; {result.seconds:.0f} s; "
              f"table {outdir / 'cohort.parquet'}")
    return text
