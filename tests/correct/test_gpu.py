"""The correction steps and the whole chain on CuPy chunks give the NumPy results (GPU only)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

from pipeline import backend  # noqa: E402
from pipeline.correct.chain import DriftParams, correct_volume  # noqa: E402
from pipeline.correct.destripe import destripe  # noqa: E402
from pipeline.correct.drift import apply_shifts, estimate_pairs, estimate_pairs_dask  # noqa: E402
from pipeline.correct.illumination import background, remove_background  # noqa: E402
from pipeline.correct.tilt import tilt_correct  # noqa: E402
from pipeline.io.volume import as_volume  # noqa: E402


@pytest.fixture(autouse=True)
def _gpu() -> None:
    if not backend.gpu_available():
        pytest.skip("no usable CUDA device")


def _raw(make_stack, z: int = 12, n: int = 96) -> np.ndarray:
    m = 8
    base = make_stack((z, n, n), 5, margin=m)
    t = np.arange(z)
    true = np.stack([0.3 * t, 1.2 * np.sin(t / 3)], axis=1)
    stack = np.stack([ndi.shift(base[k], true[k], order=1, mode="nearest")[m:-m, m:-m] for k in range(z)])
    u = np.linspace(0, 1, n)[None, None, :]
    stripes = 0.05 * (np.arange(n) % 9 == 0)[None, None, :]
    return np.clip((stack * (0.8 + 0.4 * u) + stripes) * 200 + 20, 0, 255).astype(np.uint8)


def _same_pairs(got: np.ndarray, want: np.ndarray) -> None:
    """Shifts within one step of the 1/50 px refinement grid (rounding may pick the neighbouring peak); peaks alike."""
    np.testing.assert_allclose(got[..., :2], want[..., :2], atol=0.021, equal_nan=True)
    np.testing.assert_allclose(got[..., 2], want[..., 2], rtol=0.02, equal_nan=True)


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))


def test_each_step_on_cupy_matches_numpy(make_stack) -> None:
    a = _raw(make_stack).astype(np.float32)
    g = cupy.asarray(a)
    t = tilt_correct(g, 52.0)
    assert isinstance(t, cupy.ndarray)
    np.testing.assert_allclose(t.get(), tilt_correct(a, 52.0), rtol=1e-6, atol=1e-4)
    for method in ("histogram", "profile"):
        d = destripe(g[:3], method)
        assert isinstance(d, cupy.ndarray)
        assert _rms(d.get(), destripe(a[:3], method)) < 1e-3 * 255
    for method in ("poly", "gaussian"):
        bg = background(g[4], method)
        out = remove_background(g[4], bg, "divide")
        assert isinstance(out, cupy.ndarray)
        np.testing.assert_allclose(out.get(), remove_background(a[4], background(a[4], method), "divide"), rtol=1e-4, atol=1e-4)
    _same_pairs(estimate_pairs(g, 2), estimate_pairs(a, 2))
    shifts = np.stack([np.linspace(-1.5, 2.0, len(a)), np.linspace(0.7, -0.3, len(a))], axis=1)
    moved = apply_shifts(g, shifts)
    assert isinstance(moved, cupy.ndarray)
    np.testing.assert_allclose(moved.get(), apply_shifts(a, shifts), rtol=1e-5, atol=1e-3)


def test_pairs_on_cupy_chunks_equal_in_memory(make_stack) -> None:
    a = _raw(make_stack, z=20).astype(np.float32)
    chunks = backend.chunks_on(da.from_array(a, chunks=(6, 40, 96)), "cupy")
    with dask.config.set(scheduler="sync"):
        got = estimate_pairs_dask(chunks, 2)
    _same_pairs(got, estimate_pairs(a, 2))


def test_correct_volume_on_cupy_chunks_matches_numpy(make_stack) -> None:
    raw = _raw(make_stack)
    vol = as_volume(da.from_array(raw, chunks=(5, 37, 41)), [10, 5, 5])
    with dask.config.set(scheduler="sync"):
        cpu = correct_volume(vol, drift=DriftParams(lags=2))
        gpu = correct_volume(backend.volume_on(vol, "cupy"), drift=DriftParams(lags=2))
        on_gpu = gpu.data.compute()
        want = cpu.values
    assert isinstance(on_gpu, cupy.ndarray)
    assert gpu.shape == cpu.shape and gpu.attrs["roi_box"] == cpu.attrs["roi_box"]
    np.testing.assert_allclose(gpu.attrs["drift_px"], cpu.attrs["drift_px"], atol=0.02)
    np.testing.assert_allclose(gpu.attrs["stripe_rms"], cpu.attrs["stripe_rms"], rtol=1e-3, atol=1e-3)
    assert _rms(on_gpu.get(), want) < 1e-3 * float(np.ptp(want))
