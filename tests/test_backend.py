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
    np.testing.assert_array_equal(backend.to_numpy(backend.ndimage_of(g).shift(g, 0)), np.arange(5.0))


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
