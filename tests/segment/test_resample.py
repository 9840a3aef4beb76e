"""Segmenting at the model's voxel size: resampling there and back, and the warning far from it."""

from __future__ import annotations

import dask.array as da
import numpy as np

from pipeline.io.volume import as_volume
from pipeline.models.folder import read_card
from pipeline.segment.resample import resample_like, resample_volume, training_voxel_size
from pipeline.segment.volume import SegmentOptions, check_voxel_size, segment_volume


def test_resampling_there_and_back_keeps_a_smooth_field() -> None:
    z, y, x = np.meshgrid(np.arange(12), np.arange(40), np.arange(44), indexing="ij")
    field = (0.5 + 0.3 * np.sin(y / 7.0) * np.cos(x / 9.0) + 0.01 * z).astype(np.float32)
    vol = as_volume(da.from_array(field, chunks=(4, 20, 22)), (10.0, 5.0, 5.0))
    coarse = resample_volume(vol, (10.0, 10.0, 10.0))
    assert coarse.shape == (12, 20, 22) and coarse.attrs["voxel_size_nm"] == [10.0, 10.0, 10.0]
    back = resample_like(coarse, vol)
    assert back.shape == vol.shape and back.data.chunks == vol.data.chunks
    err = np.abs(back.values - field)
    assert err[:, :-1, :-1].max() < 0.01 and err.max() < 0.05 and np.isfinite(back.values).all()  # the last voxel: edge value
    assert training_voxel_size({"min": [5, 5, 5], "max": [20, 20, 20]}) == [10.0, 10.0, 10.0]


def test_a_voxel_size_far_from_training_warns_and_resample_segments_there(model_factory) -> None:  # noqa: ANN001
    card = read_card(model_factory("slices", k=1))  # trained at 10 nm
    assert check_voxel_size(card, [10, 10, 10]) is None
    warn = check_voxel_size(card, [10, 2, 2])
    assert warn is not None and "--resample" in warn and "[10.0, 10.0, 10.0]" in warn
    vol = as_volume(da.random.random((6, 60, 60), chunks=(3, 30, 30)).astype(np.float32), (10.0, 2.0, 2.0))
    seg = segment_volume(vol, SegmentOptions(model=model_factory("slices", k=1), resample=True, runtime="torch"))
    out = seg.data.compute()
    assert out.shape == (2, 6, 60, 60) and seg.attrs["inference"]["resampled"]
    assert set(np.unique(out[0])) <= {0.0, 1.0} and 0 <= out[1].min() and out[1].max() <= 1
