"""Synthetic data factory benchmarks (figures for the synth issue).

1. Ray scaling: samples per minute of ``build_dataset`` on one local Ray
   instance of 2 CPUs, two samples at a time (2 workers) against one at a
   time (baseline: each task reserves both CPUs), same plans, same run; peak
   RSS of the driver and of the whole process tree (driver + Ray workers).
2. Renderers: seconds per slice of the built-in renderer (a whole stack,
   divided by its slices) against Blender/Cycles (baseline) at the same size
   and parameters.
3. One whole default sample (150^3): structure + built-in render, seconds.

Usage::

    .venv/bin/python benchmarks/synth.py            # defaults below
    .venv/bin/python benchmarks/synth.py --count 8 --shape 150,150,150 --blender-slices 3

No GPU is used. The machine's cores may be shared with other work: the
figures are what this run measured, nothing more.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

os.environ.setdefault("PORELAB_PROGRESS", "0")
# one thread per worker process in both runs (Ray would otherwise give a task that
# reserves 2 CPUs two BLAS/OpenMP threads and make the 1-worker baseline faster)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


LOAD_BEFORE = 0.0


class TreePeak:
    """Samples the summed RSS of this process and all its children (Ray workers included)."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.peak = 0
        self.cpu_start = self._cpu()
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    @staticmethod
    def _cpu() -> float:
        me = psutil.Process()
        total = 0.0
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def __enter__(self) -> TreePeak:
        self.cpu_start = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = self._cpu() - self.cpu_start
        self._stop.set()
        self._thread.join()


def ray_scaling(count: int, shape: tuple[int, int, int], seed: int, work: Path) -> dict[str, float]:
    import ray

    from pipeline.engine.ray_cluster import ray_session
    from pipeline.synth.factory import build_dataset, plan_samples

    plans = plan_samples(count, seed=seed, shape=shape, voxel_size_nm=(10.0, 10.0, 10.0),
                         families={"solid_spheres": 1.0, "pore_spheres": 1.0, "blobs": 1.0, "agglomerates": 1.0},
                         structure_ranges={"porosity": (0.35, 0.6)}, render={"backend": "builtin"})
    out: dict[str, float] = {}
    ray_tmp = Path(tempfile.mkdtemp(prefix="plr-bench-", dir="/tmp"))  # unix socket paths must stay short
    with ray_session(num_cpus=2, temp_dir=ray_tmp):
        # start both worker processes before timing (Ray starts them lazily)
        @ray.remote(num_cpus=1)
        def warm() -> int:
            import pipeline.synth.render_builtin  # noqa: F401

            time.sleep(0.5)
            return os.getpid()

        ray.get([warm.remote() for _ in range(2)])
        # one worker = each sample reserves both CPUs, so one runs at a time
        for workers in (1, 2):
            target = work / f"ray{workers}.zarr"
            with TreePeak() as peak:
                t0 = time.perf_counter()
                build_dataset(target, plans, seed=seed, executor="ray", figures=False, cpus_per_sample=2.0 / workers)
                dt = time.perf_counter() - t0
            shutil.rmtree(target)
            out[f"samples_per_min_{workers}"] = 60.0 * count / dt
            out[f"seconds_{workers}"] = dt
            out[f"tree_peak_rss_mib_{workers}"] = peak.peak / 2**20
            out[f"cores_busy_{workers}"] = peak.cpu / dt  # CPU seconds of driver + workers per second
    shutil.rmtree(ray_tmp, ignore_errors=True)
    out["speedup_2_vs_1"] = out["samples_per_min_2"] / out["samples_per_min_1"]
    return out


def renderers(shape: tuple[int, int, int], slices: int, samples: int, seed: int) -> dict[str, float]:
    from pipeline.synth.render_blender import blender_available, render_blender
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import random_spheres

    s = random_spheres(shape, 0.5, 100.0, 0.3, (10.0, 10.0, 10.0), seed=seed)
    params = {"drift_px": 0.0}
    render_builtin(s.labels[:8], s.voxel_size_nm, params, seed=0)  # warm caches/imports
    t0 = time.perf_counter()
    render_builtin(s.labels, s.voxel_size_nm, params, seed=0)
    builtin = (time.perf_counter() - t0) / shape[0]
    out = {"builtin_s_per_slice": builtin}
    if not blender_available():
        out["blender_s_per_slice"] = float("nan")
        return out
    ks = list(np.linspace(shape[0] // 4, 3 * shape[0] // 4, slices).astype(int))
    render_blender(s.labels, s.voxel_size_nm, params, seed=0, slices=ks[:1], samples=1)  # import + first scene
    t0 = time.perf_counter()
    render_blender(s.labels, s.voxel_size_nm, params, seed=0, slices=ks, samples=samples)
    blender = (time.perf_counter() - t0) / len(ks)
    out.update(blender_s_per_slice=blender, blender_samples=float(samples), builtin_speedup=blender / builtin)
    return out


def whole_sample(seed: int) -> dict[str, float]:
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import generate

    t0 = time.perf_counter()
    s = generate("solid_spheres", shape=(150, 150, 150), porosity=0.5, voxel_size_nm=(10.0, 10.0, 10.0), seed=seed)
    t1 = time.perf_counter()
    render_builtin(s.labels, s.voxel_size_nm, {}, seed=seed)
    t2 = time.perf_counter()
    return {"structure_s_150": t1 - t0, "render_s_150": t2 - t1, "sample_s_150": t2 - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=8, help="samples per Ray run (default 8)")
    ap.add_argument("--shape", default="150,150,150", help="sample shape for the Ray runs and renderers (default 150^3)")
    ap.add_argument("--blender-slices", type=int, default=3, help="slices rendered with Blender (default 3)")
    ap.add_argument("--blender-samples", type=int, default=16, help="Cycles samples per pixel (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    global LOAD_BEFORE
    LOAD_BEFORE = os.getloadavg()[0]
    print(f"machine: {psutil.cpu_count()} logical CPUs, load average {LOAD_BEFORE:.2f} (shared machines vary)")
    results: dict[str, float] = {}
    results.update(whole_sample(args.seed))
    print(f"whole 150^3 sample: structure {results['structure_s_150']:.2f} s + built-in render "
          f"{results['render_s_150']:.2f} s = {results['sample_s_150']:.2f} s")
    results.update(renderers(shape, args.blender_slices, args.blender_samples, args.seed))
    if np.isfinite(results["blender_s_per_slice"]):
        print(f"renderers at {shape[1]}x{shape[2]} px: built-in {results['builtin_s_per_slice'] * 1e3:.1f} ms/slice, "
              f"Blender/Cycles ({args.blender_samples} spp, baseline) {results['blender_s_per_slice']:.2f} s/slice "
              f"-> built-in {results['builtin_speedup']:.0f}x faster (goal >= 100x)")
    else:
        print(f"renderers: built-in {results['builtin_s_per_slice'] * 1e3:.1f} ms/slice; bpy absent, no Blender baseline")
    with tempfile.TemporaryDirectory(dir=Path(os.environ.get("PORELAB_CACHE", ".cache"))) as tmp:
        results.update(ray_scaling(args.count, shape, args.seed, Path(tmp)))
    print(f"Ray, {args.count} samples of {'x'.join(map(str, shape))}: 1 worker (baseline) "
          f"{results['samples_per_min_1']:.2f} samples/min, 2 workers {results['samples_per_min_2']:.2f} samples/min "
          f"-> {results['speedup_2_vs_1']:.2f}x (goal >= 1.7x); cores kept busy {results['cores_busy_1']:.2f} vs "
          f"{results['cores_busy_2']:.2f}, load average before {LOAD_BEFORE:.2f}")
    print(f"peak RSS: driver {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; driver + Ray workers "
          f"{results['tree_peak_rss_mib_1']:.0f} MiB (1 worker), {results['tree_peak_rss_mib_2']:.0f} MiB (2 workers)")
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))


if __name__ == "__main__":
    main()
