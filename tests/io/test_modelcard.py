"""Every tool's model folder is refused the same way when it is not usable: a file where
the folder should be, a card from a newer medflow, an architecture config that is not a
mapping (65, one line naming the path), a missing folder or card (66)."""

from __future__ import annotations

import json

import pytest

from medflow.errors import InvalidDataError, MissingInputError


def _readers():
    from medflow.cluster.card import FORMAT as CLUSTER, read_card as cluster_card
    from medflow.segment.modelio import FORMAT as SEGMENT, read_card as segment_card
    from medflow.superres.modelio import FORMAT as SUPERRES, read_card as superres_card

    return {"segment-cascaded": (SEGMENT, segment_card),
            "cluster-unsupervised": (CLUSTER, cluster_card),
            "super-resolve": (SUPERRES, superres_card)}


@pytest.fixture(params=["segment-cascaded", "cluster-unsupervised", "super-resolve"])
def tool(request, tmp_path):
    """(tool, its card reader, a folder with a valid card of that tool, a card writer)."""
    fmt, reader = _readers()[request.param]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")  # the card reader does not open it

    def write(**changes):
        card = {"format": fmt, "format_version": 1, "tool": request.param,
                "method": "latent", "config": {}}
        card.update(changes)
        (folder / "model.json").write_text(json.dumps(card))
        return folder

    return request.param, reader, folder, write


def test_a_valid_card_reads(tool):
    _, reader, _, write = tool
    assert reader(write())["format_version"] == 1


@pytest.mark.parametrize("version", [2, 99])
def test_card_from_a_newer_medflow_is_refused(tool, version):
    _, reader, folder, write = tool
    with pytest.raises(InvalidDataError, match="written by a newer medflow") as err:
        reader(write(format_version=version))
    assert err.value.exit_code == 65 and str(folder / "model.json") in err.value.message


@pytest.mark.parametrize("version", ["1", 0, None, True])
def test_bad_format_version_is_refused(tool, version):
    _, reader, _, write = tool
    with pytest.raises(InvalidDataError, match="format_version"):
        reader(write(format_version=version))


@pytest.mark.parametrize("config", [[], "unet", 3])
def test_config_that_is_not_a_mapping_is_65_not_a_crash(tool, config):
    _, reader, _, write = tool
    with pytest.raises(InvalidDataError, match="config"):
        reader(write(config=config))


def test_a_file_given_as_the_model_folder_is_65_not_missing(tool):
    _, reader, folder, write = tool
    write()
    with pytest.raises(InvalidDataError, match="not a folder") as err:
        reader(folder / "model.safetensors")
    assert err.value.exit_code == 65
    with pytest.raises(MissingInputError, match="model folder not found"):
        reader(folder / "absent")


def test_another_tools_card_names_the_tool_that_made_it(tool):
    name, reader, folder, _ = tool
    (folder / "model.json").write_text(json.dumps({"format": "medflow-annotate"}))
    with pytest.raises(InvalidDataError, match=f"not a {name} model "
                                               r"\(made by medflow-annotate\)"):
        reader(folder)
    (folder / "model.json").write_text("[1, 2]")
    with pytest.raises(InvalidDataError, match=r"made by an unknown tool"):
        reader(folder)


def test_refusal_reads_as_english_for_a_tool_named_with_a_vowel(tmp_path):
    from medflow.io.modelcard import read_model_card
    from medflow.motion.modelio import CARD, FORMAT, TOOL

    (tmp_path / CARD).write_text(json.dumps({"format": "medflow-segment-cascaded"}))
    with pytest.raises(InvalidDataError, match=f"not an {TOOL} model "
                                               r"\(made by medflow-segment-cascaded\)"):
        read_model_card(tmp_path, CARD, FORMAT, TOOL)
