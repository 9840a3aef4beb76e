"""``porelab measure``: porosity, pore sizes, specific surface, connectivity, transport of a label volume (JSON)."""

from __future__ import annotations

import argparse
import sys
import tempfile

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "measure",
        help="porosity, pore-size distribution, specific surface, connectivity, tortuosity (and truth metrics) as JSON",
        description=(
            "Read MASK.zarr (labels, 1 = pore) block by block and write METRICS.json: porosity (global, per slice,\n"
            "per block), the pore-size distribution by local thickness (out of core) with its median and its\n"
            "log-normal fit and goodness of fit, the specific surface area, connectivity, and per axis the\n"
            "tortuosity factor of steady diffusion with the effective diffusivity and MacMullin number (or the\n"
            "geometric tortuosity); with --truth also accuracy, IoU, Dice, 3D IoU, smoothness and the porosity\n"
            "error, and the cross-entropy when MASK.zarr is a segmentation store with its probability.\n"
            "Measurements left out are listed under \"skipped\" with the reason."
        ),
        example="porelab measure labels.zarr --truth truth.zarr -o metrics.json",
    )
    p.add_argument("input", help="label volume written by porelab (MASK.zarr)")
    p.add_argument("-o", "--output", required=True, metavar="METRICS.json", help="JSON file to write")
    p.add_argument("--truth", default=None, metavar="TRUTH.zarr", help="ground-truth labels of the same shape")
    p.add_argument("--n-radii", type=int, default=64, metavar="N", help="most radii of the local-thickness sweep (default 64)")
    p.add_argument("--no-tortuosity", action="store_true", help="skip the transport measures (recorded under skipped)")
    p.add_argument("--tortuosity", choices=["factor", "geometric", "both"], default="factor",
                   help="tortuosity factor of steady diffusion (default), geometric tortuosity (shortest paths, cheaper), or both")
    p.add_argument("--solid-tortuosity", action="store_true", help="also the tortuosity factor of the solid phase")
    p.add_argument("--transport-roi", default="centre", metavar="Z0:Z1,Y0:Y1,X0:X1",
                   help="measure the transport on this sub-volume (voxels); 'centre' (default): the whole volume up to "
                        "64 Mvoxel, else its centred 16.8 Mvoxel (and the connectivity there above 256 Mvoxel); "
                        "'none': skip them above those sizes")
    p.add_argument("--overwrite", action="store_true", help="replace METRICS.json if it exists")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.analyze import measure
    from pipeline.analyze.measure import summary_line
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
    roi = _roi(args.transport_roi)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the local thickness's distances of a large volume, beside the output while they are needed
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".porelab-measure-") as scratch:
        try:
            m = measure(vol, voxel_size_of(vol), truth=truth, n_radii=args.n_radii, tortuosity=not args.no_tortuosity,
                        tortuosity_method=args.tortuosity, solid_tortuosity=args.solid_tortuosity, transport_roi=roi,
                        probability=probability, progress="measure", scratch_dir=scratch)
        except ValueError as exc:
            raise UserError(f"{args.input}: {exc}") from None
    m["input"] = str(args.input)
    write_json(out, m)
    print(f"{out}: {summary_line(m)}", file=sys.stdout)
    return 0


def _roi(text: str) -> list[tuple[int, int]] | str | None:
    from pipeline.errors import UserError

    if text in ("centre", "none"):
        return None if text == "none" else text

    try:
        roi = [tuple(int(v) for v in part.split(":")) for part in text.split(",")]
    except ValueError:
        roi = []
    if len(roi) != 3 or any(len(r) != 2 for r in roi):
        raise UserError(f"--transport-roi {text}: expected Z0:Z1,Y0:Y1,X0:X1 (voxel indices), 'centre' or 'none'")
    return roi  # type: ignore[return-value]
