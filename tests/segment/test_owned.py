"""3D inference with each tile computed once, by the block that holds its start (pipeline.segment.owned)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from pipeline.models.folder import read_card
from pipeline.segment import owned
from pipeline.segment.infer import plan_tiles, predict_dask, predict_volume
from pipeline.segment.tiling import tile_starts


def _volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _count_tiles(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Tiles each call of ``module.name`` (accumulate_tiles or predict_region) computes."""
    from pipeline.segment import tiling

    counted: list[int] = []
    real = tiling.accumulate_tiles

    def spy(block, origin, region, global_shape, starts, **kw):  # noqa: ANN001, ANN202
        counted.append(len(starts))
        return real(block, origin, region, global_shape, starts, **kw)

    monkeypatch.setattr(tiling, "accumulate_tiles", spy)
    if module is not tiling:
        monkeypatch.setattr(module, name, spy)
    return counted


@pytest.mark.parametrize("shape", [(37, 41, 45), (60, 70, 80)])
def test_owned_blocks_give_the_whole_volume_and_compute_each_tile_once(model_factory, tmp_path: Path,  # noqa: ANN001
                                                                       monkeypatch: pytest.MonkeyPatch, shape: tuple) -> None:
    folder = model_factory("volume")
    card = read_card(folder)
    budget = 60_000
    vol = _volume((2, *shape), seed=5)
    whole = predict_volume(vol, folder, card)
    plan = plan_tiles(card, vol.shape[1:])
    grid_tiles = math.prod(len(tile_starts(n, t, s)) for n, t, s in zip(vol.shape[1:], plan.tile, plan.step))
    counted = _count_tiles(monkeypatch, owned, "accumulate_tiles")
    with dask.config.set(scheduler="threads"):
        out = owned.predict_owned(da.from_array(vol, chunks=(2, 10, 13, 30)), folder, card, tmp_path / "s", budget_bytes=budget)
        assert out is not None and max(len(c) for c in out.chunks[1:]) > 1  # really split into blocks
        np.testing.assert_allclose(out.compute(), whole, atol=1e-5, rtol=0)
    assert sum(counted) == grid_tiles  # every tile of the grid, once
    # the halo blocks of predict_dask compute the tiles across their borders again
    again = _count_tiles(monkeypatch, owned, "accumulate_tiles")
    with dask.config.set(scheduler="threads"):
        predict_dask(da.from_array(vol, chunks=(2, 10, 13, 30)), folder, card, budget_bytes=budget).compute()
    assert sum(again) > grid_tiles


def test_sums_on_disk_are_not_computed_again_and_another_grid_does_not_read_them(model_factory, tmp_path: Path,  # noqa: ANN001
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = model_factory("volume")
    card = read_card(folder)
    vol = da.from_array(_volume((2, 37, 41, 45), seed=6), chunks=(2, 37, 41, 45))
    counted = _count_tiles(monkeypatch, owned, "accumulate_tiles")
    with dask.config.set(scheduler="threads"):
        first = owned.predict_owned(vol, folder, card, tmp_path, budget_bytes=60_000).compute()
        n_first = len(counted)
        assert n_first > 1
        second = owned.predict_owned(vol, folder, card, tmp_path, budget_bytes=60_000).compute()
        assert len(counted) == n_first  # a resumed run: the sums are read, no tile computed
        np.testing.assert_array_equal(first, second)
        owned.predict_owned(vol, folder, card, tmp_path, budget_bytes=60_000, overlap=0.5).compute()
    assert len(counted) > n_first  # another tile grid: its own sums
    assert len(list(tmp_path.glob("grid-*"))) == 2


def test_a_volume_of_one_block_is_left_to_predict_dask(model_factory, tmp_path: Path) -> None:  # noqa: ANN001
    folder = model_factory("volume")
    card = read_card(folder)
    vol = da.from_array(_volume((2, 20, 24, 24)), chunks=-1)
    assert owned.predict_owned(vol, folder, card, tmp_path, budget_bytes=10**9) is None
    assert not list(tmp_path.iterdir())


def test_a_block_reaches_less_than_a_tile_past_its_core_and_only_its_upper_neighbours(model_factory) -> None:  # noqa: ANN001
    card = read_card(model_factory("volume"))
    shape = (60, 70, 80)
    plan = plan_tiles(card, shape)
    blocks = owned.owned_blocks(shape, plan, budget_bytes=60_000)
    assert math.prod(blocks.grid) > 4
    covered = np.zeros(shape, np.int64)
    for index in blocks.indices():
        core, ext = blocks.core(index), blocks.extent(index)
        for c, e, t in zip(core, ext, plan.tile):
            assert e.start == c.start and c.stop <= e.stop < c.stop + t
        covered[core] += 1
        for other in blocks.sources(index):
            assert all(0 <= i - o <= 1 for i, o in zip(index, other))
    assert (covered == 1).all()  # the cores tile the volume
    starts = [s for i in blocks.indices() for s in itertools.product(*blocks.starts(i))]
    assert len(starts) == len(set(starts)) == math.prod(len(tile_starts(n, t, s)) for n, t, s in zip(shape, plan.tile, plan.step))


def test_slice_models_are_refused(model_factory) -> None:  # noqa: ANN001
    card = read_card(model_factory("slices", k=1))
    with pytest.raises(ValueError, match="volume models"):
        owned.owned_blocks((8, 64, 64), plan_tiles(card, (8, 64, 64)))


def test_refine_volume_with_a_scratch_folder_gives_what_halo_blocks_give(model_factory, tmp_path: Path) -> None:  # noqa: ANN001
    """The refine stage's path: the same mask and probability, in the blocks refine_block_chunks announces."""
    from pipeline.io.volume import as_volume
    from pipeline.segment.volume import SegmentOptions, refine_block_chunks, refine_volume

    folder = model_factory("volume")
    prob = as_volume(da.from_array(_volume((40, 50, 60), seed=7), chunks=(8, 50, 60)), (10.0, 10.0, 10.0), name="probability")
    image = as_volume(da.from_array(_volume((40, 50, 60), seed=8), chunks=(8, 50, 60)), (10.0, 10.0, 10.0), name="image")
    plain = SegmentOptions(model=str(folder), budget_bytes=60_000)
    with_scratch = SegmentOptions(model=str(folder), budget_bytes=60_000, scratch=tmp_path / "tiles")
    with dask.config.set(scheduler="threads"):
        a = refine_volume(prob, image, plain)
        b = refine_volume(prob, image, with_scratch)
        assert tuple(b.data.chunks[1:]) == refine_block_chunks((40, 50, 60), with_scratch)
        assert tuple(a.data.chunks[1:]) == refine_block_chunks((40, 50, 60), plain)
        assert max(len(c) for c in b.data.chunks[1:]) > 1
        np.testing.assert_allclose(b.data[1].compute(), a.data[1].compute(), atol=1e-5, rtol=0)  # probability
        mask_a, mask_b = a.data[0].compute(), b.data[0].compute()
    p = a.data[1].compute()
    assert np.array_equal(mask_a, mask_b) or np.all(np.abs(p[mask_a != mask_b] - 0.5) < 1e-5)  # only exact ties may differ
