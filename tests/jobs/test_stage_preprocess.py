"""The preprocess stage: kept in memory or written in two passes, the same store; two-pass runs resume block-exactly."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import dask
import numpy as np
import pytest
import scipy.ndimage as ndi

from pipeline.engine.blocks import TOTAL_NAME
from pipeline.io.volume import as_volume, open_volume, write_volume
from pipeline.jobs.context import StageContext
from pipeline.jobs.stages.preprocess import Config, run
from pipeline.preprocess.normalize import normalize

CHUNKS = (8, 32, 32)


def _input(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    a = rng.normal(1000, 200, (20, 50, 70)).clip(0).astype(np.uint16)
    write_volume(as_volume(a, (10, 5, 5)), tmp_path / "in.zarr", chunks=CHUNKS)
    return tmp_path / "in.zarr", a


def _ctx(tmp_path: Path, src: Path, run_name: str) -> StageContext:
    return StageContext(run_dir=tmp_path / run_name, name="pre", seed=0, backend="numpy", input=src, outputs={},
                        job_hash="job", stage_hash="h" * 16, chunks=CHUNKS)


def _run(ctx: StageContext, monkeypatch: pytest.MonkeyPatch, *, fits: bool) -> tuple[np.ndarray, dict]:
    dc = importlib.import_module("pipeline.engine.dask_cluster")
    monkeypatch.setattr(dc, "fits_in_memory", lambda nbytes, fraction=0.3: fits)
    with dask.config.set(scheduler="threads"):
        out = run(ctx, Config())
    vol = open_volume(out.path)
    return vol.values, {**vol.attrs, **out.metrics}


def test_kept_and_two_pass_write_the_same_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, a = _input(tmp_path)
    kept, kept_attrs = _run(_ctx(tmp_path, src, "kept"), monkeypatch, fits=True)
    two, two_attrs = _run(_ctx(tmp_path, src, "two"), monkeypatch, fits=False)
    np.testing.assert_array_equal(kept, two)
    g = ndi.gaussian_filter(a.astype(np.float32), (0, 1.0, 1.0))
    lo, hi = np.percentile(g, [0.5, 99.5])
    np.testing.assert_allclose(two, normalize(g, lo, hi), rtol=0, atol=1e-6)
    for attrs in (kept_attrs, two_attrs):
        assert attrs["normalization_range"] == pytest.approx([lo, hi], rel=1e-12)
        assert attrs["provenance"]["stage"] == "pre"
    assert two_attrs["blocks_computed"] == 3 * 2 * 3  # the store's chunks
    # kept in memory: written in blocks of the filtered volume's own whole-slice chunks, each once
    kept_markers = list((tmp_path / "kept" / ".work" / "pre").glob("pre.zarr.blocks-*/*.done"))
    assert kept_attrs["blocks_computed"] == len(kept_markers) >= 1
    assert list((tmp_path / "two" / ".work" / "pre").glob("pre.zarr.twopass-*"))


def test_two_pass_resumes_without_redoing_or_reapplying_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = _input(tmp_path)
    ctx = _ctx(tmp_path, src, "r")
    first, _ = _run(ctx, monkeypatch, fits=False)
    (markers,) = (tmp_path / "r" / ".work" / "pre").glob("pre.zarr.twopass-*")
    assert _run(ctx, monkeypatch, fits=False)[1]["blocks_computed"] == 0
    # killed during pass 2: one block rewritten without its done marker, two not started yet (still pass 1's values)
    (markers / "pass2" / "0.0.0.done").unlink()
    store = importlib.import_module("zarr").open_array(tmp_path / "r" / "pre.zarr" / "image", mode="r+")
    filtered = ndi.gaussian_filter(open_volume(src).values.astype(np.float32), (0, 1.0, 1.0))
    for name, region in (("1.1.2", np.s_[8:16, 32:50, 64:70]), ("2.0.1", np.s_[16:20, 0:32, 32:64])):
        (markers / "pass2" / f"{name}.done").unlink()
        (markers / "pass2" / f"{name}.start").unlink()
        store[region] = filtered[region]
    again, attrs = _run(ctx, monkeypatch, fits=False)
    assert attrs["blocks_computed"] == 1  # only the block whose state was unknown
    np.testing.assert_array_equal(again, first)


def test_a_different_kind_of_write_starts_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = _input(tmp_path)
    ctx = _ctx(tmp_path, src, "k")
    two, _ = _run(ctx, monkeypatch, fits=False)
    kept, attrs = _run(ctx, monkeypatch, fits=True)
    (blocks,) = (tmp_path / "k" / ".work" / "pre").glob("pre.zarr.blocks-*")
    assert attrs["blocks_computed"] == json.loads((blocks / TOTAL_NAME).read_text())["total"]  # every block, none skipped
    assert not list((tmp_path / "k" / ".work" / "pre").glob("pre.zarr.twopass-*"))
    np.testing.assert_array_equal(two, kept)
