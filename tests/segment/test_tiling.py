"""The global tile grid and gaussian blending (NumPy, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.segment.tiling import gaussian_window, predict_region, tile_starts, tiles_touching


@pytest.mark.parametrize("length,tile,step", [(100, 32, 24), (64, 32, 32), (33, 32, 8), (20, 32, 24), (256, 256, 192)])
def test_tiles_cover_the_axis_and_depend_on_its_length_alone(length: int, tile: int, step: int) -> None:
    starts = tile_starts(length, tile, step)
    covered = np.zeros(max(length, tile), bool)
    for a in starts:
        covered[a:a + tile] = True
    assert covered[:length].all()
    assert starts[0] == 0 and starts == sorted(set(starts))
    if length > tile:
        assert starts[-1] == length - tile and all(b - a <= step for a, b in zip(starts, starts[1:]))


def test_bad_steps_are_errors() -> None:
    with pytest.raises(ValueError, match="larger than the tile"):
        tile_starts(100, 16, 20)
    with pytest.raises(ValueError, match="at least 1"):
        tile_starts(100, 0, 1)


def test_window_is_centred_positive_and_flat_along_single_voxel_axes() -> None:
    w = gaussian_window((1, 16, 17))
    assert w.shape == (1, 16, 17) and w.min() > 0 and w.max() == pytest.approx(1.0)
    assert np.allclose(w, w[:, ::-1, ::-1])  # symmetric: centred on (t - 1) / 2
    assert w[0, 8, 8] > w[0, 0, 0]


def _mean_predict(batch: np.ndarray) -> np.ndarray:
    """A 'model' whose output at a voxel is its input: blending must return the input exactly."""
    return batch[:, :1].astype(np.float32)


def test_blending_a_local_function_returns_it_whatever_the_tiling() -> None:
    rng = np.random.default_rng(0)
    vol = rng.random((1, 5, 50, 70)).astype(np.float32)
    region = (slice(0, 5), slice(0, 50), slice(0, 70))
    for tile, step in (((1, 32, 32), (1, 24, 24)), ((1, 16, 48), (1, 8, 40)), ((5, 64, 80), (5, 64, 80))):
        out = predict_region(vol, (0, 0, 0), region, vol.shape[1:], tile=tile, step=step, predict=_mean_predict)
        assert np.allclose(out[0], vol[0], atol=1e-6)


def test_a_block_with_a_halo_predicts_its_core_as_the_whole_volume_does() -> None:
    rng = np.random.default_rng(1)
    vol = rng.random((1, 40, 41, 45)).astype(np.float32)

    def smooth(batch: np.ndarray) -> np.ndarray:  # depends on the whole tile: positions matter
        return (batch[:, :1] + batch[:, :1].mean(axis=(2, 3, 4), keepdims=True)).astype(np.float32)

    kw = dict(tile=(16, 16, 16), step=(12, 12, 12), predict=smooth)
    whole = predict_region(vol, (0, 0, 0), tuple(slice(0, s) for s in vol.shape[1:]), vol.shape[1:], **kw)
    core = (slice(17, 29), slice(5, 30), slice(0, 45))
    origin = [max(0, c.start - 16) for c in core]
    block = vol[(slice(None), *(slice(o, min(n, c.stop + 16)) for o, c, n in zip(origin, core, vol.shape[1:])))]
    part = predict_region(block, origin, core, vol.shape[1:], **kw)
    assert np.array_equal(part, whole[(slice(None), *core)])


def test_a_halo_too_small_is_caught() -> None:
    vol = np.zeros((1, 1, 64, 64), np.float32)
    with pytest.raises(ValueError, match="halo is too small"):
        predict_region(vol[:, :, 20:40], (0, 20, 0), (slice(0, 1), slice(25, 35), slice(0, 64)), (1, 64, 64),
                       tile=(1, 32, 32), step=(1, 24, 24), predict=_mean_predict)


def test_neighbour_channels_are_the_mirrored_slices() -> None:
    vol = np.arange(4, dtype=np.float32)[None, :, None, None] * np.ones((1, 4, 8, 8), np.float32)
    seen: list[np.ndarray] = []

    def record(batch: np.ndarray) -> np.ndarray:
        seen.extend(batch[:, :, 0, 0, 0].tolist())
        return batch[:, 1:2]

    predict_region(vol, (0, 0, 0), (slice(0, 4), slice(0, 8), slice(0, 8)), (4, 8, 8), tile=(1, 8, 8), step=(1, 8, 8),
                   predict=record, neighbours=3, batch_size=1)
    assert seen == [[1, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 2]]


def test_tiles_touching_keeps_the_grid_order() -> None:
    starts = tiles_touching((1, 100, 100), (1, 32, 32), (1, 24, 24), (slice(0, 1), slice(40, 60), slice(0, 10)))
    assert starts == [(0, 24, 0), (0, 48, 0)]
