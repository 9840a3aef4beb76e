"""Analysis and meshing benchmarks, and the paper's Fig. 11 / 12 method comparison.

Run:  .venv/bin/python benchmarks/analyze.py [--shape 128,192,192] [--structures 5] [--out .cache/bench/analyze]

1. Local thickness: out of core (zarr in -> dask blocks with halo, ``edt`` -> zarr out)
   against the in-memory SciPy-EDT implementation on the same volume in the same run:
   Mvox/s, their ratio, peak RSS over the process baseline, bytes per voxel, and the
   largest volume each handles in 24 GiB (in memory: 24 GiB / bytes per voxel; out of
   core: memory is per block, so the volume is bounded by disk; the peak at two volume
   sizes shows it does not grow with the volume).
2. Meshing Mvox/s per method (single block, and chunked for mc_basic).
3. Fig. 11 / 12: every method on several random-sphere structures against a
   2x-supersampled ground truth: a table (mean ± std over structures) and bar charts
   with error bars written to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dask  # noqa: E402
import psutil  # noqa: E402

from pipeline.analyze.store import write_blocks  # noqa: E402
from pipeline.analyze.thickness import local_thickness_dask, local_thickness_inmemory  # noqa: E402
from pipeline.io.volume import as_volume, open_volume, write_volume  # noqa: E402
from pipeline.reconstruct.build import METHODS, mesh_volume  # noqa: E402
from pipeline.reconstruct.compare import compare_methods, sphere_structure, summarize  # noqa: E402

GIB = 2**30


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms."""

    def __enter__(self) -> PeakRSS:
        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def delta(self) -> int:
        return self.peak - self.base


def structure(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    from pipeline.synth.structures import random_spheres

    return random_spheres(shape, porosity=0.45, median_nm=120.0, sigma=0.3, voxel_size_nm=(10, 10, 10), seed=seed).labels


def _child(part: str, store: str, out: str, radii_file: str) -> None:
    """One local-thickness run in a fresh process: prints JSON with seconds and peak RSS over the start."""
    import resource

    vs = (10.0, 10.0, 10.0)
    base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    if part == "mem":
        radii = np.load(radii_file)
        lab = np.asarray(open_volume(store).values)  # the in-memory method needs the volume in memory
        lt = local_thickness_inmemory(lab == 1, vs, radii=radii)
        np.save(out, lt)
        info: dict = {}
    else:
        dask.config.set(scheduler="threads", num_workers=2)
        radii = np.load(radii_file) if os.path.exists(radii_file) else None
        lt, info = local_thickness_dask(open_volume(store).data == 1, vs, radii=radii)
        write_blocks(as_volume(lt, vs, name="thickness"), out, chunks=(64, 64, 64), block_shape=lt.chunksize)
        if radii is None:
            np.save(radii_file, np.asarray(info["radii_nm"]))
    sec = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": sec, "peak_delta": peak - base, "info": info}))


def _run_child(part: str, store: Path, out: Path, radii: Path) -> dict:
    import subprocess

    res = subprocess.run([sys.executable, __file__, "--child", part, str(store), str(out), str(radii)],
                         capture_output=True, text=True, check=True, env=dict(os.environ, PORELAB_PROGRESS="0"))
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_thickness(shape: tuple[int, int, int], tmp: Path) -> None:
    vs = (10.0, 10.0, 10.0)
    lab = structure(shape)
    nvox = lab.size
    print(f"\n== local thickness: {shape} = {nvox / 1e6:.2f} Mvox, porosity {lab.mean():.3f} (each run in a fresh process)")
    store = write_volume(as_volume(lab, vs, name="labels"), tmp / "lab.zarr", chunks=(64, 64, 64))
    radii = tmp / "radii.npy"
    ooc = _run_child("ooc", store, tmp / "lt.zarr", radii)
    mem = _run_child("mem", store, tmp / "lt.npy", radii)
    same = np.array_equal(np.asarray(open_volume(tmp / "lt.zarr").values), np.load(tmp / "lt.npy"))
    info = ooc["info"]
    print(f"radii swept {len(info['radii_nm'])}, r_max {info['r_max_nm']:.1f} nm, halo {info['halo_voxels']} voxels; "
          f"out-of-core == in-memory: {same}")
    bpv = mem["peak_delta"] / nvox
    print(f"in memory (SciPy EDT)        : {nvox / 1e6 / mem['seconds']:7.2f} Mvox/s  ({mem['seconds']:.1f} s), "
          f"peak +{mem['peak_delta'] / 2**20:.0f} MiB = {bpv:.1f} B/voxel -> largest in 24 GiB ~ {24 * GIB / bpv / 1e9:.2f} Gvox "
          f"({(24 * GIB / bpv) ** (1 / 3):.0f}^3)")
    print(f"out of core (dask+edt, 2 thr): {nvox / 1e6 / ooc['seconds']:7.2f} Mvox/s  ({ooc['seconds']:.1f} s), "
          f"peak +{ooc['peak_delta'] / 2**20:.0f} MiB = {ooc['peak_delta'] / nvox:.1f} B/voxel of this volume")
    print(f"ratio out-of-core / in-memory: {mem['seconds'] / ooc['seconds']:.2f}x throughput, "
          f"{mem['peak_delta'] / max(ooc['peak_delta'], 1):.1f}x less memory")
    big = np.concatenate([lab, lab[::-1]], axis=0)
    store2 = write_volume(as_volume(big, vs, name="labels"), tmp / "big.zarr", chunks=(64, 64, 64))
    ooc2 = _run_child("ooc", store2, tmp / "lt2.zarr", radii)
    print(f"out of core, volume x2 ({big.size / 1e6:.1f} Mvox): {big.size / 1e6 / ooc2['seconds']:.2f} Mvox/s, "
          f"peak +{ooc2['peak_delta'] / 2**20:.0f} MiB (x{ooc2['peak_delta'] / max(ooc['peak_delta'], 1):.2f} for x2 voxels); "
          "memory is per block (block + halo), so in 24 GiB the volume is bounded by disk, not RAM")


def bench_meshing(shape: tuple[int, int, int]) -> None:
    lab = structure(shape, seed=1)
    nvox = lab.size
    print(f"\n== meshing: {shape} = {nvox / 1e6:.2f} Mvox (single block unless noted)")
    print(f"{'method':<17}{'Mvox/s':>8}{'s':>8}{'faces':>10}  watertight")
    mesh_volume(lab[:8, :8, :8], "mc_basic", voxel_size_nm=(10, 10, 10))  # imports and first-call set-up
    for m in METHODS:
        t0 = time.perf_counter()
        mesh = mesh_volume(lab, m, voxel_size_nm=(10, 10, 10))
        t = time.perf_counter() - t0
        print(f"{m:<17}{nvox / 1e6 / t:8.2f}{t:8.2f}{len(mesh.faces):10d}  {mesh.is_watertight}")
    t0 = time.perf_counter()
    mesh = mesh_volume(lab, "mc_basic", voxel_size_nm=(10, 10, 10), block_shape=(64, 64, 64))
    t = time.perf_counter() - t0
    print(f"{'mc_basic 64^3 blk':<17}{nvox / 1e6 / t:8.2f}{t:8.2f}{len(mesh.faces):10d}  {mesh.is_watertight}")


def bench_comparison(n: int, out: Path) -> None:
    from pipeline.report.plots import method_bars

    print(f"\n== Fig. 11 / 12: {n} random-sphere structures 40^3 (10 nm voxels), truth sampled 2x finer, "
          "5 % of boundary voxels flipped (a segmentation's errors)")
    cases = [sphere_structure((40, 40, 40), porosity=0.5, flip_fraction=0.05, seed=s, name=f"s{s}") for s in range(n)]
    rows = compare_methods(cases, n_points=10000)
    summ = summarize(rows)
    print(f"{'method':<17}{'Chamfer nm':>16}{'Hausdorff nm':>16}{'H95 nm':>14}{'vol ratio':>12}{'area ratio':>12}{'poros. MAE':>16}")
    for r in summ:
        print(f"{r['method']:<17}{r['chamfer_nm']:9.2f} ± {r['chamfer_nm_std']:4.2f}{r['hausdorff_nm']:9.1f} ± {r['hausdorff_nm_std']:4.1f}"
              f"{r['hausdorff95_nm']:8.2f} ± {r['hausdorff95_nm_std']:3.1f}{r['volume_ratio']:12.3f}{r['area_ratio']:12.3f}"
              f"{r['porosity_abs_error']:9.4f} ± {r['porosity_abs_error_std']:.4f}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "fig11_12.png").write_bytes(method_bars(summ, [("chamfer_nm", "Chamfer distance (nm)"),
                                                         ("porosity_abs_error", "porosity MAE")]))
    (out / "fig11_12.json").write_text(json.dumps({"rows": rows, "summary": summ}, indent=1, default=float))
    print(f"wrote {out / 'fig11_12.png'} and {out / 'fig11_12.json'}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="128,192,192", help="local-thickness volume (z,y,x)")
    ap.add_argument("--mesh-shape", default="128,128,128", help="meshing volume (z,y,x)")
    ap.add_argument("--structures", type=int, default=5, help="structures of the Fig. 11/12 comparison")
    ap.add_argument("--out", default=".cache/bench/analyze", help="folder for the comparison's figure and table")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: thickness, meshing, comparison")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / GIB:.0f} GiB")
    with tempfile.TemporaryDirectory(dir=".cache" if os.path.isdir(".cache") else None) as tmp:
        if "thickness" not in skip:
            bench_thickness(tuple(int(v) for v in args.shape.split(",")), Path(tmp))  # type: ignore[arg-type]
    if "meshing" not in skip:
        bench_meshing(tuple(int(v) for v in args.mesh_shape.split(",")))  # type: ignore[arg-type]
    if "comparison" not in skip:
        bench_comparison(args.structures, Path(args.out))


if __name__ == "__main__":
    main()
