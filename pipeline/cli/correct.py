"""``porelab correct``: tilt, curtaining, illumination, drift and ROI correction of a volume."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser

__all__ = ["register"]


def _box(text: str) -> list[list[int]]:
    try:
        v = [int(t) for t in text.split(",")]
    except ValueError:
        v = []
    if len(v) != 6:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected Z0,Z1,Y0,Y1,X0,X1 in voxels")
    return [v[0:2], v[2:4], v[4:6]]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "correct",
        help="correct tilt, curtaining, uneven illumination and drift of a volume, crop to the ROI",
        description=(
            "Read IN.zarr (from 'porelab ingest'), correct it slab by slab on a local Dask cluster and write OUT.zarr\n"
            "(float32 unless --keep-dtype). Steps: tilt (y stretched by 1/sin(angle), voxel size updated), curtaining\n"
            "stripes, illumination background, slice drift (phase correlation), crop to the region with data on\n"
            "every slice. Every step can be switched off. Diagnostics (drift_px, illumination_relative_range,\n"
            "roi_box, ...) are stored in OUT.zarr's attrs."
        ),
        example="porelab correct stack.zarr -o corrected.zarr --tilt-angle 52 --no-destripe",
    )
    p.add_argument("input", help="volume store written by porelab (IN.zarr)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.zarr", help="store to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.zarr if it exists")
    p.add_argument("--tilt-angle", type=float, default=52.0, metavar="DEG", help="beam-to-face angle in degrees (default 52)")
    p.add_argument("--no-tilt", action="store_true", help="skip the tilt correction")
    p.add_argument("--tilt-metadata-only", action="store_true", help="only change the y voxel size, do not resample")
    p.add_argument("--no-destripe", action="store_true", help="skip curtaining removal")
    p.add_argument("--stripe-width", type=int, default=15, metavar="PX", help="profile: median window across x (default 15)")
    p.add_argument("--destripe", choices=["histogram", "profile", "onset"], default="histogram", dest="destripe_method",
                   help="curtain model (default histogram; onset: offsets that start part-way down, pooled over slices)")
    p.add_argument("--destripe-pool", type=int, default=8, metavar="SLICES",
                   help="onset: slices on either side pooled into each estimate (default 8)")
    p.add_argument("--no-illumination", action="store_true", help="skip background removal")
    p.add_argument("--illumination", choices=["robust", "poly", "gaussian"], default="robust",
                   help="background model (default robust: log-space surface on the bright phase, only its significant part)")
    p.add_argument("--illumination-window", type=int, default=51, metavar="SLICES",
                   help="robust: smooth the background along z over this many slices (default 51; 0: one per volume)")
    p.add_argument("--illumination-significance", type=float, default=3.0, metavar="K",
                   help="robust: terms under K standard errors are shrunk away (default 3, 0 keeps all)")
    p.add_argument("--illumination-scope", choices=["slice", "volume"], default="slice", help="one background per slice or per volume")
    p.add_argument("--illumination-mode", choices=["divide", "subtract"], default="divide", help="how the background is removed")
    p.add_argument("--no-drift", action="store_true", help="skip slice alignment")
    p.add_argument("--drift-lags", type=int, default=2, metavar="N", help="compare each slice with N previous ones (default 2)")
    p.add_argument("--drift-smooth", type=int, default=0, metavar="SLICES", help="Savitzky-Golay window over the drift (default 0: off, <3 off)")
    p.add_argument("--drift-threshold", type=float, default=5.0, metavar="K",
                   help="steps under K noise levels are not corrected (default 5, 0 keeps all)")
    p.add_argument("--no-parallax", action="store_true", help="do not remove shine-through parallax from the y drift")
    p.add_argument("--drift-interpolation", choices=("nearest", "linear"), default="nearest",
                   help="move slices by whole pixels (nearest, the default: no resampling blur) or sub-pixel (linear)")
    p.add_argument("--roi", choices=["auto", "none"], default="auto", help="crop to data on every slice (auto) or keep all")
    p.add_argument("--roi-box", type=_box, default=None, metavar="Z0,Z1,Y0,Y1,X0,X1", help="explicit crop box in voxels (after tilt)")
    p.add_argument("--keep-dtype", action="store_true", help="round back to the input's integer type")
    p.add_argument("--workers", type=int, default=None, help="local Dask workers (default: one per core; one with --backend cupy)")
    p.add_argument("--memory-limit", default=None, metavar="SIZE", help="memory limit per worker, e.g. 2GiB")
    p.add_argument("--dask", default=None, metavar="tcp://HOST:PORT", help="use a running Dask scheduler")
    p.add_argument("--backend", choices=["numpy", "cupy", "auto"], default="numpy",
                   help="array backend of the chunks: cupy runs the filters on the GPU (default numpy)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from pipeline.engine.dask_cluster import dask_client
    from pipeline.errors import UserError
    from pipeline.io.volume import open_volume, write_volume
    from pipeline.jobs.stages.correct import Config, correct, metrics_of

    try:
        cfg = Config(
            tilt={"enabled": not args.no_tilt, "angle_deg": args.tilt_angle, "resample": not args.tilt_metadata_only},
            destripe={"enabled": not args.no_destripe, "width": args.stripe_width, "method": args.destripe_method,
                      "pool_slices": args.destripe_pool},
            illumination={"enabled": not args.no_illumination, "method": args.illumination,
                          "scope": args.illumination_scope, "mode": args.illumination_mode,
                          "window": args.illumination_window, "significance": args.illumination_significance},
            drift={"enabled": not args.no_drift, "lags": args.drift_lags, "smooth_window": args.drift_smooth,
                   "step_threshold": args.drift_threshold, "parallax": not args.no_parallax,
                   "interpolation": args.drift_interpolation},
            roi={"mode": "box" if args.roi_box else args.roi, "box": args.roi_box},
            output_dtype="input" if args.keep_dtype else "float32",
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"option {'.'.join(map(str, err['loc']))}={err.get('input')!r} is not valid: {err['msg']}") from None
    from pipeline.backend import resolve_backend, volume_on

    kind = resolve_backend(args.backend)
    vol = volume_on(open_volume(args.input), kind)
    if kind == "cupy":
        from pipeline.engine.dask_cluster import gpu_worker_layout

        args.workers = gpu_worker_layout(args.workers, None)[0]
    from pathlib import Path

    from pipeline.io.volume import provenance

    with dask_client(args.dask, n_workers=args.workers, memory_limit=args.memory_limit,
                     local_directory=Path(args.output).resolve().parent / ".dask-scratch"):
        out = correct(vol, cfg, progress="correct")
        out.attrs["provenance"] = provenance("correct", cfg.model_dump(mode="json"))
        write_volume(out, args.output, overwrite=args.overwrite, progress="correct")
    m = metrics_of(out)
    print(f"{args.output}: {' x '.join(map(str, m['shape']))}, voxel {' x '.join(f'{v:.4g}' for v in m['voxel_size_nm'])} nm, "
          f"max drift {m['drift_max_px']:.2f} px, roi {m['roi_box']}", file=sys.stdout)
    return 0
