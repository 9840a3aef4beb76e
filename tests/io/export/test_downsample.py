"""Pyramid downsampling: block means and modes against a block-by-block reference, edges included; level factors."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from pipeline.io.export.downsample import default_levels, downsample_mean, downsample_mode, pyramid_factors


def _blocks(a: np.ndarray, f: tuple[int, int, int]):
    for idx in itertools.product(*(range(-(-n // k)) for n, k in zip(a.shape, f))):
        yield idx, a[tuple(slice(i * k, (i + 1) * k) for i, k in zip(idx, f))]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("f", [(2, 2, 2), (1, 2, 2), (2, 1, 1)])
def test_mean_is_the_block_mean_edges_included(dtype: str, f: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(1)
    a = (rng.random((5, 7, 6)) * 1000).astype(dtype)  # odd sides: partial blocks at the edges
    before = a.copy()
    out = downsample_mean(a, f)
    assert out.dtype == a.dtype and out.shape == tuple(-(-n // k) for n, k in zip(a.shape, f))
    for idx, block in _blocks(a, f):
        want = block.astype(np.float64).mean()
        if np.issubdtype(a.dtype, np.integer):
            assert abs(int(out[idx]) - want) <= 0.5 + 1e-9, (idx, out[idx], want)
        else:
            assert out[idx] == pytest.approx(want, rel=1e-6)
    np.testing.assert_array_equal(a, before)


def test_mean_of_uint16_extremes_is_exact() -> None:
    a = np.full((2, 2, 2), 65535, np.uint16)
    a[0, 0, 0] = 65534
    assert downsample_mean(a, (2, 2, 2))[0, 0, 0] == 65535  # (7 * 65535 + 65534) / 8 = 65534.875


def test_mode_of_binary_labels_majority_and_ties() -> None:
    a = np.zeros((2, 2, 4), np.uint8)
    a[:, :, :2].flat[[0, 1, 2, 3, 4]] = 1  # first block: 5 of 8 pore
    block2 = np.zeros((2, 2, 2), np.uint8)
    block2.flat[[0, 3, 5, 6]] = 1  # second block: a tie, its first voxel is pore
    a[:, :, 2:] = block2
    out = downsample_mode(a, (2, 2, 2))
    assert out.tolist() == [[[1, 1]]]
    a[0, 0, 2] = 0
    a[1, 1, 2] = 1  # still a tie, first voxel now solid
    assert downsample_mode(a, (2, 2, 2)).tolist() == [[[1, 0]]]


@pytest.mark.parametrize("values", [2, 5])
def test_mode_matches_a_counter_for_many_labels(values: int) -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, values, (5, 6, 7)).astype(np.uint8)
    f = (2, 2, 2)
    out = downsample_mode(a, f)
    padded = np.pad(a, [(0, (-n) % k) for n, k in zip(a.shape, f)], mode="edge")
    for idx, block in _blocks(padded, f):
        counts = Counter(block.ravel().tolist())
        top = max(counts.values())
        first_top = next(v for v in block.ravel().tolist() if counts[v] == top)
        assert out[idx] == first_top, idx


def test_mode_keeps_bool() -> None:
    a = np.ones((3, 3, 3), bool)
    out = downsample_mode(a, (2, 2, 2))
    assert out.dtype == np.bool_ and out.all() and out.shape == (2, 2, 2)


def test_factors_move_towards_isotropy() -> None:
    assert pyramid_factors((10, 5, 5), (100, 1000, 1000), 4) == [(1, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert pyramid_factors((5, 5, 5), (64, 64, 64), 3) == [(2, 2, 2), (2, 2, 2)]
    assert pyramid_factors((2, 5, 5), (64, 64, 64), 2) == [(2, 1, 1)]
    assert pyramid_factors((5, 5, 5), (1, 64, 64), 2) == [(1, 2, 2)]  # one slice stays one slice
    assert pyramid_factors((5, 5, 5), (8, 8, 8), 1) == []


def test_default_levels_stop_at_512_voxels() -> None:
    assert default_levels((10, 5, 5), (150, 150, 150)) == 1
    assert default_levels((10, 5, 5), (300, 1024, 1024)) == 2
    assert default_levels((5, 5, 5), (4000, 2048, 2048)) == 4


def test_bad_factors() -> None:
    with pytest.raises(ValueError, match="factors"):
        downsample_mean(np.zeros((2, 2, 2)), (2, 2))
    with pytest.raises(ValueError, match="factors"):
        downsample_mode(np.zeros((2, 2, 2), np.uint8), (0, 1, 1))
