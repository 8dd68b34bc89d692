"""Contract: main.nf, modules/ and conf/modules.config agree with medflow.pipeline.STAGES,
and every module's `medflow` command line (with its ext.args) is accepted by Click."""

import importlib.machinery
import importlib.util
import re
import subprocess
import sys

import click
import pytest

from medflow.cli import cli
from medflow.io.samplesheet import LABEL_PREFIXES
from medflow.pipeline.stages import STAGES
from nfsource import ROOT, all_processes, ext_args, includes, processes, publish_path, split

STAGE_IDS = [s.name for s in STAGES]


def module_of(stage):
    for module_proc, used_as, path in includes():
        if used_as == stage.process:
            return processes(path)[module_proc], path
    pytest.fail(f"main.nf includes no process for stage {stage.name} ({stage.process})")


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_module_folder_named_after_the_tool(stage):
    _, path = module_of(stage)
    expected = ROOT / "modules" / "local" / "/".join(w.replace("-", "_") for w in stage.command)
    assert path.parent == expected


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_outputs_match_stage(stage):
    proc, _ = module_of(stage)
    outputs = {emit: pattern.replace("${prefix}", "{subject}").replace("${meta.role}", "{role}")
               for emit, pattern in proc.outputs.items()}
    for name, template in stage.outputs.items():
        assert outputs.get(name) == template, f"{proc.name}: output {name}"


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_inputs_match_stage(stage):
    proc, _ = module_of(stage)
    names = proc.input_paths
    main = (ROOT / "main.nf").read_text()
    for item in stage.inputs:
        source, _, what = item.partition(":")
        if source == "samplesheet":
            assert names, proc.name
            assert "SAMPLESHEET_CHECK.out" in main
            continue
        wanted = what or source  # "model" is its own name
        assert wanted in names, f"{proc.name} has no path input '{wanted}' ({item})"
        if what:
            upstream = next(s for s in STAGES if s.name == source)
            assert f"{upstream.process}.out." in main, f"main.nf never reads {upstream.process}"
            assert STAGES.index(upstream) < STAGES.index(stage)


def test_workflow_calls_stages_in_order():
    main = (ROOT / "main.nf").read_text()
    calls = [m.start() for stage in STAGES
             for m in [re.search(rf"^\s*{stage.process}\(", main, re.M)]]
    assert len(calls) == len(STAGES) and calls == sorted(calls)
    # validation is the first task: every stage's data flows from it
    assert main.index("SAMPLESHEET_CHECK(") < min(calls)


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_published_paths_follow_results_layout(stage):
    expected = "${params.outdir}/" + stage.name
    if stage.scope == "subject":
        expected += "/${meta.id}"
    assert publish_path(stage.process) == expected


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_ext_args_are_the_stage_args(stage):
    args = ext_args(stage.process)
    assert args == {k: v for k, v in stage.args.items()} or (
        set(stage.args) == {"image"} and args == {"image": stage.args["image"]})


def test_label_rule_is_the_samplesheet_rule():
    # the module picks --role from meta.kind, which bin/medflow-samplesheet sets with
    # medflow.io.samplesheet.is_label_role; no second copy of the prefixes in Groovy
    text = "".join(p.body for p in all_processes().values())
    assert not any(f"{prefix}|" in text for prefix in LABEL_PREFIXES)


def placeholder_values(tmp_path, kind, device):
    files = {n: tmp_path / n for n in ("image.nii.gz", "label.nii.gz", "seg.nii.gz")}
    for f in files.values():
        f.write_bytes(b"")
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    return {
        "image": str(files["image.nii.gz"]), "source": str(files["image.nii.gz"]),
        "model": str(model), "prefix": "sub-000",
        "meta.role": "seg_sa" if kind == "label" else "sa", "role": kind, "device": device,
        "inputs": f"--input {files['image.nii.gz']}", "task.cpus": "2",
        "samplesheet": str(tmp_path / "samplesheet.csv"), "meta.source": "/data/sheet.csv",
        "meta.image_role": "sa", "meta.label_role": "seg_sa",
        "seg": str(files["seg.nii.gz"]), "prior": str(model),
        "budget": "--budget 5%",
        "views": f"--la-4ch {files['label.nii.gz']}",  # motion: the long-axis flags
        "mode": "fit",  # motion: `fit`, or `predict --model M` with --motion_model
        "probabilities": "",  # segment: `--probabilities F` with --save_probabilities
    }


def substitute(command, values, args):
    def repl(m):
        key = m.group(1)
        if key == "args":
            return args
        if key not in values:
            pytest.fail(f"no placeholder value for ${{{key}}} in: {command}")
        return values[key]
    return re.sub(r"\$\{([\w.]+)\}", repl, command)


def click_command(words):
    """The Click command for `medflow <words...>` and the remaining arguments."""
    cmd, rest = cli, list(words)
    ctx = click.Context(cli)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        cmd = cmd.get_command(ctx, rest.pop(0))
    return cmd, rest


CASES = [(s, kind, device) for s in STAGES for kind in s.args or {"image": ""}
         for device in (("cpu", "cuda") if s.device == "gpu" else ("cpu",))]


@pytest.mark.parametrize("stage,kind,device", CASES,
                         ids=[f"{s.name}-{k}-{d}" for s, k, d in CASES])
def test_module_command_line_accepted_by_click(stage, kind, device, tmp_path):
    proc, _ = module_of(stage)
    commands = [c for c in proc.medflow_commands() if c.startswith("medflow ")]
    assert len(commands) == 1, f"{proc.name}: one medflow command, got {commands}"
    args = ext_args(stage.process).get(kind, "")
    line = substitute(commands[0], placeholder_values(tmp_path, kind, device), args)
    words = split(line)[1:]
    assert words[:len(stage.command)] == list(stage.command), line
    cmd, rest = click_command(words)
    assert cmd is not None and not cmd.name.startswith("_"), line
    ctx = cmd.make_context(" ".join(["medflow", *stage.command]), rest)  # raises on bad usage
    if "device" in ctx.params:
        assert ctx.params["device"] == device


def cohort_columns(proc, args):
    """The header of the samplesheet a cohort module writes, as STAGES.columns names it."""
    script = proc.script_block()
    fixed = re.search(r'\["subject,\$\{meta\.image_role\},\$\{meta\.label_role\}"\]', script)
    if fixed:
        return {"{image}", "{label}"}
    base = re.search(r"def header\s*=\s*\(\[([^\]]*)\]", script)
    keys = re.search(r"def keys\s*=\s*\[(.*)\]\s*$", script, re.M)
    if not (base and keys):
        pytest.fail(f"{proc.name}: cannot read the samplesheet header it writes")
    spec = re.search(r"--regions[ =](\S+)", args).group(1)
    region_keys = re.search(rf"{spec}:\s*\[([^\]]*)\]", keys.group(1))
    columns = set(re.findall(r"'([^']+)'", base.group(1))) - {"subject"}
    # columns added only with an optional input: `(probs ? ['prob'] : [])`
    header = re.search(r"def header\s*=.*$", script, re.M).group(0)
    columns |= set(re.findall(r"\? \['([^']+)'\] : \[\]", header))
    return columns | {f"unc_{k}" for k in re.findall(r"'([^']+)'", region_keys.group(1))}


@pytest.mark.parametrize("stage", [s for s in STAGES if s.columns], ids=lambda s: s.name)
def test_cohort_samplesheet_columns_match_stage(stage):
    proc, _ = module_of(stage)
    assert cohort_columns(proc, ext_args(stage.process).get("image", "")) == set(stage.columns)


def test_click_check_catches_a_bad_flag(tmp_path):
    stage = STAGES[0]
    cmd, rest = click_command([*stage.command, "--no-such-flag"])
    with pytest.raises(click.UsageError):
        cmd.make_context("medflow", rest)


def load_bin(name):
    path = ROOT / "bin" / name
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_samplesheet_check_command_line_accepted(tmp_path):
    proc = all_processes()["SAMPLESHEET_CHECK"]
    (command,) = proc.medflow_commands()
    line = substitute(command, placeholder_values(tmp_path, "image", "cpu"), "")
    words = split(line)
    assert words[0] == "medflow-samplesheet"
    load_bin(words[0]).main.make_context(words[0], words[1:])


def run_check(tmp_path, text):
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text(text)
    for name in ("a/sa.nii.gz", "a/seg_sa.nii.gz"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    out = tmp_path / "valid.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "bin" / "medflow-samplesheet"),
                           "--samplesheet", str(sheet), "--source", str(sheet), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    return proc, out


def test_samplesheet_check_lists_roles_with_kind_and_pair(tmp_path):
    proc, out = run_check(tmp_path, "subject,sa,seg_sa\nsub-000,a/sa.nii.gz,a/seg_sa.nii.gz\n")
    assert proc.returncode == 0, proc.stderr
    rows = out.read_text().splitlines()
    assert rows[0] == "subject,role,kind,pair,path,series"
    assert rows[1] == f"sub-000,sa,image,,{tmp_path}/a/sa.nii.gz,"
    assert rows[2] == f"sub-000,seg_sa,label,sa,{tmp_path}/a/seg_sa.nii.gz,"


def test_samplesheet_check_names_row_and_column(tmp_path):
    proc, out = run_check(tmp_path, "subject,sa\nsub-000,a/sa.nii.gz\nsub 1,a/nothere.nii.gz\n")
    assert proc.returncode == 65 and not out.exists()
    assert "row 3, column 'subject'" in proc.stderr
    assert "row 3, column 'sa': file not found" in proc.stderr
    proc, _ = run_check(tmp_path, "subject,sa\nsub-000,a/nothere.nii.gz\n")
    assert proc.returncode == 66 and "row 2, column 'sa'" in proc.stderr


def test_motion_module_predicts_with_a_model(tmp_path):
    """With --motion_model the motion module runs `predict --model M` on the same flags:
    Click accepts that line too."""
    stage = next(s for s in STAGES if s.name == "motion")
    proc, _ = module_of(stage)
    (command,) = [c for c in proc.medflow_commands() if c.startswith("medflow ")]
    values = placeholder_values(tmp_path, "image", "cpu")
    values["mode"] = f"predict --model {values['model']}"
    words = split(substitute(command, values, ext_args(stage.process).get("image", "")))[1:]
    assert words[:2] == ["estimate-motion-mesh", "predict"]
    cmd, rest = click_command(words)
    ctx = cmd.make_context("medflow estimate-motion-mesh predict", rest)
    assert ctx.params["model"] == tmp_path / "model"


def test_save_probabilities_threads_through_both_runners(tmp_path):
    """--save_probabilities: the segment module adds `--probabilities <prefix>_<role>_prob
    .nii.gz` (Click accepts it; the name is the stage's optional output), main.nf passes the
    parameter and the probabilities on to the uncertainty stage, and the parameter is in
    nextflow.config and the schema with the local runner's help text's facts."""
    import json

    from medflow.pipeline.cli import pipeline

    segment = next(s for s in STAGES if s.name == "segment")
    proc, _ = module_of(segment)
    (command,) = [c for c in proc.medflow_commands() if c.startswith("medflow ")]
    values = placeholder_values(tmp_path, "image", "cpu")
    values["probabilities"] = "--probabilities sub-000_sa_prob.nii.gz"
    words = split(substitute(command, values, ext_args(segment.process)["image"]))[1:]
    cmd, rest = click_command(words)
    ctx = cmd.make_context("medflow segment-cascaded predict", rest)
    name = segment.outputs["prob"].format(subject="sub-000", role="sa")
    assert str(ctx.params["probabilities"]) == name
    assert segment.optional["prob"] == "save_probabilities"
    assert 'save_probabilities ? "--probabilities ${prefix}_${meta.role}_prob.nii.gz"' in \
        proc.script_block()
    main = (ROOT / "main.nf").read_text()
    assert "SEGMENT(ch_to_segment, model, params.save_probabilities)" in main
    assert "SEGMENT.out.prob" in main
    assert re.search(r"^\s*save_probabilities\s*=\s*false$",
                     (ROOT / "nextflow.config").read_text(), re.M)
    schema = json.loads((ROOT / "nextflow_schema.json").read_text())
    props = {k: v for group in schema["$defs"].values() for k, v in group["properties"].items()}
    assert props["save_probabilities"]["type"] == "boolean"
    assert props["save_probabilities"]["default"] is False
    option = next(p for p in pipeline.params if p.name == "save_probabilities")
    assert option.is_flag and "40 MB" in option.help and "40 MB" in \
        props["save_probabilities"]["description"]
    # the uncertainty stage reads the segment stage's probabilities per class
    uncertainty = next(s for s in STAGES if s.name == "uncertainty")
    assert "--prob-channels classes" in ext_args(uncertainty.process)["image"]
    assert uncertainty.columns["prob"] == "segment:prob"
