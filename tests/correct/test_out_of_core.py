"""Correct + preprocess a stack 4x larger than the workers' memory; workers stay under their limit."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.engine.dask_cluster import dask_client
from pipeline.io.volume import as_volume, open_volume, write_volume

LIMIT = 384 * 2**20  # bytes per worker
WORKERS = 1


def _synthetic(z: int, n: int) -> da.Array:
    """uint8 porous-looking slices with stripes and a gradient, made chunk by chunk (never whole)."""

    def block(block_info=None):  # noqa: ANN001, ANN202
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        rng = np.random.default_rng(z0)
        import scipy.ndimage as ndi

        f = ndi.gaussian_filter(rng.standard_normal((z1 - z0, y1 - y0, x1 - x0)), (1, 2.5, 2.5))
        img = 60 + 120 * (f > 0) + 10 * np.sin(np.arange(x0, x1) / 3.0)[None, None, :]
        img = img * (0.8 + 0.4 * np.arange(y0, y1) / n)[None, :, None]
        return np.clip(img, 0, 255).astype(np.uint8)

    return da.map_blocks(block, dtype=np.uint8, chunks=((16,) * (z // 16), (n,), (n,)))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_correct_and_preprocess_out_of_core(tmp_path) -> None:
    import resource

    from pipeline.jobs.stages.correct import Config as CC, correct
    from pipeline.jobs.stages.preprocess import Config as PC, preprocess

    n = 256
    z = 4 * WORKERS * LIMIT // (4 * n * n)  # float32 working size = 4x the total worker memory
    z = (z // 16 + 1) * 16
    with dask_client(n_workers=WORKERS, memory_limit=LIMIT, local_directory=tmp_path / "dask") as client:
        pids = client.run(lambda: __import__("os").getpid())
        write_volume(as_volume(_synthetic(z, n), [10, 5, 5]), tmp_path / "raw.zarr")
        raw = open_volume(tmp_path / "raw.zarr")
        assert raw.size * 4 >= 4 * WORKERS * LIMIT
        c = correct(raw, CC(slab_mb=2))
        write_volume(c, tmp_path / "c.zarr")
        p = preprocess(open_volume(tmp_path / "c.zarr"), PC())
        write_volume(p, tmp_path / "p.zarr")
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        assert client.run(lambda: __import__("os").getpid()) == pids  # no worker was killed and restarted
    assert all(v < LIMIT for v in peaks.values()), {k: v / 2**20 for k, v in peaks.items()}
    out = open_volume(tmp_path / "p.zarr")
    sample = out[:: max(1, z // 8)].values
    assert sample.min() >= 0.0 and sample.max() <= 1.0 and out.shape[0] == z
    print(f"stack {z}x{n}x{n} = {raw.size * 4 / 2**20:.0f} MiB float32; worker peak RSS "
          f"{max(peaks.values()) / 2**20:.0f} MiB of {LIMIT / 2**20:.0f} MiB")
