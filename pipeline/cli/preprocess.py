"""``porelab preprocess``: denoise and normalise a volume to float32 in [0, 1]."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "preprocess",
        help="denoise (gaussian, median, bilateral) and normalise a volume to float32 in [0, 1]",
        description=(
            "Read IN.zarr, denoise it chunk by chunk with the exact halo each filter needs (2D per slice or 3D),\n"
            "map the robust percentiles of the whole volume (computed out-of-core) to 0 and 1, optionally match\n"
            "every slice's histogram to the volume's, and write OUT.zarr as float32."
        ),
        example="porelab preprocess corrected.zarr -o clean.zarr --denoise median --dims 3",
    )
    p.add_argument("input", help="volume store written by porelab (IN.zarr)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.zarr", help="store to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.zarr if it exists")
    p.add_argument("--denoise", choices=["none", "gaussian", "median", "bilateral"], default="gaussian", help="filter (default gaussian)")
    p.add_argument("--dims", type=int, choices=[2, 3], default=2, help="2: per slice (default); 3: across slices too")
    p.add_argument("--sigma", type=float, default=1.0, help="gaussian / bilateral spatial sigma in voxels (default 1)")
    p.add_argument("--size", type=int, default=3, help="median window edge in voxels, odd (default 3)")
    p.add_argument("--sigma-range", type=float, default=None, help="bilateral intensity sigma (default 2.5 x estimated noise)")
    p.add_argument("--low", type=float, default=0.5, help="percentile mapped to 0 (default 0.5)")
    p.add_argument("--high", type=float, default=99.5, help="percentile mapped to 1 (default 99.5)")
    p.add_argument("--no-normalize", action="store_true", help="keep intensities (as float32)")
    p.add_argument("--match-histograms", action="store_true", help="match each slice's histogram to the volume's")
    p.add_argument("--workers", type=int, default=None, help="local Dask workers (default: one per core; one with --backend cupy)")
    p.add_argument("--memory-limit", default=None, metavar="SIZE", help="memory limit per worker, e.g. 2GiB")
    p.add_argument("--dask", default=None, metavar="tcp://HOST:PORT", help="use a running Dask scheduler")
    p.add_argument("--backend", choices=["numpy", "cupy", "auto"], default="numpy",
                   help="array backend of the chunks: cupy runs the filters on the GPU (default numpy)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pydantic import ValidationError

    from pipeline.engine.dask_cluster import dask_client, fits_in_memory
    from pipeline.errors import UserError
    from pipeline.io.volume import open_volume, provenance, write_volume, write_volume_two_pass
    from pipeline.jobs.stages.preprocess import Config, plan, preprocess, two_pass_parts

    try:
        cfg = Config(
            denoise={"method": args.denoise, "dims": args.dims, "sigma": args.sigma, "size": args.size, "sigma_range": args.sigma_range},
            normalize={"enabled": not args.no_normalize, "low": args.low, "high": args.high, "match_histograms": args.match_histograms},
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
    with dask_client(args.dask, n_workers=args.workers, memory_limit=args.memory_limit,
                     local_directory=Path(args.output).resolve().parent / ".dask-scratch"):
        p = plan(vol, cfg)
        prov = provenance("preprocess", cfg.model_dump(mode="json"))
        if cfg.normalize.enabled and not cfg.normalize.match_histograms and not fits_in_memory(p.result_nbytes):
            # too large for the workers' memory: the filtered blocks are written while their
            # histogram is counted, then normalised in place (the filter runs once)
            filtered, parts = two_pass_parts(vol, cfg, p)
            filtered.attrs["provenance"] = prov
            try:
                write_volume_two_pass(filtered, args.output, overwrite=args.overwrite, progress="preprocess", **parts)
            except ValueError as exc:
                raise UserError(f"preprocess: {exc}") from None
            out = open_volume(args.output)
        else:
            out = preprocess(vol, cfg, plan_=p)
            out.attrs["provenance"] = prov
            write_volume(out, args.output, overwrite=args.overwrite, progress="preprocess")
    rng = out.attrs.get("normalization_range")
    print(f"{args.output}: {' x '.join(map(str, out.shape))} float32" + (f", [{rng[0]:.4g}, {rng[1]:.4g}] -> [0, 1]" if rng else ""), file=sys.stdout)
    return 0
