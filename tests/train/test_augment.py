"""Augmentation: geometry moves image and target together, intensity touches image channels only."""

from __future__ import annotations

import numpy as np

from pipeline.train.augment import AugmentParams, augment_batch


def test_geometry_keeps_image_and_target_registered() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((6, 1, 16, 16)) > 0.5).astype(np.float32)
    x = np.concatenate([y, 1 - y], axis=1)  # the image encodes the target
    off = AugmentParams(gamma=1.0, contrast=0.0, noise=0.0, blur=0.0)
    xa, ya = augment_batch(x, y, np.random.default_rng(1), off)
    assert np.array_equal(xa[:, :1], ya) and np.array_equal(xa[:, 1:], 1 - ya)
    assert not np.array_equal(ya, y)  # something moved


def test_intensity_changes_image_channels_only_and_stays_in_range() -> None:
    rng = np.random.default_rng(2)
    x = rng.random((8, 2, 4, 16, 16)).astype(np.float32)
    y = (rng.random((8, 1, 4, 16, 16)) > 0.5).astype(np.float32)
    before = x.copy()
    params = AugmentParams(flip_y=False, flip_x=False, rot90=False, p=1.0)
    xa, ya = augment_batch(x, y, np.random.default_rng(3), params, image_channels=[1])
    assert np.array_equal(xa[:, 0], x[:, 0]) and np.array_equal(ya, y)
    assert not np.allclose(xa[:, 1], x[:, 1]) and xa.min() >= 0 and xa.max() <= 1
    assert np.array_equal(x, before)  # inputs not modified


def test_same_generator_state_gives_the_same_augmentation() -> None:
    x = np.random.default_rng(4).random((3, 3, 16, 16)).astype(np.float32)
    y = np.zeros((3, 1, 16, 16), np.float32)
    a = augment_batch(x, y, np.random.default_rng(5), AugmentParams())
    b = augment_batch(x, y, np.random.default_rng(5), AugmentParams())
    assert np.array_equal(a[0], b[0])


def test_tta_axes_follow_the_flips_training_did() -> None:
    assert AugmentParams().tta_axes(2) == [0, 1]
    assert AugmentParams().tta_axes(3) == [1, 2]
    assert AugmentParams(flip_y=False).tta_axes(2) == [1]
