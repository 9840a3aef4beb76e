"""The baseline stage: the stack filtered once (into a scratch store), labels equal to baseline_segment's."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from pipeline.baseline import BaselineParams, baseline_segment
from pipeline.baseline import threshold as th
from pipeline.io.volume import as_volume, open_volume, write_volume
from pipeline.jobs.context import StageContext
from pipeline.jobs.stages.baseline import Config, run

CHUNKS = (4, 32, 32)


def _input(tmp_path: Path) -> tuple[Path, np.ndarray]:
    import scipy.ndimage as ndi

    rng = np.random.default_rng(5)
    pores = ndi.gaussian_filter(rng.standard_normal((12, 48, 60)), 2.0) > 0.1
    a = np.where(pores, 60.0, 180.0) + rng.normal(0, 12, pores.shape) + 8 * np.sin(np.arange(60) / 2.0)[None, None, :]
    write_volume(as_volume(a.astype(np.float32), (10, 5, 5)), tmp_path / "in.zarr", chunks=CHUNKS)
    return tmp_path / "in.zarr", a.astype(np.float32)


def test_filters_once_and_writes_baseline_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, a = _input(tmp_path)
    filtered: list[int] = []
    real = th.filter_slice

    def spy(img, p):  # noqa: ANN001, ANN202
        filtered.append(1)
        return real(img, p)

    ctx = StageContext(run_dir=tmp_path / "run", name="baseline", seed=0, backend="numpy", input=src, outputs={},
                       job_hash="job", stage_hash="b" * 16, chunks=CHUNKS)
    with dask.config.set(scheduler="sync"):
        monkeypatch.setattr(th, "filter_slice", spy)
        out = run(ctx, Config(sweep=False))
    # every slice filtered once (before: once for the threshold's range, once for its histogram, once for the labels)
    assert len(filtered) == a.shape[0]
    got = open_volume(out.path)
    want, info = baseline_segment(a, BaselineParams())
    np.testing.assert_array_equal(got.values, np.asarray(want))
    assert got.attrs["baseline_threshold"]["threshold"] == pytest.approx(info["threshold"], rel=1e-6)
    assert out.metrics["porosity"] == pytest.approx(float(da.mean(want).compute()))
    # the scratch store of the filtered stack and its markers are gone
    work = tmp_path / "run" / ".work" / "baseline"
    assert not (work / "filtered.zarr").exists() and not list(work.rglob("filtered.zarr*"))


def test_threshold_filtered_is_the_rest_of_baseline_segment() -> None:
    a = np.random.default_rng(1).normal(100, 30, (3, 40, 50)).astype(np.float32)
    p = BaselineParams(min_size=4)
    labels, info = th.threshold_filtered(th.filtered_stack(a, p).rechunk((1, 20, 25)), p)
    want, winfo = baseline_segment(a, p)
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(want))
    assert info == winfo
    with pytest.raises(ValueError, match="3D"):
        th.threshold_filtered(np.zeros((4, 4)), p)
