"""Model folders: round trip, hash check, architecture check, no unpickling, shipped-model lookup."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.models.card import ModelCard, card_markdown
from pipeline.models.folder import CARD, WEIGHTS, load_model, read_card, resolve_model


def test_a_saved_model_loads_to_the_same_outputs(model_factory) -> None:  # noqa: ANN001
    folder = model_factory("slices", k=3)
    a, b = load_model(folder), load_model(folder)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.net(x), b.net(x))
    card = read_card(folder)
    assert len(card.weights_sha256) == 64 and card.parameters > 0
    assert (folder / "README.md").read_text().startswith(f"# porelab model `{card.name}`")
    assert not a.net.training


def test_folder_without_weights_is_one_sentence(model_factory, tmp_path: Path) -> None:  # noqa: ANN001
    src = model_factory("slices")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / CARD).write_text((src / CARD).read_text())
    with pytest.raises(UserError, match=r"has no weights.safetensors"):
        load_model(tmp_path / "m")
    with pytest.raises(UserError, match=r"has no model.json"):
        read_card(tmp_path)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in (CARD, WEIGHTS):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


def test_changed_weights_are_refused_by_their_hash(model_factory, tmp_path: Path) -> None:  # noqa: ANN001
    folder = _copy(model_factory("slices"), tmp_path / "m")
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (folder / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256 differs"):
        load_model(folder)


def test_weights_that_do_not_fit_model_json_are_refused(model_factory, tmp_path: Path) -> None:  # noqa: ANN001
    folder = _copy(model_factory("slices", k=1), tmp_path / "m")
    card = json.loads((folder / CARD).read_text())
    card["architecture"]["in_channels"] = 3  # the weights are for 1 channel
    card["weights_sha256"] = ""
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(UserError, match="do not fit the architecture"):
        load_model(folder)


def test_a_pickle_in_place_of_the_weights_is_never_unpickled(model_factory, tmp_path: Path) -> None:  # noqa: ANN001
    folder = _copy(model_factory("slices"), tmp_path / "m")

    class Boom:
        def __reduce__(self):  # noqa: ANN204
            return (Path(tmp_path / "pwned").touch, ())

    (folder / WEIGHTS).write_bytes(pickle.dumps({"x": Boom()}))
    card = json.loads((folder / CARD).read_text())
    card["weights_sha256"] = ""
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_model(folder)
    assert not (tmp_path / "pwned").exists()


def test_model_json_errors_name_the_key(model_factory, tmp_path: Path) -> None:  # noqa: ANN001
    folder = _copy(model_factory("slices"), tmp_path / "m")
    card = json.loads((folder / CARD).read_text())
    card["architecture"]["name"] = "builtins.eval"
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(UserError, match=r"architecture.name"):
        read_card(folder)
    card["architecture"]["name"] = "unet"
    card["schema_version"] = 99
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(UserError, match="newer than this porelab"):
        read_card(folder)
    (folder / CARD).write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_card(folder)


def test_unknown_model_reference_lists_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such model folder"):
        resolve_model(tmp_path / "nothing")


def test_card_markdown_states_the_training(model_factory) -> None:  # noqa: ANN001
    card = read_card(model_factory("volume"))
    card = card.model_copy(update={"training": {"samples": {"train": 10, "val": 2}, "seconds": 12.5},
                                   "metrics": {"val": {"iou_pore": 0.9}, "test": {"spheres": {"iou_pore": 0.91}}}})
    md = card_markdown(ModelCard.model_validate(card.model_dump()))
    assert "3D U-Net" in md and "samples" in md and "0.91" in md and card.weights_sha256 in md
    assert np.isfinite(card.parameters)
