"""CuPy chunks against NumPy/SciPy: preprocess, medians and the correction chain on one GPU.

Run (on a machine with a CUDA device and CuPy):
    python benchmarks/gpu.py [--shape 128,512,512] [--repeat 3] [--scheduler sync|threads]

What is measured, all in one run on the same uint16 volume:

* preprocess (gaussian 2D sigma 1 + exact percentile normalisation):
  baseline scipy.ndimage + numpy.percentile in this process, in memory (as
  benchmarks/preprocess.py); porelab ``preprocess_volume`` on CuPy chunks
  (the volume moved chunk by chunk to the GPU by ``chunks_on``, result back
  on the host), checked against the baseline;
* median 3x3 and 3x3x3 on the GPU (porelab ``median_filter`` on a CuPy
  array) against scipy.ndimage.median_filter on the host, identical output
  required;
* the correction chain (tilt, destripe, illumination, drift, ROI) on CuPy
  chunks against the same chain on NumPy chunks with Dask's threaded
  scheduler on all host cores;
* peak GPU memory held by CuPy's pool and the peak RSS of this process.

CuPy chunks run on ``--scheduler``: ``sync`` (default, one thread: what a
porelab GPU worker does) or ``threads`` (several threads share the GPU,
which porelab avoids, see ``gpu_worker_layout``). Best of ``--repeat``
times; the ratio printed is baseline time / porelab time.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.ndimage as ndi

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.preprocess import timed  # noqa: E402
from pipeline import backend  # noqa: E402
from pipeline.correct.chain import correct_volume  # noqa: E402
from pipeline.io.volume import DEFAULT_CHUNKS, as_volume  # noqa: E402
from pipeline.preprocess.chain import preprocess_volume  # noqa: E402
from pipeline.preprocess.median import median_filter  # noqa: E402
from pipeline.preprocess.normalize import normalize  # noqa: E402


def synthetic(shape: tuple[int, int, int]) -> np.ndarray:
    """uint16 two-phase stack with noise, vertical stripes and a shading gradient."""
    rng = np.random.default_rng(0)
    img = ndi.gaussian_filter(rng.standard_normal(shape[1:]), 3)
    stack = np.stack([np.roll(img, k, axis=1) for k in range(shape[0])]) > 0
    stripes = 15.0 * (np.arange(shape[2]) % 13 == 0)[None, None, :]
    shade = np.linspace(0.85, 1.15, shape[2])[None, None, :]
    return np.clip((100 + 60 * stack + stripes) * shade + rng.normal(0, 12, shape), 0, 65535).astype(np.uint16)


def scipy_preprocess(vol: np.ndarray) -> np.ndarray:
    g = ndi.gaussian_filter(vol.astype(np.float32), (0, 1.0, 1.0))
    lo, hi = np.percentile(g, [0.5, 99.5])
    return normalize(g, lo, hi)


def _sync() -> None:
    import cupy

    cupy.cuda.Device().synchronize()


def preprocess(vol: np.ndarray, repeat: int, scheduler: str) -> None:
    t_ref, _, ref = timed(lambda: scipy_preprocess(vol), repeat)
    darr = da.from_array(vol, chunks=DEFAULT_CHUNKS)

    def on_gpu() -> np.ndarray:
        with dask.config.set(scheduler=scheduler):
            out = preprocess_volume(backend.volume_on(as_volume(darr, (10, 5, 5)), "cupy"))
            res = backend.to_numpy(out.data.compute())
        _sync()
        return res

    t_gpu, t_med, got = timed(on_gpu, repeat)
    err = float(np.abs(got - ref).max())
    print(f"preprocess gaussian 2D + normalisation: scipy 1 process {vol.size / t_ref / 1e6:7.1f} Mvox/s ({t_ref:.2f} s); "
          f"porelab CuPy chunks ({scheduler}) {vol.size / t_gpu / 1e6:7.1f} Mvox/s ({t_gpu:.2f} s, median {t_med:.2f} s) "
          f"-> {t_ref / t_gpu:.1f}x; max |diff| {err:.1e}")


def medians(vol: np.ndarray, repeat: int) -> None:
    import cupy

    sub = vol[: max(8, vol.shape[0] // 4)]
    for dtype in (np.uint16, np.float32):
        a = sub.astype(dtype)
        g = cupy.asarray(a)
        for size, dims in ((3, 2), (3, 3)):
            foot = (1, size, size) if dims == 2 else size
            t_s, _, want = timed(lambda: ndi.median_filter(a, size=foot), 1)

            def gpu() -> Any:
                out = median_filter(g, size, dims=dims)
                _sync()
                return out

            gpu()  # compile the kernels once
            t_g, _, got = timed(gpu, repeat)
            assert np.array_equal(cupy.asnumpy(got), want), "median differs from scipy"
            label = f"{size}x{size}" + ("" if dims == 2 else f"x{size}")
            print(f"median {label:6s} {np.dtype(dtype).name:8s}: scipy {a.size / t_s / 1e6:7.1f} Mvox/s, "
                  f"porelab CuPy {a.size / t_g / 1e6:8.1f} Mvox/s -> {t_s / t_g:.0f}x (identical output; GPU time incl. sync)")


def correction(vol: np.ndarray, repeat: int, scheduler: str) -> None:
    sub = vol[: min(vol.shape[0], 96)]
    darr = da.from_array(sub, chunks=DEFAULT_CHUNKS)

    def run(kind: str) -> tuple[np.ndarray, dict]:
        with dask.config.set(scheduler="threads" if kind == "numpy" else scheduler):
            out = correct_volume(backend.volume_on(as_volume(darr, (10, 5, 5)), kind))
            res = backend.to_numpy(out.data.compute())
        if kind == "cupy":
            _sync()
        return res, out.attrs

    run("cupy")  # compile the kernels once
    t_cpu, _, (cpu, cpu_attrs) = timed(lambda: run("numpy"), repeat)
    t_gpu, _, (gpu, gpu_attrs) = timed(lambda: run("cupy"), repeat)
    rms = float(np.sqrt(np.mean((cpu.astype(np.float64) - gpu) ** 2)))
    drift = float(np.abs(np.asarray(cpu_attrs["drift_px"]) - np.asarray(gpu_attrs["drift_px"])).max())
    print(f"correct (tilt, destripe, illumination, drift, roi) {sub.shape}: NumPy chunks, threads on {os.cpu_count()} cores "
          f"{sub.size / t_cpu / 1e6:6.2f} Mvox/s ({t_cpu:.2f} s); CuPy chunks ({scheduler}) {sub.size / t_gpu / 1e6:6.2f} Mvox/s ({t_gpu:.2f} s) "
          f"-> {t_cpu / t_gpu:.1f}x; RMS diff {rms:.2e} (range {float(np.ptp(cpu)):.3g}), max drift diff {drift:.4f} px")


def main() -> None:
    os.environ.setdefault("PORELAB_PROGRESS", "0")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128,512,512", help="z,y,x of the synthetic uint16 volume")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scheduler", choices=["sync", "threads"], default="sync", help="Dask scheduler of the CuPy runs")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: preprocess, medians, correct")
    args = ap.parse_args()
    if not backend.gpu_available():
        print("no usable CUDA device with CuPy: nothing to measure", file=sys.stderr)
        raise SystemExit(2)
    import cupy

    shape = tuple(int(v) for v in args.shape.split(","))
    vol = synthetic(shape)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"volume {shape} uint16 = {vol.size / 1e6:.1f} Mvox; GPU {props['name'].decode()}, CuPy {cupy.__version__}; "
          f"{os.cpu_count()} host cores")
    skip = set(filter(None, args.skip.split(",")))
    if "preprocess" not in skip:
        preprocess(vol, args.repeat, args.scheduler)
    if "medians" not in skip:
        medians(vol, args.repeat)
    if "correct" not in skip:
        correction(vol, args.repeat, args.scheduler)
    pool = cupy.get_default_memory_pool()
    print(f"GPU memory held by CuPy's pool at the end: {pool.total_bytes() / 2**20:.0f} MiB; "
          f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
