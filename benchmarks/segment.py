"""Segmentation throughput and training scaling, measured in one run.

Run:  .venv/bin/python benchmarks/segment.py [--model DIR [--refine DIR]] [--shape 48,512,512] [--workers 2]
      [--skip-inference] [--skip-training] [--accuracy]
      [--overlaps 0,0.125,0.25,0.5 --dataset DATA.zarr [--refine DIR] [--samples 8]]
      [--runtimes torch,torch-bf16,onnx --dataset DATA.zarr --model DIR --refine DIR [--samples 8]]

What is measured:

* inference (same model, same tiles, same volume):
  - baseline: a plain in-process batched torch loop (``predict_volume``: the
    tiles of the global grid, batched, blended) with torch (fp32) on all
    cores; the same loop with bf16 autocast (``torch-bf16``) and with ONNX
    Runtime;
  - porelab's dask path: ``predict_dask`` on N single-threaded local workers
    (threads = cores / workers) with the runtime ``auto`` picks here, the
    model loaded once per worker,
    (a) computed and gathered, (b) store to store (zarr float32 in,
    segmentation store out) as ``porelab segment`` does;
  - the ratio of each to the baseline, max |difference| to it, peak RSS per
    worker, and seconds per Gvox extrapolated for a whole stack;
  - with ``--refine DIR``: the 3D refinement store to store after it (at
    ``--refine-overlap``, default the card's), and the whole segmentation
    (2D + 3D) in Mvox/s.
* training (``--skip-training`` to leave out): samples/s of 2 Ray Train
  workers against 1 on the same dataset and settings (second epoch).
* overlap (``--overlaps 0,0.125,0.25,0.5 --dataset DATA.zarr --model DIR
  [--refine DIR]``): the test split segmented at each tile overlap (2D, then
  the 3D refinement at the same overlap; the first row is both models at
  their cards' defaults), accuracy, pore IoU and porosity
  error against the labels, and Mvox/s of each, against the overlap the
  model card names (the baseline of that table);
* runtimes (``--runtimes torch,torch-bf16,onnx --dataset DATA.zarr --model DIR
  --refine DIR``): the test split segmented (2D, then the 3D refinement) by
  each runtime: accuracy, IoU, porosity error and Mvox/s, the first runtime
  the baseline;
* accuracy (``--accuracy``): runs ``jobs/ablation.yaml`` (2D, 2.5D k = 3, 5,
  each with and without 3D refinement, against the threshold baseline on the
  test split) and prints its table. Long: see the job file.

The default model is a randomly initialised 2.5D U-Net of the shipped
architecture unless ``--model`` names a trained one (speed does not depend on
the weights). On a shared machine the seconds are noisy: compare ratios from
the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.engine.dask_cluster import dask_client, threads_per_task  # noqa: E402
from pipeline.io.volume import as_volume, open_volume, write_volume  # noqa: E402
from pipeline.models.folder import read_card  # noqa: E402
from pipeline.segment.infer import predict_dask, predict_volume  # noqa: E402
from pipeline.segment.predictor import cpu_has_amx, resolve_runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from preprocess import _peak_mib, _reset_peak  # noqa: E402 - the peak-RSS probes all benchmarks use


def rendered_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A rendered synthetic stack (random spheres, default render settings), preprocessed to float32 in [0, 1]."""
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import random_spheres
    from pipeline.train.config import DEFAULT_PREPROCESS
    from pipeline.train.data import prepare_image

    full = (max(shape[0], 32), *shape[1:])
    labels = random_spheres(full, porosity=0.5, median_nm=120.0, sigma=0.3, voxel_size_nm=(10.0, 10.0, 10.0), seed=seed).labels
    labels = labels[: shape[0]]
    img = render_builtin(labels, (10.0, 10.0, 10.0), seed=seed).image
    return prepare_image(img, DEFAULT_PREPROCESS)


def _store_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The job's default store chunks, clipped to the volume (what porelab segment starts from)."""
    from pipeline.io.volume import DEFAULT_CHUNKS

    return tuple(min(int(c), int(s)) for c, s in zip(DEFAULT_CHUNKS, shape))


def default_model(folder: Path) -> Path:
    """A randomly initialised model of the shipped 2.5D architecture (for speed only)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_model_folder  # noqa: PLC0415 - the tests' model maker

    return make_model_folder(folder, kind="slices", k=3, features=16, depth=4, tile=(256, 256))


def bench_inference(model: Path, shape: tuple[int, int, int], workers: int, tmp: Path, refine: Path | None = None,
                    refine_overlap: float | None = None) -> None:
    import torch

    card = read_card(model)
    cores = len(os.sched_getaffinity(0))
    vol = rendered_volume(shape)
    vox = vol.size
    print(f"inference: model {card.name} ({card.parameters:,} parameters, {card.input.slices} slices, tile "
          f"{card.inference.tile}, overlap {card.inference.overlap}), volume {shape}, {cores} cores")
    torch.set_num_threads(cores)
    timings = {}
    names = {"torch": "torch eager (fp32)", "torch-bf16": "torch eager, bf16 autocast", "onnx": "ONNX Runtime"}
    for runtime in names:
        predict_volume(vol[: card.input.slices + 1], model, card, threads=cores, runtime=runtime)  # warm-up
        _reset_peak()
        t0 = time.perf_counter()
        out = predict_volume(vol, model, card, threads=cores, runtime=runtime)
        timings[runtime] = time.perf_counter() - t0
        if runtime == "torch":
            ref = out
        print(f"  in-process batched {names[runtime]} loop, {cores} threads: "
              f"{vox / timings[runtime] / 1e6:.3f} Mvox/s ({timings[runtime]:.1f} s) = {timings['torch'] / timings[runtime]:.2f}x "
              f"torch eager, peak RSS {_peak_mib():.0f} MiB, max |diff| to torch {float(np.abs(out - ref).max()):.1e}")
    base = timings["torch"]
    auto = resolve_runtime("auto", "cpu")
    print(f"  baseline below: torch eager (fp32); the dask path runs {auto} (runtime auto on this CPU: "
          f"{'AMX' if cpu_has_amx() else 'no AMX'})")
    src = write_volume(as_volume(vol, (10.0, 10.0, 10.0)), tmp / "in.zarr")
    with dask_client(n_workers=workers, threads_per_worker=1, memory_limit="3GiB", local_directory=tmp / "dask") as client:
        threads = threads_per_task(client)
        data = open_volume(src).data
        warm = predict_dask(data[: card.input.slices + 1], model, card, threads=threads)
        warm.compute()  # the model loaded on every worker once, before timing
        client.run(_reset_peak)
        t0 = time.perf_counter()
        out = predict_dask(data, model, card, threads=threads).compute()
        gathered = time.perf_counter() - t0
        peaks = list(client.run(_peak_mib).values())
        diff = float(np.abs(out - ref).max())
        print(f"  dask path ({names[auto]}), {workers} workers x {threads} thread(s), gathered: {vox / gathered / 1e6:.3f} Mvox/s "
              f"({gathered:.1f} s) = {base / gathered:.2f}x baseline; max |diff| {diff:.1e}; peak RSS per worker "
              + ", ".join(f"{p:.0f}" for p in peaks) + " MiB")
        from pipeline.engine.blocks import nesting_chunks, store_blocks
        from pipeline.io.volume import create_group_store
        from pipeline.segment.volume import SegmentOptions, segment_volume

        client.run(_reset_peak)
        t0 = time.perf_counter()
        seg = segment_volume(open_volume(src), SegmentOptions(model=model, threads=threads))
        targets = create_group_store(tmp / "out.zarr", as_volume(data, (10.0, 10.0, 10.0), name="mask"), seg.variables,
                                     chunks=nesting_chunks(seg.data.chunks[1:], _store_chunks(data.shape)))
        store_blocks(seg.data, [targets[n] for n in seg.variables], markers=None, cover_data_chunks=True)
        stored = time.perf_counter() - t0
        peaks = list(client.run(_peak_mib).values())
        print(f"  dask path, store to store (porelab segment): {vox / stored / 1e6:.3f} Mvox/s ({stored:.1f} s) = "
              f"{base / stored:.2f}x baseline; peak RSS per worker " + ", ".join(f"{p:.0f}" for p in peaks) + " MiB")
        print(f"  a whole stack: {stored / vox * 1e9 / 60:.1f} min per Gvox store to store on {workers} workers")
        if refine is not None:
            from pipeline.segment.volume import refine_volume

            client.run(_reset_peak)
            t0 = time.perf_counter()
            ref3d = refine_volume(open_volume(tmp / "out.zarr", "probability"), open_volume(src),
                                  SegmentOptions(model=refine, threads=threads, overlap=refine_overlap, scratch=tmp / "tiles"))
            targets = create_group_store(tmp / "out3d.zarr", as_volume(data, (10.0, 10.0, 10.0), name="mask"), ref3d.variables,
                                         chunks=nesting_chunks(ref3d.data.chunks[1:], _store_chunks(data.shape)))
            store_blocks(ref3d.data, [targets[n] for n in ref3d.variables], markers=None, cover_data_chunks=True)
            t3d = time.perf_counter() - t0
            peaks = list(client.run(_peak_mib).values())
            ov3 = read_card(refine).inference.overlap if refine_overlap is None else refine_overlap
            print(f"  3D refinement {read_card(refine).name} (tile overlap {ov3}), store to store: {vox / t3d / 1e6:.3f} Mvox/s ({t3d:.1f} s); "
                  "peak RSS per worker " + ", ".join(f"{p:.0f}" for p in peaks) + " MiB")
            print(f"  the whole segmentation (2D + 3D refinement, blended, TTA off): {vox / (stored + t3d) / 1e6:.3f} Mvox/s "
                  f"= {(stored + t3d) / vox * 1e9 / 60:.1f} min per Gvox on {workers} workers")


def bench_training(tmp: Path, dataset: Path | None) -> None:
    from pipeline.engine.ray_cluster import ray_session
    from pipeline.train.config import Train2DSettings
    from pipeline.train.run import train_model

    if dataset is None:
        from pipeline.synth.factory import build_dataset, plan_samples
        from pipeline.synth.params import DEFAULT_RENDER_RANGES

        dataset = tmp / "train.zarr"
        plans = plan_samples(12, seed=5, shape=(32, 128, 128), voxel_size_nm=(10.0, 10.0, 10.0),
                             families={"solid_spheres": 1.0, "blobs": 1.0}, structure_ranges={"porosity": (0.35, 0.65)},
                             render={"backend": "builtin"}, render_ranges=DEFAULT_RENDER_RANGES)
        build_dataset(dataset, plans, seed=5, executor="local", splits={"train": 0.75, "val": 0.25}, figures=False)
    rates = {}
    cores = len(os.sched_getaffinity(0))
    layouts = [(1, 1), (1, cores), (2, max(1, cores // 2))]
    with ray_session(num_cpus=cores):
        for n, cpus in layouts:
            s = Train2DSettings(slices=3, patch=(128, 128), tile=(128, 128), epochs=2, steps_per_epoch=20, batch_size=8,
                                val_slices=2, val_samples=1, net={"features": 16, "depth": 4},
                                workers={"executor": "ray", "num_workers": n, "cpus_per_worker": cpus})
            r = train_model(s, root=tmp / f"train{n}x{cpus}", dataset=dataset, seed=0, stage_hash=f"b{n}x{cpus}", name=f"b{n}")
            rates[(n, cpus)] = r.history[-1]["samples_per_second"]
            print(f"training: {n} Ray worker(s) x {cpus} CPU: {rates[(n, cpus)]:.2f} samples/s (128 x 128 x 3 patches, "
                  f"{r.history[-1]['precision']}, data loading {100 * r.history[-1]['data_fraction']:.0f} % of the step time)")
    two = rates[layouts[2]]
    print(f"  2 workers x {layouts[2][1]} CPU against 1 worker x 1 CPU: {two / rates[(1, 1)]:.2f}x; "
          f"against 1 worker x {cores} CPUs (torch threads): {two / rates[(1, cores)]:.2f}x")


def load_test_stacks(dataset: Path, card: Any, samples: int) -> tuple[list[int], list[tuple[np.ndarray, np.ndarray]]]:
    """The first ``samples`` test stacks of ``dataset``: their rows and (image prepared for the model, labels)."""
    import zarr

    from pipeline.segment.dataset import select_rows
    from pipeline.train.data import prepare_image

    rows = select_rows(dataset, ["test"])[:samples]
    images, labels = zarr.open_array(dataset / "image", mode="r"), zarr.open_array(dataset / "labels", mode="r")
    return rows, [(prepare_image(np.asarray(images[i]), card.input.preprocess), np.asarray(labels[i])) for i in rows]


def bench_overlap(model: Path, refine: Path | None, dataset: Path, overlaps: list[float], samples: int) -> None:
    """Accuracy and speed of the test split segmented at each tile overlap."""
    from pipeline.analyze.confusion import counts, summarize

    card = read_card(model)
    rcard = read_card(refine) if refine is not None else None
    cores = len(os.sched_getaffinity(0))
    rows, data = load_test_stacks(dataset, card, samples)
    vox = sum(img.size for img, _ in data)
    print(f"overlap: {len(rows)} test stacks of {dataset.name} ({vox / 1e6:.1f} Mvox), model {card.name} "
          f"(card overlap {card.inference.overlap}), refinement {rcard.name if rcard else 'none'}, {cores} threads")
    print(f"  {'overlap':>8} {'2D s':>7} {'Mvox/s':>7} {'acc %':>6} {'IoU pore %':>10} {'por. err':>8}"
          + (f" | {'3D s':>6} {'Mvox/s':>7} {'acc %':>6} {'IoU pore %':>10} {'por. err':>8}" if rcard else ""))
    rows_out = {}
    for ov in [card.inference.overlap, *[o for o in overlaps if o != card.inference.overlap]]:
        # the 3D refinement at the same overlap, except on the baseline row (both at their cards' defaults)
        ov3 = rcard.inference.overlap if rcard is not None and ov == card.inference.overlap else ov
        c2 = c3 = 0
        t2 = t3 = 0.0
        for img, lab in data:
            t0 = time.perf_counter()
            p = predict_volume(img, model, card, overlap=ov, threads=cores)[0]
            t2 += time.perf_counter() - t0
            c2 = c2 + counts(p, lab)
            if rcard is not None:
                t0 = time.perf_counter()
                q = predict_volume(np.stack([p, img]), refine, rcard, overlap=ov3, threads=cores)[0]
                t3 += time.perf_counter() - t0
                c3 = c3 + counts(q, lab)
        m2 = summarize(c2)
        line = (f"  {ov:>8.3f} {t2:>7.1f} {vox / t2 / 1e6:>7.2f} {100 * m2['accuracy']:>6.2f} {100 * m2['iou_pore']:>10.2f} "
                f"{m2['porosity_abs_error']:>8.4f}")
        if rcard is not None:
            m3 = summarize(c3)
            line += (f" | {t3:>6.1f} {vox / t3 / 1e6:>7.2f} {100 * m3['accuracy']:>6.2f} {100 * m3['iou_pore']:>10.2f} "
                     f"{m3['porosity_abs_error']:>8.4f}")
        rows_out[ov] = (t2, m2)
        print(line + ("   (card default: baseline)" if ov == card.inference.overlap else
                      f"   {rows_out[card.inference.overlap][0] / t2:.2f}x the default's speed"))


def bench_runtimes(model: Path, refine: Path, dataset: Path, runtimes: list[str], samples: int) -> None:
    """Accuracy and speed of the test split segmented (2D + 3D refinement) by each runtime."""
    from pipeline.analyze.confusion import counts, summarize

    card, rcard = read_card(model), read_card(refine)
    cores = len(os.sched_getaffinity(0))
    rows, data = load_test_stacks(dataset, card, samples)
    vox = sum(img.size for img, _ in data)
    print(f"runtimes: {len(rows)} test stacks of {dataset.name} ({vox / 1e6:.1f} Mvox), models {card.name} + {rcard.name}, "
          f"{cores} threads, in process; baseline: {runtimes[0]}")
    print(f"  {'runtime':>11} {'2D Mvox/s':>9} {'3D Mvox/s':>9} {'2D+3D':>6} | {'acc %':>6} {'IoU pore %':>10} "
          f"{'IoU solid %':>11} {'por. err':>8} {'voxels changed %':>16}")
    first: dict[str, Any] = {}
    for rt in runtimes:
        c3 = 0
        t2 = t3 = 0.0
        masks = []
        for img, lab in data:
            predict_volume(img[:2], model, card, threads=cores, runtime=rt)  # warm-up (an ONNX export, a first call)
            t0 = time.perf_counter()
            p = predict_volume(img, model, card, threads=cores, runtime=rt)[0]
            t2 += time.perf_counter() - t0
            t0 = time.perf_counter()
            q = predict_volume(np.stack([p, img]), refine, rcard, threads=cores, runtime=rt)[0]
            t3 += time.perf_counter() - t0
            c3 = c3 + counts(q, lab, threshold=rcard.inference.threshold)
            masks.append(q >= rcard.inference.threshold)
        m = summarize(c3)
        first.setdefault("masks", masks)
        changed = 100 * sum(int((a != b).sum()) for a, b in zip(masks, first["masks"])) / vox
        print(f"  {rt:>11} {vox / t2 / 1e6:>9.2f} {vox / t3 / 1e6:>9.2f} {vox / (t2 + t3) / 1e6:>6.2f} | "
              f"{100 * m['accuracy']:>6.2f} {100 * m['iou_pore']:>10.2f} {100 * m['iou_solid']:>11.2f} "
              f"{m['porosity_abs_error']:>8.4f} {changed:>16.3f}")


def bench_accuracy() -> None:
    job = REPO / "jobs" / "ablation.yaml"
    subprocess.run([sys.executable, "-m", "pipeline", "run", str(job)], check=True, cwd=REPO)
    from pipeline.jobs.models import load_job

    name = load_job(job).name
    for f in sorted((REPO / "runs" / name).glob("*.md")):
        print(f"accuracy ({f.stem}):\n{f.read_text()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: random weights, shipped architecture)")
    ap.add_argument("--shape", default="48,512,512", help="volume Z,Y,X of the inference benchmark")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dataset", type=Path, default=None, help="dataset for the training benchmark (default: a small one)")
    ap.add_argument("--skip-inference", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--accuracy", action="store_true", help="also run jobs/ablation.yaml (long) and print its table")
    ap.add_argument("--overlaps", default=None, help="tile overlaps to compare on --dataset's test split, e.g. 0,0.125,0.25,0.5")
    ap.add_argument("--refine", type=Path, default=None, help="3D refinement model: timed after the 2D model, and used by --overlaps")
    ap.add_argument("--refine-overlap", type=float, default=None, help="tile overlap of the timed 3D refinement (default the card's)")
    ap.add_argument("--samples", type=int, default=8, help="test stacks for --overlaps and --runtimes")
    ap.add_argument("--runtimes", default=None, help="runtimes to compare on --dataset's test split, e.g. torch,torch-bf16,onnx")
    args = ap.parse_args()
    cache = Path(os.environ.get("PORELAB_CACHE", REPO / ".cache"))
    cache.mkdir(parents=True, exist_ok=True)  # a fresh clone has no .cache yet
    tmp = Path(tempfile.mkdtemp(prefix="porelab-bench-segment-", dir=cache))
    try:
        if not args.skip_inference:
            model = args.model or default_model(tmp / "model")
            bench_inference(model, tuple(int(v) for v in args.shape.split(",")), args.workers, tmp, args.refine,  # type: ignore[arg-type]
                            args.refine_overlap)
        if not args.skip_training:
            bench_training(tmp, args.dataset)
        if args.overlaps:
            if args.model is None or args.dataset is None:
                ap.error("--overlaps needs --model and --dataset")
            bench_overlap(args.model, args.refine, args.dataset, [float(v) for v in args.overlaps.split(",")], args.samples)
        if args.runtimes:
            if args.model is None or args.refine is None or args.dataset is None:
                ap.error("--runtimes needs --model, --refine and --dataset")
            bench_runtimes(args.model, args.refine, args.dataset, args.runtimes.split(","), args.samples)
        if args.accuracy:
            bench_accuracy()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
