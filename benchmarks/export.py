"""Export throughput and peak memory against writing the same volume from memory.

Writes a uint16 volume store of ``--size-gb`` (default 1; noise on a smooth
pattern, like a FIB-SEM stack) into bench-data/, then, each in a fresh
process so that peak RSS is its own:

* baseline: the naive export, ``open_volume(store).values`` (the whole volume
  in memory) then ``tifffile.imwrite`` of it as an ImageJ TIFF;
* ``porelab export`` to tiff, raw and ome-zarr (NGFF 0.4, 3 levels),
  streamed slab by slab;
* with the ``ome-zarr`` package installed (the dev extra): its
  ``write_image`` of the same lazy dask array (3 levels, its default
  nearest-neighbour pyramid), the other streaming OME-Zarr writer.

Prints MB/s of each (volume bytes / seconds), the ratio of each to the
baseline and peak RSS (goal: streamed exports well under the volume's size).
The page cache is warm for every run (the store was just read).
Run: ``.venv/bin/python benchmarks/export.py [--size-gb 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MAKE = """
import sys
import dask.array as da, numpy as np
from pipeline.io.volume import as_volume, write_volume
nz, ny, nx = int(sys.argv[2]), 1024, 2048
yy, xx = np.mgrid[0:ny, 0:nx]
base = (20000 + 15000 * np.sin(xx / 37.0) * np.cos(yy / 53.0)).astype(np.uint16)
def block(b, block_info=None):
    (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    rng = np.random.default_rng([z0, y0, x0])
    return base[y0:y1, x0:x1] + rng.integers(0, 2400, b.shape, dtype=np.uint16)  # uniform noise: fast to draw
arr = da.map_blocks(block, da.zeros((nz, ny, nx), np.uint16, chunks=(32, 256, 256)), dtype=np.uint16)
write_volume(as_volume(arr, (10.0, 5.0, 5.0)), sys.argv[1], overwrite=True)
print({})
"""

TIMED = """
import resource, sys, time
store, out, kind = sys.argv[1:4]
t = time.perf_counter()
if kind == "baseline":
    import tifffile
    from pipeline.io.volume import open_volume
    vol = open_volume(store)
    a = vol.values
    tifffile.imwrite(out, a, imagej=True, resolution=(0.2, 0.2), metadata={"spacing": 10.0, "unit": "nm", "axes": "ZYX"})
elif kind == "ome-zarr-py":
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.scale import Scaler
    from ome_zarr.writer import write_image
    from pipeline.io.volume import open_volume
    vol = open_volume(store)
    root = zarr.open_group(out, mode="w", zarr_format=2)
    write_image(vol.data, root, axes="zyx", fmt=FormatV04(), scaler=Scaler(max_layer=2), storage_options={"chunks": (32, 256, 256)})
else:
    from pipeline.io.export import export_store
    export_store(store, out, to=kind, levels=3, overwrite=True, progress=None)
dt = time.perf_counter() - t
print({"seconds": dt, "peak_rss": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024})
"""

OUTPUTS = {"baseline": "baseline.tif", "tiff": "out.tif", "raw": "out.raw", "ome-zarr": "out.ome.zarr", "ome-zarr-py": "py.ome.zarr"}


def run(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PORELAB_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=REPO, env=env)
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own subprocess's dict literal


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
        (p.with_name(p.name + ".json")).unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    data = REPO / "bench-data"
    data.mkdir(exist_ok=True)
    nz = max(32, int(args.size_gb * 1e9 / (1024 * 2048 * 2)))
    nbytes = nz * 1024 * 2048 * 2
    store = data / f"export-{nz}.zarr"
    if not store.exists():
        run(MAKE, str(store), str(nz))
    kinds = ["baseline", "tiff", "raw", "ome-zarr"]
    try:
        import ome_zarr  # noqa: F401

        kinds.append("ome-zarr-py")
    except ImportError:
        pass
    result: dict = {"volume": [nz, 1024, 2048], "dtype": "uint16", "volume_GB": round(nbytes / 1e9, 3), "cores": os.cpu_count()}
    best: dict[str, dict] = {}
    for kind in kinds:
        out = data / OUTPUTS[kind]
        runs = []
        for _ in range(args.repeat):
            _remove(out)
            runs.append(run(TIMED, str(store), str(out), kind))
        best[kind] = min(runs, key=lambda r: r["seconds"])
        _remove(out)
    base = best["baseline"]["seconds"]
    for kind, r in best.items():
        result[kind] = {
            "MBps": round(nbytes / r["seconds"] / 1e6, 1),
            "seconds": round(r["seconds"], 2),
            "ratio_to_baseline": round(base / r["seconds"], 3),
            "peak_rss_MB": round(r["peak_rss"] / 1e6, 1),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
