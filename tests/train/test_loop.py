"""The training loop in one process: it learns, it is reproducible, and a stopped run resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.models.folder import load_model, read_card
from pipeline.train.config import Train2DSettings, Train3DSettings
from pipeline.train.run import train_model

FAST = dict(patch=(32, 32), tile=(96, 96), batch_size=4, steps_per_epoch=6, net={"features": 4, "depth": 2},
            workers={"executor": "local", "cpus_per_worker": 1}, val_slices=4, lr=5e-3)


def _train(root: Path, dataset: Path, *, seed: int = 0, stage_hash: str = "h", **kw: object):  # noqa: ANN202
    s = Train2DSettings(**{**FAST, **kw})
    return train_model(s, root=root, dataset=dataset, seed=seed, stage_hash=stage_hash, name="t")


def _weights(model: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model / "weights.safetensors"))


def test_training_writes_a_model_history_checkpoints_and_figures(tiny_dataset: Path, tmp_path: Path) -> None:
    r = _train(tmp_path / "a", tiny_dataset, epochs=3, slices=3)
    card = read_card(r.model)
    assert card.task == "segment" and card.input.slices == 3 and card.architecture.in_channels == 3
    assert card.training["samples"] == {"test": 1, "train": 6, "val": 1} and card.training["data_hash"]
    for key in ("ce", "accuracy", "iou_pore", "iou_solid", "dice", "porosity_abs_error"):
        assert key in card.metrics["val"]
    assert [row["epoch"] for row in r.history] == [1, 2, 3]
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]  # it learns
    for name in ("curves.png", "epochs.png", "prediction.png"):
        assert (r.root / "figures" / name).stat().st_size > 1000
    assert (r.root / "history.csv").read_text().splitlines()[0].startswith("epoch,train_loss")
    assert len(list((r.root / "checkpoints").glob("epoch-*"))) <= 3
    load_model(r.model)  # loads back


def test_same_seed_same_weights_other_seed_other_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    a = _weights(_train(tmp_path / "a", tiny_dataset, epochs=1).model)
    b = _weights(_train(tmp_path / "b", tiny_dataset, epochs=1).model)
    c = _weights(_train(tmp_path / "c", tiny_dataset, epochs=1, seed=1).model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_stopped_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(
        tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = _weights(_train(tmp_path / "full", tiny_dataset, epochs=3, keep="last").model)
    import pipeline.train.loop as loop

    real = loop.validate
    calls = {"n": 0}

    def dies_in_epoch_3(*a: object, **kw: object):  # noqa: ANN202
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **kw)

    monkeypatch.setattr(loop, "validate", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "cut", tiny_dataset, epochs=3, keep="last")
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("epoch-*")) == ["epoch-0001", "epoch-0002"]
    monkeypatch.setattr(loop, "validate", real)
    resumed = _train(tmp_path / "cut", tiny_dataset, epochs=3, keep="last")
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    w = _weights(resumed.model)
    assert all(torch.equal(full[k], w[k]) for k in full)
    # another stage hash starts over
    other = _train(tmp_path / "cut", tiny_dataset, epochs=1, stage_hash="other")
    assert [r["epoch"] for r in other.history] == [1]


def test_3d_refinement_trains_on_probabilities(tiny_dataset: Path, tmp_path: Path) -> None:
    import numpy as np
    import zarr

    from pipeline.train.data import open_training_data

    view = open_training_data(tiny_dataset)
    n = len(view.splits)
    prob = tmp_path / "prob.zarr"
    root = zarr.open_group(prob, mode="w")
    rng = np.random.default_rng(0)
    root.create_array("probability", shape=(n, *view.shape), dtype="float16", chunks=(1, *view.shape))[...] = np.stack(
        [np.clip(view.labels(i) * 0.6 + 0.2 + rng.normal(0, 0.1, view.shape), 0, 1) for i in range(n)]).astype("float16")
    root.create_array("sample", shape=(n,), dtype="int64")[...] = np.arange(n)
    s = Train3DSettings(probability=str(prob), patch=(16, 32, 32), tile=(16, 48, 48), epochs=2, steps_per_epoch=4,
                        batch_size=2, net={"features": 4, "depth": 2}, workers={"executor": "local", "cpus_per_worker": 1})
    r = train_model(s, root=tmp_path / "t3", dataset=tiny_dataset, seed=0, stage_hash="h", name="r", probability=prob)
    card = read_card(r.model)
    assert card.task == "refine" and card.input.channels == ["probability", "image"]
    assert {"iou_3d", "smoothness", "smoothness_truth"} <= set(card.metrics["val"])
    assert json.loads((r.root / "history.json").read_text())[-1]["epoch"] == 2
