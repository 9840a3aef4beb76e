"""The whole correction chain: chunked == in memory, diagnostics in attrs, CLI verbs."""

from __future__ import annotations

import math

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

from pipeline.cli.main import main
from pipeline.correct.chain import DriftParams, correct_volume
from pipeline.io.volume import as_volume, open_volume, write_volume


def _raw(make_stack, z: int = 12, n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    m = 8
    base = make_stack((z, n, n), 5, margin=m)
    t = np.arange(z)
    true = np.stack([0.3 * t, 1.2 * np.sin(t / 3)], axis=1)
    stack = np.stack([ndi.shift(base[k], true[k], order=1, mode="nearest")[m:-m, m:-m] for k in range(z)])
    v, u = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    stack = stack * (0.8 + 0.4 * u)[None]
    return np.clip(stack * 200 + 20, 0, 255).astype(np.uint8), true


def test_chunked_equals_in_memory_and_attrs(make_stack) -> None:
    raw, true = _raw(make_stack)
    with dask.config.set(scheduler="sync"):
        whole = correct_volume(as_volume(raw, [10, 5, 5]))
        chunked = correct_volume(as_volume(da.from_array(raw, chunks=(5, 37, 41)), [10, 5, 5]))
        a, b = whole.values, chunked.values
    np.testing.assert_allclose(a, b, atol=1e-5 * 255)
    rows = round(96 / math.sin(math.radians(52)))
    assert whole.attrs["voxel_size_nm"][1] == pytest.approx(96 * 5 / math.sin(math.radians(52)) / rows)
    drift = np.asarray(whole.attrs["drift_px"])
    assert drift.shape == (12, 2)
    # the default moves slices by whole pixels: the correction rounded
    ref = np.asarray(whole.attrs["drift_reference_px"])
    np.testing.assert_array_equal(whole.attrs["drift_shift_px"], np.rint(-(drift - ref)))
    assert np.asarray(whole.attrs["illumination_relative_range"]).shape == (12, 2)
    (z0, z1), (y0, y1), (x0, x1) = whole.attrs["roi_box"]
    assert whole.shape == (z1 - z0, y1 - y0, x1 - x0) and whole.shape[1] < rows
    # tilt stretches y, so the y drift grows by the same factor
    np.testing.assert_allclose(drift[:, 1], true[:, 1], atol=0.35)
    np.testing.assert_allclose(drift[:, 0], true[:, 0] * rows / 96, atol=0.35)
    assert np.isfinite(a).all() and a.min() > 0  # no padded borders left


def test_everything_off_is_identity(make_stack) -> None:
    from pipeline.correct.chain import DestripeParams, IlluminationParams, RoiParams, TiltParams

    raw, _ = _raw(make_stack, z=3, n=40)
    with dask.config.set(scheduler="sync"):
        out = correct_volume(
            as_volume(raw, [10, 5, 5]),
            tilt=TiltParams(enabled=False),
            destripe=DestripeParams(enabled=False),
            illumination=IlluminationParams(enabled=False),
            drift=DriftParams(enabled=False),
            roi=RoiParams(mode="box", box=[[0, 3], [2, 30], [0, 40]]),
            output_dtype="input",
        )
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out.values, raw[:, 2:30])


def test_cli_correct_then_preprocess(make_stack, tmp_path, capsys) -> None:
    raw, _ = _raw(make_stack, z=10, n=64)
    write_volume(as_volume(raw, [10, 5, 5]), tmp_path / "raw.zarr")
    rc = main(["correct", str(tmp_path / "raw.zarr"), "-o", str(tmp_path / "c.zarr"), "--workers", "1", "--memory-limit", "1GiB"])
    assert rc == 0, capsys.readouterr().err
    c = open_volume(tmp_path / "c.zarr")
    assert len(c.attrs["drift_px"]) == 10 and c.attrs["provenance"]["stage"] == "correct"
    rc = main(["preprocess", str(tmp_path / "c.zarr"), "-o", str(tmp_path / "p.zarr"), "--denoise", "median", "--dims", "3", "--workers", "1"])
    assert rc == 0, capsys.readouterr().err
    p = open_volume(tmp_path / "p.zarr")
    values = p.values
    assert p.dtype == np.float32 and values.min() == 0.0 and values.max() == 1.0
    assert p.attrs["voxel_size_nm"] == c.attrs["voxel_size_nm"]


def test_cli_errors_are_one_sentence(tmp_path, capsys) -> None:
    rc = main(["correct", str(tmp_path / "missing.zarr"), "-o", str(tmp_path / "o.zarr")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.zarr" in err and "Traceback" not in err
    assert not (tmp_path / "o.zarr").exists()
    raw = np.zeros((2, 8, 8), np.uint8)
    write_volume(as_volume(raw, [1, 1, 1]), tmp_path / "r.zarr")
    rc = main(["preprocess", str(tmp_path / "r.zarr"), "-o", str(tmp_path / "o.zarr"), "--low", "90", "--high", "10"])
    assert rc == 2 and "low" in capsys.readouterr().err


@pytest.mark.skipif(__import__("pipeline.backend").backend.gpu_available(), reason="this machine has a usable GPU")
@pytest.mark.parametrize("verb", ["correct", "preprocess"])
def test_cli_backend_cupy_without_gpu_is_a_clear_error(tmp_path, capsys, verb: str) -> None:
    write_volume(as_volume(np.zeros((2, 8, 8), np.uint8), [1, 1, 1]), tmp_path / "r.zarr")
    rc = main([verb, str(tmp_path / "r.zarr"), "-o", str(tmp_path / "o.zarr"), "--backend", "cupy"])
    err = capsys.readouterr().err
    assert rc == 2 and "no usable CUDA device" in err and "Traceback" not in err
    assert not (tmp_path / "o.zarr").exists()


def test_onset_destripe_through_the_chain_equals_in_memory(make_stack) -> None:
    from pipeline.correct.chain import DestripeParams, DriftParams, IlluminationParams, RoiParams, TiltParams, correct_volume
    from pipeline.correct.destripe import destripe
    from pipeline.io.volume import as_volume

    clean = make_stack((12, 64, 80), 3)
    stripes = np.zeros((64, 80))
    stripes[20:, 30:32] = 0.08  # a curtain that starts part-way down
    stack = (clean + stripes[None]).astype(np.float32)
    vol = as_volume(stack, (10.0, 10.0, 10.0))
    out = correct_volume(vol, tilt=TiltParams(enabled=False), illumination=IlluminationParams(enabled=False),
                         drift=DriftParams(enabled=False), roi=RoiParams(mode="none"),
                         destripe=DestripeParams(method="onset", pool_slices=3), slab_mb=0.05)
    assert out.data.numblocks[0] > 1  # pooled across slab boundaries
    expected = np.asarray(destripe(stack, "onset", pool_slices=3))
    np.testing.assert_allclose(np.asarray(out.data.compute()), expected, atol=1e-5)
    assert len(out.attrs["stripe_rms"]) == 12 and max(out.attrs["stripe_rms"]) > 0
