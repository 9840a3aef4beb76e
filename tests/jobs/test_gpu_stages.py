"""The correct and preprocess stages with ``backend: cupy`` write the stores the NumPy backend writes (GPU only)."""

from __future__ import annotations

import importlib
from pathlib import Path

import dask
import numpy as np
import pytest
import scipy.ndimage as ndi

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

from pipeline import backend  # noqa: E402
from pipeline.io.volume import as_volume, open_volume, write_volume  # noqa: E402
from pipeline.jobs.context import StageContext  # noqa: E402
from pipeline.jobs.stages import correct as correct_stage  # noqa: E402
from pipeline.jobs.stages import preprocess as preprocess_stage  # noqa: E402

CHUNKS = (8, 32, 32)


@pytest.fixture(autouse=True)
def _gpu() -> None:
    if not backend.gpu_available():
        pytest.skip("no usable CUDA device")


def _input(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    phase = ndi.gaussian_filter(rng.standard_normal((24, 60, 70)), (0.5, 2, 2)) > 0
    a = (900 + 400 * phase + rng.normal(0, 60, phase.shape) + 80 * (np.arange(70) % 11 == 0)).clip(0).astype(np.uint16)
    write_volume(as_volume(a, (10, 5, 5)), tmp_path / "in.zarr", chunks=CHUNKS)
    return tmp_path / "in.zarr"


def _ctx(tmp_path: Path, src: Path, run_name: str, name: str, kind: str) -> StageContext:
    return StageContext(run_dir=tmp_path / run_name, name=name, seed=0, backend=kind, input=src, outputs={},
                        job_hash="job", stage_hash="h" * 16, chunks=CHUNKS)


@pytest.mark.parametrize("fits", [True, False])
def test_stages_on_cupy_write_what_numpy_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fits: bool) -> None:
    dc = importlib.import_module("pipeline.engine.dask_cluster")
    monkeypatch.setattr(dc, "fits_in_memory", lambda nbytes, fraction=0.3: fits)
    src = _input(tmp_path)
    stores = {}
    with dask.config.set(scheduler="sync"):
        for kind in ("numpy", "cupy"):
            c = correct_stage.run(_ctx(tmp_path, src, kind, "cor", kind), correct_stage.Config(slab_mb=0.05))
            p = preprocess_stage.run(_ctx(tmp_path, c.path, kind, "pre", kind), preprocess_stage.Config())
            stores[kind] = (open_volume(c.path), open_volume(p.path))
    (c_cpu, p_cpu), (c_gpu, p_gpu) = stores["numpy"], stores["cupy"]
    assert c_gpu.shape == c_cpu.shape and p_gpu.shape == p_cpu.shape
    np.testing.assert_allclose(c_gpu.attrs["drift_px"], c_cpu.attrs["drift_px"], atol=0.02)
    rms = float(np.sqrt(np.mean((c_gpu.values - c_cpu.values) ** 2)))
    assert rms < 1e-3 * float(np.ptp(c_cpu.values))
    assert float(np.abs(p_gpu.values - p_cpu.values).max()) < 1e-3  # [0, 1] after normalisation
