"""``porelab baseline``: the grayscale-threshold segmentation and its parameter sensitivity."""

from __future__ import annotations

import argparse
import shutil
import sys

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "baseline",
        help="segment a grey volume by the classic threshold method and sweep its parameters",
        description=(
            "Read IN.zarr (grey images, pores dark), remove curtaining stripes, filter each slice, threshold the\n"
            "stack at one global value (given, or Otsu's) and clean small islands; write OUT/labels.zarr (1 = pore)\n"
            "and OUT/baseline.json (threshold, porosity, and unless --no-sweep the porosity over a grid of the\n"
            "parameters: the spread the paper's Fig. 1 shows)."
        ),
        example="porelab baseline corrected.zarr -o baseline_out --threshold-offset 0.02",
    )
    p.add_argument("input", help="grey volume written by porelab (IN.zarr)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder to write (labels.zarr, baseline.json)")
    p.add_argument("--threshold", type=float, default=None, help="grey value under which a voxel is pore (default: Otsu)")
    p.add_argument("--threshold-offset", type=float, default=0.0, metavar="F", help="added to the threshold, fraction of the grey range")
    p.add_argument("--filter", choices=["median", "gaussian", "none"], default="median", help="denoising filter (default median)")
    p.add_argument("--filter-size", type=float, default=3.0, metavar="PX", help="median window or gaussian sigma in px (default 3)")
    p.add_argument("--min-size", type=int, default=16, metavar="PX", help="islands smaller than this are removed (default 16)")
    p.add_argument("--no-destripe", action="store_true", help="skip the curtaining removal")
    p.add_argument("--no-sweep", action="store_true", help="skip the sensitivity sweep")
    p.add_argument("--sweep-slices", type=int, default=32, metavar="N", help="slices the sweep runs on (default 32)")
    p.add_argument("--truth", default=None, metavar="TRUTH.zarr", help="ground-truth labels: adds accuracy, IoU, porosity error")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from pipeline.analyze.truth import truth_metrics
    from pipeline.baseline import BaselineParams, sensitivity_sweep
    from pipeline.errors import UserError
    from pipeline.io.volume import as_volume, atomic_dir, open_volume, provenance, voxel_size_of, write_volume
    from pipeline.jobs.stages.analyze import write_json
    from pipeline.jobs.stages.baseline import Params, segment

    try:
        params = Params(destripe=not args.no_destripe, filter=args.filter, filter_size=args.filter_size,
                        threshold=args.threshold, threshold_offset=args.threshold_offset, min_size=args.min_size)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"option {'.'.join(map(str, err['loc']))}={err.get('input')!r} is not valid: {err['msg']}") from None
    if args.sweep_slices < 1:
        raise UserError(f"--sweep-slices {args.sweep_slices} is not valid; expected 1 or more")
    vol = open_volume(args.input)
    truth = open_volume(args.truth) if args.truth else None
    if truth is not None and truth.shape != vol.shape:
        raise UserError(f"{args.truth}: has shape {list(truth.shape)}; expected the image's shape {list(vol.shape)}")
    with atomic_dir(args.output, overwrite=args.overwrite) as tmp:
        labels, info = segment(vol, params, tmp / "filtered.zarr", write_volume)
        out = as_volume(labels, voxel_size_of(vol), name="labels",
                        attrs={"baseline_threshold": info, "provenance": provenance("baseline", params.model_dump())})
        write_volume(out, tmp / "labels.zarr", progress="baseline")
        shutil.rmtree(tmp / "filtered.zarr")
        written = open_volume(tmp / "labels.zarr")
        result = {"threshold": info, "porosity": float(written.data.mean().compute()), "params": params.model_dump()}
        if truth is not None:
            result["truth"] = truth_metrics(written.data, truth.data)
        if not args.no_sweep:
            result["sweep"] = sensitivity_sweep(vol.data, BaselineParams(**params.model_dump()), max_slices=args.sweep_slices)
        write_json(tmp / "baseline.json", result)
    line = f"{args.output}: threshold {info['threshold']:.4g}, porosity {result['porosity']:.4f}"
    if "sweep" in result:
        sw = result["sweep"]
        line += f"; over {len(sw['runs'])} settings porosity {sw['min']:.3f}..{sw['max']:.3f} (spread {100 * sw['spread']:.1f} points)"
    print(line, file=sys.stdout)
    return 0
