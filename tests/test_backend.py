"""NumPy/CuPy backend selection."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from pipeline import backend
from pipeline.errors import UserError


def test_numpy_is_always_available() -> None:
    assert backend.resolve_backend("numpy") == "numpy"
    a = np.ones(3)
    assert backend.xp_of(a) is np
    assert backend.ndimage_of(a) is scipy.ndimage
    assert backend.to_numpy(a) is a or np.shares_memory(backend.to_numpy(a), a)


def test_unknown_backend() -> None:
    with pytest.raises(UserError, match="'opencl' is unknown"):
        backend.resolve_backend("opencl")


@pytest.mark.skipif(backend.gpu_available(), reason="this machine has a usable GPU")
def test_cupy_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="no usable CUDA device"):
        backend.resolve_backend("cupy")
    assert backend.resolve_backend("auto") == "numpy"


@pytest.mark.gpu
def test_cupy_round_trip() -> None:
    cupy = pytest.importorskip("cupy")
    if not backend.gpu_available():
        pytest.skip("no usable CUDA device")
    assert backend.resolve_backend("auto") == "cupy"
    g = backend.to_backend(np.arange(5.0), "cupy")
    assert backend.xp_of(g) is cupy
    np.testing.assert_allclose(backend.to_numpy(backend.ndimage_of(g).shift(g, 0)), np.arange(5.0), atol=1e-9)


def test_import_starts_nothing() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pipeline, pipeline.cli.main, pipeline.jobs.runner, pipeline.engine.dask_cluster, "
        "pipeline.engine.ray_cluster\n"
        "import dask\n"
        "assert 'ray' not in sys.modules or not __import__('ray').is_initialized()\n"
        "import logging; assert not logging.getLogger().handlers, logging.getLogger().handlers\n"
        "assert dask.config.get('scheduler', None) is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_chunks_on_numpy_keeps_the_array_and_volume_on_keeps_the_volume() -> None:
    import dask.array as da

    from pipeline.io.volume import as_volume

    arr = da.arange(24, chunks=5).reshape(2, 3, 4)
    assert backend.chunks_on(arr, "numpy") is arr
    vol = as_volume(arr, (10, 5, 5), attrs={"note": "kept"})
    moved = backend.volume_on(vol, "numpy")
    assert moved.attrs["note"] == "kept" and moved.dims == vol.dims
    np.testing.assert_array_equal(moved.values, np.arange(24).reshape(2, 3, 4))
    in_memory = backend.volume_on(as_volume(np.ones((2, 3, 4), np.uint8), (10, 5, 5)), "numpy")
    assert isinstance(in_memory.data, da.Array) and in_memory.values.sum() == 24


@pytest.mark.gpu
def test_chunks_on_cupy_and_back() -> None:
    import dask
    import dask.array as da

    cupy = pytest.importorskip("cupy")
    if not backend.gpu_available():
        pytest.skip("no usable CUDA device")
    arr = da.arange(24, chunks=5, dtype=np.float32).reshape(2, 3, 4)
    on_gpu = backend.chunks_on(arr, "cupy")
    assert backend.xp_of(on_gpu._meta) is cupy and backend.chunks_on(on_gpu, "cupy") is on_gpu
    with dask.config.set(scheduler="sync"):
        got = on_gpu.compute()
        back = backend.chunks_on(on_gpu, "numpy").compute()
    assert isinstance(got, cupy.ndarray) and isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
