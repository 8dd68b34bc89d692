"""The command-line contract shared by every tool (DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys

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
