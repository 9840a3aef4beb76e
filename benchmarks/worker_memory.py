"""How much memory a Dask worker needs for a chunk size: peak worker RSS per stage against the chunk's size.

Run:  .venv/bin/python benchmarks/worker_memory.py [--slices 64] [--size 512]
      [--chunks 8,256,256 16,512,512 32,512,512] [--memory-limit 4GiB]

For each chunk shape, one ``porelab run`` of ingest -> correct -> preprocess (3x3x3 median,
normalised) on a local cluster of one single-threaded worker. A sampler reads the
worker process's RSS every 0.1 s and the running stage from the manifest; it prints, per stage,
the peak RSS and (peak - idle) divided by the float32 size of one chunk. The baseline is a
worker at rest (a fresh local worker that has imported the stages), measured in the same run.

cluster/README.md ("Sizing workers") quotes these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]


def _stack(path: Path, slices: int, size: int) -> None:
    import scipy.ndimage as ndi

    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(slices, size, size))
    for z in range(slices):
        f = ndi.gaussian_filter(rng.standard_normal((size, size)), 2.5)
        out[z] = np.clip(12000 + 18000 * (f > 0) + rng.normal(0, 1500, (size, size)), 0, 65535).astype(np.uint16)
    out.flush()


def _sample(proc: subprocess.Popen, manifest: Path, peaks: dict[str, int], stop: threading.Event) -> None:
    driver = psutil.Process(proc.pid)
    while not stop.is_set():
        try:
            workers = driver.children(recursive=True)
            rss = max((w.memory_info().rss for w in workers), default=0)
        except psutil.NoSuchProcess:
            return
        stage = None
        try:
            data = json.loads(manifest.read_text())
            stage = next((s["name"] for s in data.get("stages", []) if s.get("status") == "running"), None)
        except (OSError, ValueError):
            pass
        if stage is not None:
            peaks[stage] = max(peaks.get(stage, 0), rss)
        stop.wait(0.1)


def idle_worker_mb(memory_limit: str) -> float:
    """RSS of a local worker that has imported porelab's stages and done nothing yet, MiB."""
    sys.path.insert(0, str(REPO))
    from pipeline.engine.dask_cluster import dask_client

    def rss() -> int:
        import pipeline.jobs.stages.correct  # noqa: F401 - what a working worker has loaded
        import pipeline.jobs.stages.preprocess  # noqa: F401 - what a working worker has loaded

        return psutil.Process().memory_info().rss

    with dask_client(n_workers=1, threads_per_worker=1, memory_limit=memory_limit) as client:
        return max(client.run(rss).values()) / 2**20


def measure(stack: Path, chunks: tuple[int, int, int], memory_limit: str, work: Path) -> dict[str, object]:
    job = {
        "name": "mem",
        "engine": {"dask": {"n_workers": 1, "threads_per_worker": 1, "memory_limit": memory_limit}, "chunks": list(chunks)},
        "stages": [
            {"stage": "ingest", "path": str(stack), "voxel_size_nm": [10, 5, 5]},
            {"stage": "correct", "tilt": {"enabled": False}, "roi": {"mode": "none"}},
            {"stage": "preprocess", "denoise": {"method": "median", "dims": 3, "size": 3}},
        ],
    }
    job_file = work / f"job-{'x'.join(map(str, chunks))}.yaml"
    job_file.write_text(yaml.safe_dump(job))
    runs = work / f"runs-{'x'.join(map(str, chunks))}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PORELAB_PROGRESS": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(job_file), "--runs-dir", str(runs)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[str, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc, runs / "mem" / "manifest.json", peaks, stop), daemon=True)
    sampler.start()
    _, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"porelab run failed for chunks {chunks}:\n{err}")
    return {"chunks": chunks, "chunk_mb": 4 * int(np.prod(chunks)) / 2**20,
            "peaks_mb": {k: v / 2**20 for k, v in peaks.items()}, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--chunks", nargs="+", default=["8,256,256", "16,512,512", "32,512,512"])
    ap.add_argument("--memory-limit", default="4GiB")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO / ".cache" if (REPO / ".cache").is_dir() else None) as tmp:
        work = Path(tmp)
        stack = work / "stack.npy"
        _stack(stack, args.slices, args.size)
        print(f"stack {args.slices} x {args.size} x {args.size} uint16 ({stack.stat().st_size / 2**20:.0f} MiB); "
              f"one single-threaded worker, limit {args.memory_limit}; cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
        idle = idle_worker_mb(args.memory_limit)
        print(f"baseline: an idle worker with the stages imported, {idle:.0f} MiB RSS")
        print(f"{'chunks':>12} {'chunk MiB':>9}  {'stage':<10} {'peak MiB':>8} {'(peak-idle)/chunk':>17}")
        by_stage: dict[str, list[tuple[float, float]]] = {}
        for spec in args.chunks:
            chunks = tuple(int(c) for c in spec.split(","))
            r = measure(stack, chunks, args.memory_limit, work)  # type: ignore[arg-type]
            for stage, peak in r["peaks_mb"].items():  # type: ignore[union-attr]
                ratio = (peak - idle) / r["chunk_mb"]  # type: ignore[operator]
                print(f"{spec:>12} {r['chunk_mb']:9.1f}  {stage:<10} {peak:8.0f} {ratio:17.1f}")
                by_stage.setdefault(stage, []).append((float(r["chunk_mb"]), float(peak)))  # type: ignore[arg-type]
            print(f"{'':>12} run took {r['seconds']:.0f} s")
        if len(args.chunks) > 1:
            print("least-squares fit, peak MiB = fixed + per-chunk x chunk MiB (fixed includes the idle worker):")
            for stage, points in by_stage.items():
                x, y = np.array(points).T
                slope, fixed = np.polyfit(x, y, 1)
                print(f"  {stage:<10} fixed {fixed:6.0f} MiB  per-chunk {slope:5.1f}")


if __name__ == "__main__":
    main()
