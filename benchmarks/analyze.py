"""Analysis and meshing benchmarks, and the paper's Fig. 11 / 12 method comparison.

Run:  .venv/bin/python benchmarks/analyze.py [--lt-sizes 100,300,500] [--tau-sizes 200,300] [--skip meshing,comparison]

PoreSpy and TauFactor are the baselines, installed for the benchmark only (not porelab dependencies):
      .venv/bin/pip install -c constraints.txt taufactor connected-components-3d deprecated numba pyevtk \
          pyvista rich tomli matplotlib-inline pandas && .venv/bin/pip install --no-deps porespy==3.2.0
(PoreSpy 3.2 pins edt<3.1; --no-deps keeps porelab's edt, with which it runs unchanged.)
A baseline that is not installed is reported as such and its rows are left out.

1. Local thickness against PoreSpy 3.2's ``local_thickness`` (its default: brute-force sphere
   insertion on integer radii, numba, every core) on the same volume in the same run, each run in
   a fresh process (peak RSS: the child's high-water mark, imports and numba kernels included):
   - large pores: a FiberForm-like felt (``random_fibers``: porosity 0.90, fibres of 10 voxels,
     13 µm at 1.3 µm, mostly in the y-x plane; NASA PuMA's FiberForm sample is not available offline),
   - small pores: gaussian blobs (porosity 0.45, correlation 4 voxels: mean pore diameter about 12 voxels).
   porelab runs out of core (zarr store in, dask blocks, zarr store out, as ``porelab measure``) and
   in memory (``local_thickness``); both are checked equal voxel for voxel, and against the radius
   sweep (``local_thickness_sweep``) at the smallest size. Mvox/s, the ratio to PoreSpy, peak RSS,
   and the mean diameter of each (PoreSpy's on its integer radii).
2. Tortuosity factor (steady diffusion, pores, along z) against TauFactor's ``Solver`` on the
   CPU (torch) on the same blobs: seconds, peak RSS, tau and D_eff/D0 side by side.
3. Meshing Mvox/s per method (single block, and chunked for mc_basic).
4. Fig. 11 / 12: every method on several random-sphere structures against a
   2x-supersampled ground truth: a table (mean ± std over structures) and bar charts
   with error bars written to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dask  # noqa: E402
import dask.array  # noqa: E402
import psutil  # noqa: E402

from pipeline.analyze.store import write_blocks  # noqa: E402
from pipeline.analyze.thickness import local_thickness_dask  # noqa: E402
from pipeline.io.volume import as_volume, open_volume, write_volume  # noqa: E402
from pipeline.reconstruct.build import METHODS, mesh_volume  # noqa: E402
from pipeline.reconstruct.compare import compare_methods, sphere_structure, summarize  # noqa: E402

GIB = 2**30


def structure(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    from pipeline.synth.structures import random_spheres

    return random_spheres(shape, porosity=0.45, median_nm=120.0, sigma=0.3, voxel_size_nm=(10, 10, 10), seed=seed).labels


def volume(family: str, n: int, seed: int = 0) -> np.ndarray:
    """The benchmark volumes (uint8, 1 = pore), n^3 voxels."""
    from pipeline.synth.structures import gaussian_blobs, random_fibers

    if family == "fibres":
        return random_fibers((n, n, n), porosity=0.9, diameter_nm=13000.0, voxel_size_nm=(1300.0,) * 3, seed=seed).labels
    return gaussian_blobs((n, n, n), porosity=0.45, correlation_nm=40.0, voxel_size_nm=(10.0,) * 3, seed=seed).labels


def _high_water() -> int:
    """This process's peak RSS (bytes): VmHWM, which starts again at exec (``ru_maxrss`` keeps the
    parent's peak across fork and exec, so every child reported at least the parent's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(part: str, src: str, out: str) -> None:
    """One measurement in a fresh process: prints JSON with seconds, peak RSS over the start and the result's summary."""
    base = _high_water()
    info: dict = {}
    if part == "porespy":
        import porespy as ps

        warm = np.ones((24, 24, 24), bool)
        warm[12] = False
        ps.filters.local_thickness(warm)  # numba compilation, not timed
        lab = np.load(src) == 1
        base = _high_water()
        t0 = time.perf_counter()
        lt = ps.filters.local_thickness(lab)
        sec = time.perf_counter() - t0
        info["mean_diameter_voxels"] = float(2 * lt[lab].mean())
    elif part == "taufactor":
        import taufactor as tau

        lab = np.load(src)
        base = _high_water()
        t0 = time.perf_counter()
        solver = tau.Solver(lab, device="cpu")
        t = solver.solve(verbose=False)
        sec = time.perf_counter() - t0
        info.update(tau=float(np.ravel(t)[0]), d_rel=float(np.ravel(solver.D_rel)[0]), iterations=int(solver.iter))
    elif part == "factor":
        from pipeline.analyze.transport import tortuosity_factor

        lab = np.load(src)
        tortuosity_factor(lab[:12, :12, :12] == 1, (1, 1, 1))  # numba kernels loaded, not timed
        base = _high_water()
        t0 = time.perf_counter()
        r = tortuosity_factor(lab == 1, (1.0, 1.0, 1.0), axis=0)
        sec = time.perf_counter() - t0
        info.update(tau=r["tau"], d_rel=r["effective_diffusivity"], iterations=r["iterations"], flux_spread=r["flux_spread"])
    elif part == "mem":
        from pipeline.analyze.thickness import local_thickness

        warm = np.ones((24, 24, 24), bool)
        warm[12] = False
        local_thickness(warm)
        lab = np.load(src) == 1
        base = _high_water()
        t0 = time.perf_counter()
        lt = local_thickness(lab, (1.0, 1.0, 1.0))
        sec = time.perf_counter() - t0
        np.save(out, lt)
        info["mean_diameter_voxels"] = float(lt[lab].mean())
    else:  # out of core: zarr in, dask blocks, zarr out
        from pipeline.analyze.store import write_blocks
        from pipeline.analyze.thickness import local_thickness
        from pipeline.io.volume import as_volume, open_volume

        warm = np.ones((24, 24, 24), bool)
        warm[12] = False
        local_thickness(warm)
        dask.config.set(scheduler="threads", num_workers=os.cpu_count())
        local_thickness_dask(dask.array.from_array(warm, chunks=12), (1.0, 1.0, 1.0), block_voxels=1)[0].compute()
        base = _high_water()
        t0 = time.perf_counter()
        scratch = Path(out).parent / "distances.zarr"  # as porelab measure: the first pass's distances, read by the blocks
        lt, meta = local_thickness_dask(open_volume(src).data == 1, (1.0, 1.0, 1.0), scratch=scratch)
        write_blocks(as_volume(lt, (1.0, 1.0, 1.0), name="thickness"), out, chunks=(64, 64, 64), block_shape=lt.chunksize)
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
        sec = time.perf_counter() - t0
        info.update(block_shape=meta["block_shape"], halo=meta["halo_voxels"], radii=len(meta["radii_nm"]), r_max=meta["r_max_nm"])
    peak = _high_water()
    print(json.dumps({"seconds": sec, "peak_delta": peak - base, "peak": peak, **info}))


def _run_child(part: str, src: Path, out: Path) -> dict | None:
    import subprocess

    res = subprocess.run([sys.executable, __file__, "--child", part, str(src), str(out)],
                         capture_output=True, text=True, env=dict(os.environ, PORELAB_PROGRESS="0"))
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["?"])[-1]
        print(f"   {part}: failed ({tail})")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def bench_thickness(sizes: list[int], families: list[str], tmp: Path) -> None:
    from pipeline.analyze.thickness import local_thickness_sweep, radius_grid

    have_ps = _have("porespy")
    print("\n== local thickness: porelab (out of core and in memory) against PoreSpy 3.2 local_thickness, "
          f"{os.cpu_count()} cores; each run in a fresh process" + ("" if have_ps else " (PoreSpy not installed)"))
    print(f"{'volume':<16}{'Mvox':>7}{'porelab ooc Mvox/s':>20}{'in-mem Mvox/s':>15}{'PoreSpy Mvox/s':>16}{'ooc / PoreSpy':>15}"
          f"{'peak RSS MiB ooc/mem/PoreSpy':>30}{'mean d (vox) porelab/PoreSpy':>31}  equal")
    for fam in families:
        for n in sizes:
            lab = volume(fam, n)
            nv = lab.size / 1e6
            npy = tmp / f"{fam}{n}.npy"
            np.save(npy, lab)
            store = write_volume(as_volume(lab, (1.0, 1.0, 1.0), name="labels"), tmp / f"{fam}{n}.zarr", chunks=(64, 64, 64))
            ooc = _run_child("ooc", store, tmp / "lt.zarr")
            mem = _run_child("mem", npy, tmp / "lt.npy")
            ps = _run_child("porespy", npy, tmp / "none") if have_ps else None
            same = "?"
            if ooc and mem:
                got = np.asarray(open_volume(tmp / "lt.zarr").values)
                same = str(np.array_equal(got, np.load(tmp / "lt.npy")))
                if n == min(sizes) and n <= 100:
                    ref = local_thickness_sweep(lab == 1, (1.0, 1.0, 1.0), radii=radius_grid(ooc["r_max"], (1, 1, 1)))
                    same += f", == sweep {np.array_equal(got, ref)}"
            del lab

            def rate(r: dict | None) -> str:
                return f"{nv / r['seconds']:.2f} ({r['seconds']:.1f} s)" if r else "-"

            ratio = f"{ps['seconds'] / ooc['seconds']:.1f}x" if ps and ooc else "-"
            peaks = "/".join(f"{r['peak'] / 2**20:.0f}" if r else "-" for r in (ooc, mem, ps))
            means = f"{mem['mean_diameter_voxels']:.2f}/" if mem else "-/"
            means += f"{ps['mean_diameter_voxels']:.2f}" if ps else "-"
            print(f"{fam + ' ' + str(n) + '^3':<16}{nv:7.1f}{rate(ooc):>20}{rate(mem):>15}{rate(ps):>16}{ratio:>15}{peaks:>30}{means:>31}  {same}",
                  flush=True)
            if ooc:
                print(f"{'':<16} blocks {ooc['block_shape']}, halo {ooc['halo']}, {ooc['radii']} radii, r_max {ooc['r_max']:.1f} voxels")


def bench_tortuosity(sizes: list[int], tmp: Path) -> None:
    have_tf = _have("taufactor")
    print("\n== tortuosity factor of the pores along z (steady diffusion) against TauFactor's Solver (CPU, torch), "
          "gaussian blobs; each run in a fresh process" + ("" if have_tf else " (TauFactor not installed)"))
    print(f"{'volume':<12}{'porelab s':>11}{'TauFactor s':>13}{'speed-up':>10}{'peak RSS MiB porelab/TauFactor':>31}"
          f"{'tau porelab/TauFactor':>24}{'D_eff/D0 porelab/TauFactor':>29}{'iterations':>13}")
    for n in sizes:
        npy = tmp / f"tau{n}.npy"
        np.save(npy, volume("blobs", n, seed=1))
        ours = _run_child("factor", npy, tmp / "none")
        theirs = _run_child("taufactor", npy, tmp / "none") if have_tf else None
        if ours is None:
            continue
        sp = f"{theirs['seconds'] / ours['seconds']:.2f}x" if theirs else "-"
        pk = f"{ours['peak'] / 2**20:.0f}/" + (f"{theirs['peak'] / 2**20:.0f}" if theirs else "-")
        tt = f"{ours['tau']:.4f}/" + (f"{theirs['tau']:.4f}" if theirs else "-")
        dd = f"{ours['d_rel']:.4f}/" + (f"{theirs['d_rel']:.4f}" if theirs else "-")
        it = f"{ours['iterations']}/" + (f"{theirs['iterations']}" if theirs else "-")
        print(f"{str(n) + '^3':<12}{ours['seconds']:11.1f}{(theirs['seconds'] if theirs else float('nan')):13.1f}{sp:>10}{pk:>31}{tt:>24}{dd:>29}{it:>13}",
              flush=True)


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
        _child(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lt-sizes", default="100,300,500", help="edge (voxels) of the local-thickness volumes")
    ap.add_argument("--families", default="fibres,blobs", help="local-thickness volumes: fibres (large pores), blobs (small pores)")
    ap.add_argument("--tau-sizes", default="200,300", help="edge (voxels) of the tortuosity-factor volumes")
    ap.add_argument("--mesh-shape", default="128,128,128", help="meshing volume (z,y,x)")
    ap.add_argument("--structures", type=int, default=5, help="structures of the Fig. 11/12 comparison")
    ap.add_argument("--out", default=".cache/bench/analyze", help="folder for the comparison's figure and table")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: thickness, tortuosity, meshing, comparison")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / GIB:.0f} GiB")
    with tempfile.TemporaryDirectory(dir=".cache" if os.path.isdir(".cache") else None) as tmp:
        if "thickness" not in skip:
            bench_thickness([int(v) for v in args.lt_sizes.split(",")], args.families.split(","), Path(tmp))
        if "tortuosity" not in skip:
            bench_tortuosity([int(v) for v in args.tau_sizes.split(",")], Path(tmp))
    if "meshing" not in skip:
        bench_meshing(tuple(int(v) for v in args.mesh_shape.split(",")))  # type: ignore[arg-type]
    if "comparison" not in skip:
        bench_comparison(args.structures, Path(args.out))


if __name__ == "__main__":
    main()
