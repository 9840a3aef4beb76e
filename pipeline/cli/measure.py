"""``porelab measure``: porosity, pore sizes, specific surface, connectivity of a label volume (JSON)."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "measure",
        help="porosity, pore-size distribution, specific surface, connectivity (and truth metrics) as JSON",
        description=(
            "Read MASK.zarr (labels, 1 = pore) block by block and write METRICS.json: porosity (global, per slice,\n"
            "per block), the pore-size distribution by local thickness (out of core) with its log-normal fit,\n"
            "the specific surface area, connectivity and geometric tortuosity per axis; with --truth also\n"
            "accuracy, IoU, Dice, 3D IoU, smoothness and the porosity error, and the cross-entropy when MASK.zarr\n"
            "is a segmentation store (porelab segment) with a 'probability' beside its 'mask'."
        ),
        example="porelab measure labels.zarr --truth truth.zarr -o metrics.json",
    )
    p.add_argument("input", help="label volume written by porelab (MASK.zarr)")
    p.add_argument("-o", "--output", required=True, metavar="METRICS.json", help="JSON file to write")
    p.add_argument("--truth", default=None, metavar="TRUTH.zarr", help="ground-truth labels of the same shape")
    p.add_argument("--n-radii", type=int, default=64, metavar="N", help="most radii of the local-thickness sweep (default 64)")
    p.add_argument("--no-tortuosity", action="store_true", help="skip the geometric tortuosity")
    p.add_argument("--overwrite", action="store_true", help="replace METRICS.json if it exists")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.analyze import measure
    from pipeline.errors import UserError
    from pipeline.io.volume import open_volume, voxel_size_of
    from pipeline.jobs.stages.analyze import write_json

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    if args.n_radii < 2:
        raise UserError(f"--n-radii {args.n_radii} is not valid; expected 2 or more")
    vol = open_volume(args.input)
    if vol.dtype.kind not in "biu":
        raise UserError(f"{args.input}: holds {vol.dtype} values; expected integer labels (1 = pore, 0 = solid)")
    from pipeline.io.stores import probability_of

    probability = probability_of(args.input)  # a segmentation store: its mask is measured, its probability gives CE
    truth = None
    if args.truth:
        truth = open_volume(args.truth)
        if truth.shape != vol.shape:
            raise UserError(f"{args.truth}: has shape {list(truth.shape)}; expected the labels' shape {list(vol.shape)}")
    try:
        m = measure(vol, voxel_size_of(vol), truth=truth, n_radii=args.n_radii, tortuosity=not args.no_tortuosity,
                    probability=probability)
    except ValueError as exc:
        raise UserError(f"{args.input}: {exc}") from None
    m["input"] = str(args.input)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, m)
    fit = m.get("psd", {}).get("fit")
    line = f"{out}: porosity {m['porosity']['porosity']:.4f}"
    if fit:
        line += f", pore size median {fit['median_nm']:.1f} nm (σ {fit['sigma']:.2f})"
    line += f", specific surface {m['surface']['specific_surface_per_nm']:.4g} /nm"
    if "truth" in m:
        line += f", IoU {m['truth']['iou_pore']:.3f}, porosity error {m['truth']['porosity_error']:+.4f}"
        if "ce" in m["truth"]:
            line += f", CE {m['truth']['ce']:.4f}"
    print(line, file=sys.stdout)
    return 0
