"""Segment a stack twice as large as the worker's memory; the worker stays under its limit and is never restarted.

Twice, not more: 4x (2 GiB through one single-threaded worker) takes over half an hour on 2 cores.
Two worker sizes (512 and 768 MiB: other block budgets, so other blocks). The store is made as
`porelab segment` makes it, with chunks that the prediction blocks are whole multiples of
(``nesting_chunks``), so that each block is computed once and written as it is.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.engine.dask_cluster import dask_client, threads_per_task, worker_memory
from pipeline.io.volume import as_volume, create_group_store, open_volume, write_volume

# a worker with ONNX Runtime loaded already holds 220-320 MiB (WORKER_BASE_BYTES)
WORKERS = 1


def _synthetic(z: int, n: int) -> da.Array:
    """float32 porous-looking slices in [0, 1], made chunk by chunk (never whole)."""

    def block(block_info=None):  # noqa: ANN001, ANN202
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        import scipy.ndimage as ndi

        noise = np.random.default_rng(z0).standard_normal((z1 - z0, y1 - y0, x1 - x0), dtype=np.float32)
        f = ndi.gaussian_filter(noise, (1, 3, 3))
        return np.clip(0.3 + 0.5 * (f > 0) + 0.05 * f, 0, 1).astype(np.float32)

    # small blocks: the input is made on the same small worker that will segment it
    return da.map_blocks(block, dtype=np.float32, chunks=((8,) * (z // 8), (n,), (n,)))


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("limit_mib", [512, 768])
def test_segment_out_of_core(tmp_path, model_factory, limit_mib: int) -> None:  # noqa: ANN001
    import resource

    from pipeline.engine.blocks import nesting_chunks, nests, store_blocks
    from pipeline.io.volume import DEFAULT_CHUNKS
    from pipeline.segment.infer import block_budget
    from pipeline.segment.predictor import resolve_runtime
    from pipeline.segment.volume import SegmentOptions, segment_volume

    limit = limit_mib * 2**20
    n = 512
    z = 2 * WORKERS * limit // (4 * n * n)
    z = (z // 32 + 1) * 32
    model = model_factory("slices", k=3, features=4, depth=2, tile=(256, 256))
    with dask_client(n_workers=WORKERS, memory_limit=limit, local_directory=tmp_path / "dask") as client:
        pids = client.run(lambda: __import__("os").getpid())
        write_volume(as_volume(_synthetic(z, n), [10, 5, 5]), tmp_path / "grey.zarr", chunks=(8, 512, 512))
        vol = open_volume(tmp_path / "grey.zarr")
        assert vol.nbytes >= 2 * WORKERS * limit
        runtime = resolve_runtime("auto", "cpu", memory_limit=worker_memory(client))  # as the segment stage does
        opts = SegmentOptions(model=model, threads=threads_per_task(client), runtime=runtime,
                              budget_bytes=block_budget(worker_memory(client), runtime))
        seg = segment_volume(vol, opts)
        chunks = nesting_chunks(seg.data.chunks[1:], tuple(min(c, s) for c, s in zip(DEFAULT_CHUNKS, vol.shape)))
        targets = create_group_store(tmp_path / "seg.zarr", as_volume(vol.data, [10, 5, 5], name="mask"), seg.variables,
                                     chunks=chunks)
        assert nests(seg.data.chunks[1:], chunks)  # each prediction block is one write
        assert max(seg.data.chunks[1]) * n * n * len(seg.variables) * seg.data.dtype.itemsize <= opts.budget_bytes
        store_blocks(seg.data, [targets[k] for k in seg.variables], markers=None, cover_data_chunks=True,
                     max_block_bytes=opts.budget_bytes)  # as porelab segment writes
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        assert client.run(lambda: __import__("os").getpid()) == pids  # no worker was killed and restarted
    assert all(v < limit for v in peaks.values()), {k: v / 2**20 for k, v in peaks.items()}
    mask = open_volume(tmp_path / "seg.zarr")
    prob = open_volume(tmp_path / "seg.zarr", "probability")
    assert mask.shape == (z, n, n)
    s = slice(z // 2, z // 2 + 2)
    assert np.array_equal(mask[s].values, (prob[s].values >= 0.5).astype(np.uint8))
    print(f"stack {z}x{n}x{n} = {vol.nbytes / 2**20:.0f} MiB float32; worker peak RSS "
          f"{max(peaks.values()) / 2**20:.0f} MiB of {limit / 2**20:.0f} MiB")
