"""Preprocess throughput: Dask workers vs scipy in memory; exact fast medians vs scipy; halo overhead.

Run:  .venv/bin/python benchmarks/preprocess.py [--shape 128,512,512] [--workers 2]

Prints Mvox/s and ratios against baselines measured in the same run, and peak
memory (RSS) of this process and of each worker.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import dask.array as da
import numpy as np
import scipy.ndimage as ndi

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.engine.dask_cluster import dask_client  # noqa: E402
from pipeline.io.volume import DEFAULT_CHUNKS  # noqa: E402
from pipeline.preprocess.denoise import denoise_dask, halo_depth  # noqa: E402
from pipeline.preprocess.median import median3x3, median3x3x3  # noqa: E402
from pipeline.preprocess.normalize import normalize, normalize_dask  # noqa: E402


def timed(fn, repeat: int = 1):  # noqa: ANN001, ANN201
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="128,512,512")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    img = ndi.gaussian_filter(rng.standard_normal(shape[1:]), 3)
    vol = np.clip(100 + 60 * (np.stack([np.roll(img, k, axis=1) for k in range(shape[0])]) > 0)
                  + rng.normal(0, 12, shape), 0, 65535).astype(np.uint16)
    nvox = vol.size
    print(f"volume {shape} uint16 = {nvox / 1e6:.1f} Mvox; default chunk {DEFAULT_CHUNKS}")

    # --- gaussian sigma=1 + normalisation --------------------------------------------------
    def scipy_pipeline() -> np.ndarray:
        g = ndi.gaussian_filter(vol.astype(np.float32), (0, 1.0, 1.0))
        lo, hi = np.percentile(g, [0.5, 99.5])
        return normalize(g, lo, hi)

    t_ref, ref = timed(scipy_pipeline)
    print(f"scipy.ndimage in memory, 1 process: gaussian(2D, sigma 1) + percentile normalisation "
          f"{nvox / t_ref / 1e6:.1f} Mvox/s ({t_ref:.2f} s)")
    with dask_client(n_workers=args.workers, threads_per_worker=1, memory_limit="3GiB",
                     local_directory=os.path.join(".cache", "bench-dask")) as client:
        darr = da.from_array(vol, chunks=DEFAULT_CHUNKS)
        darr = client.persist(darr)  # data already on the workers, as when read from zarr in parallel
        from distributed import wait

        wait(darr)
        client.run(lambda: None)

        def dask_pipeline() -> np.ndarray:
            g = denoise_dask(darr, "gaussian", dims=2, sigma=1.0)
            out, _ = normalize_dask(g, 0.5, 99.5)
            return out.sum().compute()

        t_dask, _ = timed(dask_pipeline, repeat=2)
        print(f"porelab on {args.workers} Dask workers (chunks {DEFAULT_CHUNKS}): "
              f"{nvox / t_dask / 1e6:.1f} Mvox/s ({t_dask:.2f} s)  ratio vs scipy: {t_ref / t_dask:.2f}x")
        # halo overhead of the default chunk
        depth = halo_depth("gaussian", dims=2, sigma=1.0)
        cz, cy, cx = DEFAULT_CHUNKS
        inflated = cz * (cy + 2 * depth[1]) * (cx + 2 * depth[2])
        print(f"halo for gaussian sigma 1 (2D): {depth}; read overhead per default chunk "
              f"{100 * (inflated / (cz * cy * cx) - 1):.1f} %")
        depth3 = halo_depth("median", dims=3, size=3)
        inflated3 = (cz + 2 * depth3[0]) * (cy + 2 * depth3[1]) * (cx + 2 * depth3[2])
        print(f"halo for median 3x3x3: {depth3}; read overhead {100 * (inflated3 / (cz * cy * cx) - 1):.1f} %")
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("peak RSS per worker (MiB): " + ", ".join(f"{v:.0f}" for v in peaks.values()))

    # --- medians -----------------------------------------------------------------------------------
    sub = vol[: max(8, shape[0] // 8)]
    nsub = sub.size
    for dtype in (np.uint16, np.float32):
        a = sub.astype(dtype)
        t_s2, r2 = timed(lambda: ndi.median_filter(a, size=(1, 3, 3)))
        t_f2, f2 = timed(lambda: median3x3(a), repeat=2)
        assert np.array_equal(r2, f2)
        t_s3, r3 = timed(lambda: ndi.median_filter(a, size=3))
        t_f3, f3 = timed(lambda: median3x3x3(a), repeat=2)
        assert np.array_equal(r3, f3)
        name = np.dtype(dtype).name
        print(f"median 3x3   {name:8s}: scipy {nsub / t_s2 / 1e6:6.1f} Mvox/s, porelab {nsub / t_f2 / 1e6:6.1f} Mvox/s "
              f"-> {t_s2 / t_f2:.1f}x (identical output, 1 core)")
        print(f"median 3x3x3 {name:8s}: scipy {nsub / t_s3 / 1e6:6.1f} Mvox/s, porelab {nsub / t_f3 / 1e6:6.1f} Mvox/s "
              f"-> {t_s3 / t_f3:.1f}x (identical output, 1 core)")
    del ref
    print(f"peak RSS of this process: {rss_peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
