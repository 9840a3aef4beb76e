"""Training patches: a worker's own share, a fixed order per (seed, epoch, rank), the shapes models read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.errors import UserError
from pipeline.train.data import PatchSampler, open_training_data, prepare_image, rank_share
from pipeline.train.config import DEFAULT_PREPROCESS


def _sampler(view, **kw) -> PatchSampler:  # noqa: ANN001
    args = dict(kind="slices", patch=(32, 32), k=3, preprocess=DEFAULT_PREPROCESS, n_batches=3, batch_size=4,
                seed=0, epoch=0, rank=0, world=1, buffer=2)
    args.update(kw)
    return PatchSampler(view, "train", **args)


def test_same_seed_and_epoch_give_the_same_patches(tiny_dataset: Path) -> None:
    view = open_training_data(tiny_dataset)
    a = [b.x for b in _sampler(view)]
    b = [b.x for b in _sampler(open_training_data(tiny_dataset))]
    c = [b.x for b in _sampler(view, epoch=1)]
    assert len(a) == 3 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_workers_read_disjoint_shares(tiny_dataset: Path) -> None:
    view = open_training_data(tiny_dataset)
    train = view.samples("train")
    shares = [rank_share(train, r, 2) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(train) and not set(shares[0]) & set(shares[1])
    assert _sampler(view, rank=1, world=2).share == shares[1]
    assert rank_share([4], 1, 2) == [4]  # fewer samples than workers: each reads them all


def test_2_5d_patches_hold_k_slices_and_the_middle_label(tiny_dataset: Path) -> None:
    view = open_training_data(tiny_dataset)
    batch = next(iter(_sampler(view, k=5)))
    assert batch.x.shape == (4, 5, 32, 32) and batch.y.shape == (4, 1, 32, 32)
    assert batch.x.dtype == np.float32 and 0 <= batch.x.min() and batch.x.max() <= 1
    assert set(np.unique(batch.y)) <= {0.0, 1.0}


def test_patches_are_cut_where_the_labels_are(tiny_dataset: Path) -> None:
    """A patch's label is the dataset's labels at the same place: inputs and targets stay registered."""
    view = open_training_data(tiny_dataset)
    s = _sampler(view, k=1, patch=(96, 96), n_batches=1, batch_size=2)
    lab = {i: view.labels(i) for i in s.share}
    for y in next(iter(s)).y[:, 0]:
        assert any((lab[i] == y[None]).all(axis=(1, 2)).any() for i in lab)


def test_preprocessing_matches_porelab_preprocess_defaults(tiny_dataset: Path) -> None:
    from pipeline.preprocess import denoise, normalize, robust_range

    raw = open_training_data(tiny_dataset).image(0)
    g = denoise(raw, "gaussian", dims=2, sigma=1.0)
    lo, hi = robust_range(g, 0.5, 99.5)
    assert np.allclose(prepare_image(raw, DEFAULT_PREPROCESS), normalize(g, lo, hi))
    assert raw.dtype == np.uint8  # not modified


def test_3d_patches_stack_probability_and_image(tiny_dataset: Path, tmp_path: Path) -> None:
    view = open_training_data(tiny_dataset)
    n = len(view.splits)
    prob = tmp_path / "prob.zarr"
    root = zarr.open_group(prob, mode="w")
    p = root.create_array("probability", shape=(n, *view.shape), dtype="float16", chunks=(1, *view.shape))
    p[...] = np.stack([view.labels(i) * 0.8 + 0.1 for i in range(n)]).astype("float16")
    root.create_array("sample", shape=(n,), dtype="int64")[...] = np.arange(n)
    v3 = open_training_data(tiny_dataset, probability=prob)
    batch = next(iter(PatchSampler(v3, "train", kind="volume", patch=(16, 32, 32), k=1, preprocess=DEFAULT_PREPROCESS,
                                   n_batches=1, batch_size=2, seed=0, epoch=0)))
    assert batch.x.shape == (2, 2, 16, 32, 32) and batch.y.shape == (2, 1, 16, 32, 32)
    assert np.allclose(batch.x[:, 0], batch.y[:, 0] * 0.8 + 0.1, atol=1e-3)  # channel 0 is the probability


def test_bad_datasets_are_one_sentence(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no sample in the 'holdout' split"):
        open_training_data(tiny_dataset, need=("train", "holdout"))
    with pytest.raises(UserError, match="no such dataset"):
        open_training_data(tmp_path / "none.zarr")
    bad = tmp_path / "bad.zarr"
    zarr.open_group(bad, mode="w").create_array("probability", shape=(2, 3, 3, 3), dtype="float32")
    with pytest.raises(UserError, match="samples have shape"):
        open_training_data(tiny_dataset, probability=bad)
