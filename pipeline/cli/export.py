"""``porelab export``: a store's volume as a Fiji TIFF, an OME-Zarr pyramid for napari, or raw voxels."""

from __future__ import annotations

import argparse

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "export",
        help="write a store's volume as TIFF (Fiji), OME-Zarr (napari) or raw, at its voxel size",
        description=(
            "Export a volume with its voxel size, streamed slab by slab (never whole in memory); the output\n"
            "appears only once complete.\n"
            "  tiff      multi-page ImageJ TIFF: voxel size in the resolution tags and the ImageJ description\n"
            "            (spacing, unit nm), so Fiji opens it at scale; BigTIFF over 4 GB\n"
            "  ome-zarr  OME-NGFF multiscale pyramid (grey levels by mean, labels by mode) with the scale of\n"
            "            every level in nm; napari opens it in 3D at scale (napari-ome-zarr plugin)\n"
            "  raw       little-endian voxels, z slices one after the other, and OUT.raw.json with shape,\n"
            "            dtype, voxel size and the lines that open it in Fiji and NumPy\n"
            "The format follows the output name (.tif, .ome.zarr, .raw) unless --to is given."
        ),
        example="porelab export runs/demo/baseline.zarr -o pores.ome.zarr",
    )
    p.add_argument("store", help="a .zarr store written by porelab (a volume, or a dataset with --sample)")
    p.add_argument("--to", metavar="{tiff,ome-zarr,raw}", default=None, help="format (default: from the output name)")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="file or folder to write (.tif, .ome.zarr, .raw)")
    p.add_argument("--variable", default=None, metavar="NAME", help="variable of the store (default its only one; image in a dataset)")
    p.add_argument("--sample", type=int, default=None, metavar="I", help="sample of a dataset store")
    p.add_argument("--levels", type=int, default=None, metavar="N",
                   help="OME-Zarr pyramid levels, full resolution included (default: until the longest side is <= 512)")
    p.add_argument("--ngff", choices=["0.4", "0.5"], default="0.4", help="OME-NGFF version: 0.4 on zarr v2 (default), 0.5 on zarr v3")
    p.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.io.export import export_store

    done = export_store(args.store, args.output, to=args.to, variable=args.variable, sample=args.sample,
                        levels=args.levels, ngff=args.ngff, overwrite=args.overwrite)
    vz, vy, vx = done.voxel_size_nm
    levels = f", {done.levels} level{'s' if done.levels > 1 else ''}" if done.format == "ome-zarr" else ""
    print(f"{' + '.join(map(str, done.files))}: {done.format}, {' x '.join(map(str, done.shape))} {done.dtype}, "
          f"voxel {vz:g} x {vy:g} x {vx:g} nm{levels}")
    return 0
