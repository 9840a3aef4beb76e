"""``porelab mesh``: a mesh (PLY / STL, nm) of the pores of a label volume by one of the seven methods."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser
from pipeline.reconstruct.build import METHODS

__all__ = ["register"]


def _block(text: str) -> tuple[int, int, int]:
    try:
        v = tuple(int(t) for t in text.split(","))
    except ValueError:
        v = ()
    if len(v) == 1:
        v = v * 3
    if len(v) != 3 or min(v) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected Z,Y,X (or one number) in voxels, each >= 1")
    return v  # type: ignore[return-value]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "mesh",
        help="mesh the pores of a label volume (PLY or STL in nm) by one of the paper's seven methods",
        description=(
            "Read MASK.zarr (labels, 1 = pore), mesh the pores block by block (seams welded; the volume is never\n"
            "whole in memory) and write MESH.ply or MESH.stl in nm (x, y, z columns), closed at the volume's faces.\n"
            "Methods: " + ", ".join(METHODS) + "."
        ),
        example="porelab mesh labels.zarr --method voxel_direct -o pores.ply",
    )
    p.add_argument("input", help="label volume written by porelab (MASK.zarr)")
    p.add_argument("-o", "--output", required=True, metavar="MESH.ply", help="mesh file to write (.ply or .stl)")
    p.add_argument("--method", choices=METHODS, default="mc_basic", help="reconstruction method (default mc_basic)")
    p.add_argument("--phase", type=int, choices=(0, 1), default=1, help="label to mesh: 1 pores (default), 0 solid")
    p.add_argument("--block", type=_block, default=(128, 128, 256), metavar="Z,Y,X", help="block of the chunked meshing (default 128,128,256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the convex hull's point subsampling")
    p.add_argument("--overwrite", action="store_true", help="replace the mesh file if it exists")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.errors import UserError
    from pipeline.io.volume import open_volume, voxel_size_of
    from pipeline.reconstruct import enclosed_porosity, mesh_volume, write_mesh

    out = Path(args.output)
    if out.suffix.lower() not in (".ply", ".stl"):
        raise UserError(f"{out}: the mesh file must end in .ply or .stl")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    vol = open_volume(args.input)
    if vol.dtype.kind not in "biu":
        raise UserError(f"{args.input}: holds {vol.dtype} values; expected integer labels (1 = pore, 0 = solid)")
    vs = voxel_size_of(vol)
    mesh = mesh_volume(vol, args.method, voxel_size_nm=vs, phase=args.phase, block_shape=args.block, seed=args.seed,
                       progress="mesh")
    if len(mesh.faces) == 0:
        raise UserError(f"{args.input}: has no voxel with label {args.phase} and some without; there is no surface to mesh")
    write_mesh(mesh, out, overwrite=args.overwrite)
    por = enclosed_porosity(mesh, vol.shape, vs, phase=args.phase)
    print(f"{out}: {len(mesh.faces)} triangles, area {mesh.area:.6g} nm², enclosed volume {abs(mesh.volume):.6g} nm³, "
          f"porosity {por:.4f}, watertight {mesh.is_watertight}", file=sys.stdout)
    return 0
