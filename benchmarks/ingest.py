"""Ingest throughput against tifffile reading the same file, and peak memory.

Writes a uint16 multi-page TIFF of ``--size-gb`` (default 2) into bench-data/,
then, each in a fresh process so peak RSS is its own:

* baseline: tifffile reads every page in order (the raw sequential read);
* porelab: ``porelab ingest`` of the same file to a zarr v3 store.

Prints MB/s of each, their ratio (goal >= 0.7) and the peak RSS of each
(goal < 1 GB for ingest), twice: with the file in the page cache (warm: the
raw read is a memory copy) and, when this process may drop the page cache
(root on Linux), read from disk (cold: what a first ingest of a new stack
meets). Each codec of ``--codecs`` (default ``auto``, what ``porelab ingest``
does by default) is timed in turn; the codec ``auto`` chose and the store's
compression ratio are printed with it. CPU seconds (user + system) of each
process are printed too: on a machine shared with other work the wall-clock
figures move with the load (the 1-minute load average is printed), CPU
seconds much less. The output store is removed before each ingest, outside
the timing. Run: ``.venv/bin/python benchmarks/ingest.py [--codecs auto,lz4,none]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

RAW = """
import resource, sys, time, tifffile
t = time.perf_counter(); n = 0
with tifffile.TiffFile(sys.argv[1]) as tif:
    for page in tif.pages:
        n += page.asarray().nbytes
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
print({"bytes": n, "seconds": dt, "peak_rss": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024, "cpu_s": ru.ru_utime + ru.ru_stime})
"""

INGEST = """
import resource, sys, time
import zarr
from pipeline.io.ingest import ingest
r0 = resource.getrusage(resource.RUSAGE_SELF); t = time.perf_counter()
ingest(sys.argv[1], sys.argv[2], (10, 5, 5), overwrite=True, progress=None, codec=sys.argv[3])
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
codec = dict(zarr.open_array(sys.argv[2] + "/image", mode="r").attrs)["codec"]
print({"seconds": dt, "peak_rss": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024, "cpu_s": ru.ru_utime + ru.ru_stime - r0.ru_utime - r0.ru_stime, "codec": codec})
"""


def make_tiff(path: Path, size_gb: float) -> int:
    import tifffile

    ny, nx = 1024, 1024
    nz = int(size_gb * 1e9 / (ny * nx * 2))
    if path.exists() and path.stat().st_size >= nz * ny * nx * 2:
        return nz * ny * nx * 2
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:ny, 0:nx]
    base = (20000 + 15000 * np.sin(xx / 37.0) * np.cos(yy / 53.0)).astype(np.float32)

    def slices():
        for z in range(nz):
            noise = rng.normal(0, 800, (ny, nx)).astype(np.float32)
            yield np.clip(base + noise + 30 * z, 0, 65535).astype(np.uint16)

    tifffile.imwrite(path, slices(), shape=(nz, ny, nx), dtype=np.uint16)
    return nz * ny * nx * 2


def drop_caches() -> bool:
    """Empty the page cache (Linux, root); False where not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=REPO)
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own subprocess's dict literal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--codecs", default="auto", help="comma-separated codecs to time (auto, none, lz4, zstd)")
    args = parser.parse_args()
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    data = REPO / "bench-data"
    tif = data / f"stack-{args.size_gb:g}GB.tif"
    nbytes = make_tiff(tif, args.size_gb)
    store = data / "stack.zarr"
    cold = drop_caches()
    result: dict = {"file_gb": round(nbytes / 1e9, 3), "cores": os.cpu_count(), "load_1min_start": round(os.getloadavg()[0], 2)}
    for codec in codecs:
        entry: dict = {}
        for mode in ("cold", "warm") if cold else ("warm",):
            raw, ing = [], []
            for _ in range(args.repeat):
                if mode == "cold":
                    drop_caches()
                raw.append(run(RAW, str(tif)))
                shutil.rmtree(store, ignore_errors=True)
                if mode == "cold":
                    drop_caches()
                else:
                    run(RAW, str(tif))  # the file in the page cache
                ing.append(run(INGEST, str(tif), str(store), codec))
            raw_best = min(raw, key=lambda r: r["seconds"])
            ing_best = min(ing, key=lambda r: r["seconds"])
            entry[mode] = {
                "baseline_tifffile_MBps": round(nbytes / raw_best["seconds"] / 1e6, 1),
                "porelab_ingest_MBps": round(nbytes / ing_best["seconds"] / 1e6, 1),
                "ratio_ingest_over_tifffile": round(raw_best["seconds"] / ing_best["seconds"], 3),
                "cpu_s_tifffile": round(raw_best["cpu_s"], 2),
                "cpu_s_ingest": round(ing_best["cpu_s"], 2),
                "peak_rss_MB_tifffile": round(max(r["peak_rss"] for r in raw) / 1e6, 1),
                "peak_rss_MB_ingest": round(max(r["peak_rss"] for r in ing) / 1e6, 1),
            }
        stored = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        entry["codec_chosen"] = ing[-1]["codec"]
        entry["store_compression_ratio"] = round(nbytes / stored, 2)
        result[f"codec={codec}"] = entry
        shutil.rmtree(store, ignore_errors=True)
    result["load_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
