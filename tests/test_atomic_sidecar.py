"""Atomic outputs, sidecars and the error contract."""

from __future__ import annotations

import json

import click
import pytest

from medflow.cli import cli
from medflow.errors import InvalidDataError
from medflow.io.atomic import atomic_outputs
from medflow.io.sidecar import Timer, make_sidecar, sidecar_path, write_json


def test_outputs_appear_together_on_success(tmp_path):
    with atomic_outputs() as out:
        out.path(tmp_path / "a.nii.gz").write_text("a")
        out.path(tmp_path / "b.json").write_text("b")
        assert not (tmp_path / "a.nii.gz").exists()
    assert (tmp_path / "a.nii.gz").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.json"]


def test_nothing_left_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_outputs() as out:
            out.path(tmp_path / "a.nii.gz").write_text("a")
            raise RuntimeError("killed half way")
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_no_output_folder_it_made(tmp_path):
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "other.txt").write_text("another writer's file")
    with pytest.raises(RuntimeError):
        with atomic_outputs() as out:
            out.path(tmp_path / "new" / "sub" / "a.nii.gz").write_text("a")
            out.path(tmp_path / "new" / "b.json").write_text("b")
            out.path(tmp_path / "kept" / "c.json").write_text("c")
            raise RuntimeError("killed half way")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept", "other.txt"]


def test_temporary_keeps_compound_suffix(tmp_path):
    with atomic_outputs() as out:
        tmp = out.path(tmp_path / "x.nii.gz")
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_text("")


def test_sidecar_contents(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello")
    sc = make_sidecar("medflow test", {"a": 1}, {"image": src}, Timer())
    assert sc["inputs"]["image"]["sha256"].startswith("2cf24dba")
    assert sc["tool"] == "medflow test" and "total_s" in sc["timings"]
    write_json(sc, sidecar_path(tmp_path / "out.nii.gz"))
    assert json.loads((tmp_path / "out.json").read_text())["parameters"] == {"a": 1}


def _group_with(exc):
    @cli.command("_raise", hidden=True)
    def _raise():
        raise exc

    return cli


@pytest.mark.parametrize("exc,code", [
    (InvalidDataError("bad voxels", "x.nii.gz"), 65),
    (MemoryError(), 75),
    (ZeroDivisionError("boom"), 1),
])
def test_exit_codes_and_one_line_errors(runner, exc, code):
    from medflow.cli import COMMANDS

    @click.command("raiser")
    def raiser():
        raise exc

    COMMANDS["_raiser"] = ("tests_raiser:raiser", "test only")
    import sys
    import types

    sys.modules["tests_raiser"] = types.SimpleNamespace(raiser=raiser)
    try:
        result = runner.invoke(cli, ["_raiser"])
    finally:
        del COMMANDS["_raiser"]
    assert result.exit_code == code
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("medflow: error:")
    assert "Traceback" not in result.output


def test_outputs_get_the_usual_file_mode(tmp_path):
    import os

    with atomic_outputs() as out:
        out.path(tmp_path / "a.txt").write_text("a")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
