"""``porelab preprocess``: the out-of-core path (filter once, normalise in place) equals the in-memory one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.io.volume import as_volume, open_volume, write_volume


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    a = (rng.random((20, 48, 40)) * 1000 + 200 * (np.arange(40) > 20)).astype(np.uint16)
    return write_volume(as_volume(a, [10, 5, 5]), tmp_path / "in.zarr", chunks=(8, 32, 32))


def test_two_pass_when_it_does_not_fit_equals_kept(stack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import pipeline.engine.dask_cluster as dc

    assert main(["preprocess", str(stack), "-o", str(tmp_path / "kept.zarr"), "--workers", "1"]) == 0
    calls: list[int] = []
    monkeypatch.setattr(dc, "fits_in_memory", lambda nbytes, fraction=0.3: calls.append(nbytes) or False)
    assert main(["preprocess", str(stack), "-o", str(tmp_path / "ooc.zarr"), "--workers", "1"]) == 0
    assert calls, "the out-of-core decision was not taken"
    kept, ooc = open_volume(tmp_path / "kept.zarr"), open_volume(tmp_path / "ooc.zarr")
    assert ooc.dtype == np.float32 and ooc.attrs["normalization_range"] == pytest.approx(kept.attrs["normalization_range"])
    np.testing.assert_allclose(ooc.values, kept.values, atol=1e-6)
    assert ooc.attrs["provenance"]["stage"] == "preprocess"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["in.zarr", "kept.zarr", "ooc.zarr"]  # no markers, partial folders or Dask scratch left
