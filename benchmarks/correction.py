"""Does correction help? Segmentation of rendered stacks raw against after ``correct`` + the model's preprocessing.

Renders ``--stacks`` test-like stacks with the built-in renderer (the four
structure families in turn; every render setting drawn from the training
ranges, with drift, curtains, charging and an illumination gradient always
present), then segments each stack two ways:

* raw: the stack as it comes, normalised as the model's training data was;
* corrected: ``porelab correct`` with its defaults (tilt off: the renderer draws
  on the cut-face grid; the ROI cropped to the region with data on every slice,
  the truth moved and cropped alike), then the same normalisation.

Each way is segmented by the threshold baseline (Otsu, porelab's defaults) and
by the shipped models (2D U-Net + 3D refinement, ``--no-unet`` to skip). The
truth is moved by the same drift shifts the correction applied; metrics
(pore IoU, absolute porosity error) are taken where every slice has data.
Prints one row per stack and method and the means; the ratio column is
corrected / raw pore IoU (the named baseline: the raw stack, same run).
Also records the peak RSS of this process.

Run: ``.venv/bin/python benchmarks/correction.py --stacks 8`` (about 6 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: artefacts that are always present (lower bounds raised from the training ranges)
PRESENT = {"gradient_amp": (0.1, 0.35), "curtain_amp": (0.05, 0.15), "curtain_count": (8.0, 30.0),
           "charging_amp": (0.1, 0.3), "drift_px": (0.3, 0.6)}
FAMILIES = ("solid_spheres", "pore_spheres", "blobs", "agglomerates")


def render_case(index: int, seed: int, shape: tuple[int, int, int], voxel_nm: float = 10.0) -> tuple[np.ndarray, np.ndarray, str]:
    """One test-like render: (uint8 image, labels registered to it, family)."""
    from pipeline.synth.params import DEFAULT_RENDER_RANGES, draw_params, sample_rng
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import generate

    rng = sample_rng(seed, index)
    family = FAMILIES[index % len(FAMILIES)]
    params = draw_params({**DEFAULT_RENDER_RANGES, **PRESENT}, rng)
    porosity = float(rng.uniform(0.35, 0.65))
    st = generate(family, shape=shape, porosity=porosity, voxel_size_nm=(voxel_nm,) * 3, seed=seed * 1000 + index,
                  median_nm=float(rng.uniform(80, min(250.0, 0.45 * min(shape) * voxel_nm))))
    r = render_builtin(st.labels, (voxel_nm,) * 3, params, seed=seed * 1000 + index + 500)
    return r.image, r.labels, family


def truth_after(labels: np.ndarray, corrected_attrs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The labels moved as the correction moved the image (uncropped), and the region with data on every slice."""
    from pipeline.correct.drift import apply_shifts
    from pipeline.correct.roi import valid_box

    shifts = np.asarray(corrected_attrs.get("drift_shift_px") or np.zeros((len(labels), 2)), dtype=np.float64)
    moved = np.asarray(apply_shifts(labels.astype(np.float32), shifts)) >= 0.5
    (y0, y1), (x0, x1) = valid_box(labels.shape[1:], shifts)
    valid = np.zeros(labels.shape, bool)
    valid[:, y0:y1, x0:x1] = True
    return moved.astype(np.uint8), valid


def scores(mask: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Pore IoU, accuracy and absolute porosity error where ``valid``."""
    m, t = mask[valid] > 0, truth[valid] > 0
    inter, union = np.sum(m & t), np.sum(m | t)
    return {"pore_iou": float(inter / union) if union else 1.0, "accuracy": float(np.mean(m == t)),
            "porosity_error": float(abs(m.mean() - t.mean()))}


def segmentations(vol: Any, unet: bool) -> dict[str, np.ndarray]:
    """Baseline and (optionally) shipped-model masks of a grey volume."""
    from pipeline.baseline.threshold import BaselineParams, baseline_segment
    from pipeline.models.folder import read_card, resolve_model
    from pipeline.segment.volume import SegmentOptions, preprocess_for, refine_volume, segment_volume

    out = {"baseline": np.asarray(baseline_segment(vol.data, BaselineParams())[0].compute())}
    if unet:
        card = read_card(resolve_model("default", task="segment"))
        pre = preprocess_for(vol, card)
        seg = segment_volume(pre, SegmentOptions(model="default"))
        prob = seg.data[1].astype(np.float32)
        import xarray as xr

        prob_vol = xr.DataArray(prob.compute(), dims=pre.dims, coords=pre.coords, attrs=pre.attrs, name="probability")
        ref = refine_volume(prob_vol, pre, SegmentOptions(model="default"))
        out["unet_2d"] = np.asarray(seg.data[0].compute()).astype(np.uint8)
        out["unet_3d"] = np.asarray(ref.data[0].compute()).astype(np.uint8)
    return out


def run_case(index: int, seed: int, shape: tuple[int, int, int], unet: bool, correct_overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (stack, family, method, way, metrics) of one render."""
    from pipeline.correct.chain import DestripeParams, DriftParams, IlluminationParams, RoiParams, TiltParams, correct_volume
    from pipeline.io.volume import as_volume

    image, labels, family = render_case(index, seed, shape)
    raw = as_volume(image, (10.0, 10.0, 10.0))
    corrected = correct_volume(raw, tilt=TiltParams(enabled=False), roi=RoiParams(mode="auto"),
                               illumination=IlluminationParams(**correct_overrides.get("illumination", {})),
                               drift=DriftParams(**correct_overrides.get("drift", {})),
                               destripe=DestripeParams(**correct_overrides.get("destripe", {})))
    corrected = corrected.copy(data=corrected.data.compute())
    truth_c, valid = truth_after(labels, dict(corrected.attrs))
    # the ROI crop: the corrected stack is the valid box of the moved stack (the raw one is scored on the same box)
    box = tuple(slice(a, b) for a, b in corrected.attrs["roi_box"])
    if corrected.shape != truth_c[box].shape:
        raise RuntimeError(f"the corrected stack {corrected.shape} is not its ROI box {corrected.attrs['roi_box']}")
    rows = []
    for way, vol, truth, where in (("raw", raw, labels, valid), ("corrected", corrected, truth_c[box], valid[box])):
        for method, mask in segmentations(vol, unet).items():
            rows.append({"stack": index, "family": family, "method": method, "way": way, **scores(mask, truth, where)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--shape", default="48,128,128", help="z,y,x of each render")
    ap.add_argument("--no-unet", action="store_true", help="the threshold baseline only")
    ap.add_argument("--illumination", default=None, help="JSON of illumination parameters (default: porelab's)")
    ap.add_argument("--drift", default=None, help="JSON of drift parameters (default: porelab's)")
    ap.add_argument("--destripe", default=None, help="JSON of destripe parameters (default: porelab's)")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)
    import dask

    shape = tuple(int(v) for v in args.shape.split(","))
    overrides = {k: json.loads(v) for k, v in (("illumination", args.illumination), ("drift", args.drift), ("destripe", args.destripe)) if v}
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=2):
        for i in range(args.stacks):
            case = run_case(i, args.seed, shape, not args.no_unet, overrides)
            rows += case
            for r in case:
                print(f"stack {r['stack']} {r['family']:14s} {r['method']:9s} {r['way']:9s} pore IoU {r['pore_iou']:.4f} "
                      f"acc {r['accuracy']:.4f} porosity err {r['porosity_error']:.4f}", flush=True)
    print(f"\n{args.stacks} stacks {shape}, {time.perf_counter() - t0:.0f} s; means (corrected / raw = ratio of pore IoU):")
    summary = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        m = {w: [r for r in rows if r["method"] == method and r["way"] == w] for w in ("raw", "corrected")}
        iou = {w: float(np.mean([r["pore_iou"] for r in v])) for w, v in m.items()}
        err = {w: float(np.mean([r["porosity_error"] for r in v])) for w, v in m.items()}
        worse = sum(c["pore_iou"] < r["pore_iou"] - 1e-4 for r, c in zip(m["raw"], m["corrected"]))
        summary[method] = {"pore_iou": iou, "porosity_error": err, "stacks_worse": worse}
        print(f"  {method:9s} pore IoU raw {iou['raw']:.4f} corrected {iou['corrected']:.4f} (ratio {iou['corrected'] / iou['raw']:.3f}); "
              f"porosity err raw {err['raw']:.4f} corrected {err['corrected']:.4f}; stacks worse after correction {worse}/{args.stacks}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS {peak:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary, "peak_rss_mib": peak}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
