"""The command-line contract shared by every tool (DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medflow import __version__
from medflow.cli import COMMANDS, cli

TOOLS = ["preprocess", "segment-cascaded", "estimate-motion-mesh", "super-resolve",
         "cluster-unsupervised", "suggest-annotation", "score-uncertainty"]


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_every_tool(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in TOOLS + ["demo-cohort", "pipeline", "report"]:
        assert name in result.output


def test_unbuilt_tools_say_so_and_exit_1(runner):
    for name, (target, _) in COMMANDS.items():
        if target is None:
            result = runner.invoke(cli, [name, "--anything"])
            assert result.exit_code == 1, name
            assert "not built yet" in result.output


def test_unknown_command_is_usage_error(runner):
    assert runner.invoke(cli, ["no-such-tool"]).exit_code == 2


def test_every_built_command_has_help_with_example(runner):
    for name, (target, _) in COMMANDS.items():
        if target is not None:
            result = runner.invoke(cli, [name, "--help"])
            assert result.exit_code == 0, name
            assert "Example" in result.output, name
            assert "--verbose" in result.output and "--quiet" in result.output, name


def test_help_does_not_import_torch():
    code = ("import sys; from medflow.cli import cli; "
            "import click.testing as t; t.CliRunner().invoke(cli, ['--help']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "medflow", "--version"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and __version__ in out.stdout


@pytest.mark.parametrize("args", [
    ["preprocess", "--input", "{img}", "--output", "{tmp}/out.mha"],
    ["segment-cascaded", "predict", "--model", "{tmp}", "--input", "{img}", "--output",
     "{tmp}/seg.png"],
    ["segment-cascaded", "predict", "--model", "{tmp}", "--input", "{img}", "--output",
     "{tmp}/seg.nii.gz", "--uncertainty", "{tmp}/unc.nrrd"],
    ["segment-cascaded", "predict", "--model", "{tmp}", "--input", "{img}", "--output",
     "{tmp}/seg.nii.gz", "--probabilities", "{tmp}/prob.npy"],
    ["super-resolve", "predict", "--method", "sdf", "--input", "{img}", "--output",
     "{tmp}/hr_{{frame}}.mhd"],
    ["super-resolve", "predict", "--method", "sdf", "--input", "{img}", "--output",
     "{tmp}/hr.nii.gz", "--image", "{img}", "--output-image", "{tmp}/hr.nii.gzz"],
    ["super-resolve", "predict", "--method", "sdf", "--input", "{img}", "--output",
     "{tmp}/HR.NII.GZ"],  # the atomic writer's temporary name needs the lower-case suffix
], ids=["preprocess", "segment", "segment-uncertainty", "segment-probabilities",
        "super-resolve", "super-resolve-image", "upper-case"])
def test_an_output_image_name_nibabel_cannot_write_is_a_usage_error_first(runner, tmp_path,
                                                                          args):
    """Every image output is NIfTI: another extension is exit 2 before any file is read."""
    img = tmp_path / "missing_input.nii.gz"  # not even there: the name is checked first
    result = runner.invoke(cli, [a.format(img=img, tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert ".nii" in result.output and "\n" not in result.output.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
