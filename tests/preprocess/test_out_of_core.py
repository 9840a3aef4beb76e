"""Preprocess a stack 4x larger than the worker's memory, both ways it is written; the worker stays under its limit."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from pipeline.engine.dask_cluster import dask_client, fits_in_memory
from pipeline.io.volume import as_volume, open_volume, write_volume

LIMIT = 384 * 2**20  # bytes, one worker
N = 256


def _synthetic(z: int) -> da.Array:
    """uint8 two-phase slices with noise, made chunk by chunk (never whole)."""

    def block(block_info=None):  # noqa: ANN001, ANN202
        (z0, z1), _, _ = block_info[None]["array-location"]
        rng = np.random.default_rng(z0)
        phase = rng.standard_normal((z1 - z0, N, N)) > 0
        return np.clip(80 + 90 * phase + rng.normal(0, 15, phase.shape), 0, 255).astype(np.uint8)

    return da.map_blocks(block, dtype=np.uint8, chunks=((16,) * (z // 16), (N,), (N,)))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_preprocess_out_of_core_both_ways(tmp_path: Path) -> None:
    from pipeline.jobs.context import StageContext
    from pipeline.jobs.stages.preprocess import Config, preprocess, run

    z = 4 * LIMIT // (4 * N * N)  # float32 working size = 4x the worker's memory
    with dask_client(n_workers=1, threads_per_worker=1, memory_limit=LIMIT, local_directory=tmp_path / "dask") as client:
        pids = client.run(os.getpid)
        write_volume(as_volume(_synthetic(z), [10, 5, 5]), tmp_path / "raw.zarr", chunks=(16, N, N))
        raw = open_volume(tmp_path / "raw.zarr")
        assert not fits_in_memory(raw.size * 4)
        lazy = preprocess(raw, Config())  # as `porelab preprocess`: statistics first, then written block by block
        write_volume(lazy, tmp_path / "lazy.zarr", chunks=(16, N, N))
        ctx = StageContext(run_dir=tmp_path / "run", name="pre", seed=0, backend="numpy", input=tmp_path / "raw.zarr",
                           outputs={}, job_hash="j", stage_hash="s" * 16, chunks=(16, N, N))
        out = run(ctx, Config())  # the job stage: two passes through the output store
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        assert client.run(os.getpid) == pids  # no worker was killed and restarted
    assert all(v < LIMIT for v in peaks.values()), {k: v / 2**20 for k, v in peaks.items()}
    a, b = open_volume(tmp_path / "lazy.zarr"), open_volume(out.path)
    assert a.attrs["normalization_range"] == b.attrs["normalization_range"] == out.metrics["normalization_range"]
    sample = np.s_[:: z // 7]
    np.testing.assert_array_equal(a[sample].values, b[sample].values)
    assert 0.0 <= float(b[sample].min()) and float(b[sample].max()) <= 1.0 and b.shape == raw.shape
    print(f"stack {z}x{N}x{N} = {raw.size * 4 / 2**20:.0f} MiB float32; worker peak RSS "
          f"{max(peaks.values()) / 2**20:.0f} MiB of {LIMIT / 2**20:.0f} MiB")
