"""The `medflow` entry point: one Click group, one subcommand per tool, loaded lazily.

Subcommands are imported only when run, so `medflow --help` stays instant (no torch import).
Every failure leaves through the exit-code contract in medflow.errors.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import signal
import sys
import traceback

import click

from medflow import __version__
from medflow.errors import (EXIT_BUG, MAX_BYTES_ANY_MACHINE, InternalError, Interrupted,
                            InvalidDataError, MedflowError, NotBuiltError, TransientError,
                            requested_bytes, size_text)
from medflow.options import is_debug, verbosity_options

# name -> (import path of the click command, or None while not built; one-line help)
COMMANDS: dict[str, tuple[str | None, str]] = {
    "preprocess": ("medflow.preprocess.cli:preprocess",
                   "Reorient, resample, normalise and crop images (NIfTI, MHA, NRRD, DICOM)."),
    "segment-cascaded": ("medflow.segment.cli:segment_cascaded",
                         "Two-stage memory-efficient cascaded U-net: train and predict."),
    "estimate-motion-mesh": ("medflow.motion.cli:estimate_motion_mesh",
                             "3D heart mesh and its motion from 2D cine; EF and strain."),
    "super-resolve": ("medflow.superres.cli:super_resolve",
                      "Thick-slice segmentations to high-resolution 3D shapes."),
    "cluster-unsupervised": ("medflow.cluster.cli:cluster_unsupervised",
                             "Categorise unlabelled images (views, sequences) without labels."),
    "suggest-annotation": ("medflow.annotate.cli:suggest_annotation",
                           "Pick the subjects (or slices) most worth annotating next."),
    "score-uncertainty": ("medflow.uncertainty.cli:score_uncertainty",
                          "QU-BraTS uncertainty score and calibration measures."),
    "demo-cohort": ("medflow.phantom.cli:demo_cohort",
                    "Write a synthetic cohort with known ground truth."),
    "samplesheet": ("medflow.samplesheet.cli:samplesheet",
                    "Write a samplesheet for a folder of UK Biobank zips."),
    "pipeline": ("medflow.pipeline.cli:pipeline", "Run the whole pipeline over a samplesheet."),
    "report": ("medflow.report.cli:report", "HTML report of a results folder."),
}


def _not_built(name: str, summary: str) -> click.Command:
    @click.command(name=name, help=f"{summary}\n\nNot built yet in medflow {__version__}.",
                   context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple) -> None:
        raise NotBuiltError(f"'{name}' is not built yet in medflow {__version__}")

    return command


def _translate(exc: BaseException) -> MedflowError:
    """Map exceptions from libraries onto the exit-code contract."""
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or "OutOfMemoryError" in name or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()):
        wanted = requested_bytes(exc)
        if wanted is not None and wanted > MAX_BYTES_ANY_MACHINE:
            # no retry can give this much memory: the input or an option asks too much
            return InvalidDataError(f"the inputs ask for {size_text(wanted)} of memory, more "
                                    "than any machine holds; check the image header's size "
                                    "and the size options")
        return TransientError(f"out of memory ({exc}); retry with more memory or smaller patches")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        from medflow.io.outputs import output_error  # a write outside atomic_outputs

        return output_error(exc, exc.filename)
    return InternalError(f"unexpected {name}: {exc} (rerun with --debug for the traceback)")


class MedflowGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, summary = COMMANDS[name]
        if target is None:
            return _not_built(name, summary)
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary + ("" if target else " [not built yet]"))
                for name, (target, summary) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the one place unexpected errors are turned into exit codes
            if is_debug():
                traceback.print_exc()
            raise _translate(exc) from exc


@click.group(cls=MedflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medflow")
@verbosity_options
def cli() -> None:
    """medflow: published imaging methods as tools, chained into a cohort pipeline.

    \b
    Example:
      medflow demo-cohort --kind cardiac --subjects 4 --out demo
      medflow preprocess --input demo/sub-000/sa.nii.gz --output sa_1mm.nii.gz --spacing 1.25,1.25,keep
    """
    logging.getLogger("medflow").debug("medflow %s", __version__)


def _interrupt(signum: int, frame) -> None:
    raise Interrupted(signum)


def main() -> None:
    """The console script. SIGINT and SIGTERM unwind the command (its atomic outputs
    discard their temporaries), then the process dies by that same signal, as a killed
    program does (128 + n to a shell and to Nextflow, which retries it as a signal); it
    never exits 130-145 by choice. ``medflow pipeline`` handles them itself (exit 130)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    # A parent may have blocked them (an inherited signal mask: a test runner's worker
    # thread did, and the tool then ignored SIGINT); a blocked signal never reaches us.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        cli.main(prog_name="medflow")
    except SystemExit:
        raise
    except Interrupted as exc:
        click.echo(f"medflow: interrupted by {exc.name}; no partial output was left",
                   err=True)
        signal.signal(exc.signum, signal.SIG_DFL)
        os.kill(os.getpid(), exc.signum)
        sys.exit(128 + exc.signum)  # not reached: the signal ends the process
    except BaseException:  # pragma: no cover - last resort, never a bare traceback
        sys.exit(EXIT_BUG)


if __name__ == "__main__":
    main()
