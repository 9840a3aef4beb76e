"""`porelab analyze` end to end on a stack larger than the workers' memory: Mvox/s per step.

Run:  .venv/bin/python benchmarks/pipeline.py [--gb 4] [--workers 2] [--memory-limit 1.5GiB]
      [--keep DIR]

What is measured, in one run on the same stack:

* baseline: reading the stack with tifffile, page by page (what any tool pays to
  look at the data once), in Mvox/s;
* ``porelab analyze STACK --voxel-size 10,10,10`` with the shipped models on N
  local Dask workers of ``--memory-limit`` each (the stack is several times the
  memory of a worker, so nothing holds it whole): seconds, Mvox/s and share of
  the time of every step (ingest, correct, preprocess, segment, refine,
  baseline, measure, mesh, report), the whole pipeline's Mvox/s and its ratio
  to the tifffile read, and the peak RSS of the largest worker process during
  each step (sampled every 0.1 s), against its limit, and of the driver (the
  ``porelab analyze`` process, which holds the in-memory measures: the
  transport's sub-volume, a mesh).

The stack is a rendered synthetic FIB-SEM volume (random spheres, every
artefact of the built-in renderer) tiled with mirrored copies to the size
asked for, written as a multi-page uint16 TIFF slice by slice (never whole in
memory). On a shared machine the seconds are noisy: the shares and the ratio to
the read of the same run are what compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _tile(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A rendered stack of 64 slices of ``shape`` (uint16), the unit the big stack is tiled from."""
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import random_spheres

    labels = random_spheres((64, *shape), porosity=0.5, median_nm=100.0, sigma=0.3, voxel_size_nm=(10.0, 10.0, 10.0), seed=seed).labels
    img = np.asarray(render_builtin(labels, (10.0, 10.0, 10.0), seed=seed).image, dtype=np.float32)
    lo, hi = np.percentile(img, [0.1, 99.9])
    return np.clip((img - lo) / (hi - lo) * 50000 + 5000, 0, 65535).astype(np.uint16)


def write_stack(path: Path, gb: float, size: int = 1024) -> tuple[int, int, int]:
    """Write a multi-page uint16 TIFF of about ``gb`` GB with slices of ``size``² pixels; return its shape."""
    import tifffile

    unit = _tile((256, 256))
    ny = nx = size // 256
    # mirrored copies so that no seam is a step
    row = np.concatenate([unit if i % 2 == 0 else unit[:, :, ::-1] for i in range(nx)], axis=2)
    block = np.concatenate([row if j % 2 == 0 else row[:, ::-1, :] for j in range(ny)], axis=1)
    slices = max(64, int(gb * 1e9 / (2 * size * size)))
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for z in range(slices):
            k = z % (2 * len(block))
            page = block[k] if k < len(block) else block[2 * len(block) - 1 - k]
            tif.write(page, contiguous=True)
    return slices, size, size


def read_baseline(path: Path) -> float:
    """Seconds to read every page of the TIFF with tifffile."""
    import tifffile

    t0 = time.perf_counter()
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            page.asarray()
    return time.perf_counter() - t0


def _sample(proc: subprocess.Popen, manifest: Path, peaks: dict[str, int], stop: threading.Event,
            driver_peaks: dict[str, int] | None = None) -> None:
    """Largest RSS of any process under the driver (the workers), and of the driver, per running stage."""
    driver = psutil.Process(proc.pid)
    while not stop.is_set():
        try:
            rss = max((c.memory_info().rss for c in driver.children(recursive=True)), default=0)
            own = driver.memory_info().rss
        except psutil.NoSuchProcess:
            return
        except psutil.Error:
            rss = own = 0
        try:
            stages = json.loads(manifest.read_text()).get("stages", [])
            stage = next((s["name"] for s in stages if s.get("status") == "running"), None)
        except (OSError, ValueError):
            stage = None
        if stage is not None:
            peaks[stage] = max(peaks.get(stage, 0), rss)
            if driver_peaks is not None:
                driver_peaks[stage] = max(driver_peaks.get(stage, 0), own)
        stop.wait(0.1)


def run_analyze(stack: Path, out: Path, workers: int, memory_limit: str) -> tuple[float, dict[str, int], dict[str, int]]:
    """Run ``porelab analyze`` in a subprocess; return its seconds and the peak worker and driver RSS per stage."""
    cmd = [sys.executable, "-m", "pipeline", "analyze", str(stack), "--voxel-size", "10,10,10", "--out", str(out),
           "--workers", str(workers), "--memory-limit", memory_limit, "--overwrite"]
    peaks: dict[str, int] = {}
    driver_peaks: dict[str, int] = {}
    stop = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    sampler = threading.Thread(target=_sample, args=(proc, out / "manifest.json", peaks, stop, driver_peaks), daemon=True)
    sampler.start()
    rc = proc.wait()
    stop.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(f"porelab analyze failed with exit code {rc}")
    return time.perf_counter() - t0, peaks, driver_peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=4.0, help="stack size in GB (uint16)")
    parser.add_argument("--size", type=int, default=1024, help="slice size in pixels (a multiple of 256)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="1.5GiB")
    parser.add_argument("--keep", type=Path, help="keep the stack and the run folder here")
    args = parser.parse_args()

    (REPO / ".cache").mkdir(exist_ok=True)  # a fresh clone has no .cache yet
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="porelab-bench-", dir=REPO / ".cache"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        stack = work / "stack.tif"
        shape = write_stack(stack, args.gb, args.size)
        mvox = float(np.prod(shape)) / 1e6
        read_s = read_baseline(stack)
        total_s, peaks, driver_peaks = run_analyze(stack, work / "run", args.workers, args.memory_limit)
        stages = json.loads((work / "run" / "manifest.json").read_text())["stages"]
        from dask.utils import parse_bytes

        limit = parse_bytes(args.memory_limit)
        steps = sum(s.get("seconds", 0.0) for s in stages)
        print(f"stack {shape[0]}x{shape[1]}x{shape[2]} uint16 = {stack.stat().st_size / 1e9:.2f} GB ({mvox:.0f} Mvox); "
              f"{args.workers} workers of {args.memory_limit}")
        print(f"{'step':<14}{'seconds':>10}{'Mvox/s':>10}{'share':>8}{'worker peak MiB':>17}{'driver peak MiB':>17}")
        for s in stages:
            sec = s.get("seconds", 0.0)
            peak = peaks.get(s["name"], 0) / 2**20
            flag = "  over the limit" if peak * 2**20 > limit else ""
            own = driver_peaks.get(s["name"], 0) / 2**20
            print(f"{s['name']:<14}{sec:>10.1f}{mvox / sec if sec else float('nan'):>10.2f}{sec / steps:>8.1%}{peak:>17.0f}{own:>17.0f}{flag}")
        slowest = max(stages, key=lambda s: s.get("seconds", 0.0))
        print(f"whole pipeline: {total_s:.0f} s, {mvox / total_s:.2f} Mvox/s; tifffile read (baseline): {read_s:.1f} s, "
              f"{mvox / read_s:.0f} Mvox/s; ratio pipeline / read = {read_s / total_s:.2e}")
        print(f"slowest step: {slowest['name']} ({slowest.get('seconds', 0.0) / steps:.0%} of the time); "
              f"seconds per Gvox: {total_s / mvox * 1000:.0f}")
        print(f"peak RSS of a worker: {max(peaks.values(), default=0) / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
