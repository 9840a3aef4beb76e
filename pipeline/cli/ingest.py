"""``porelab ingest``: an image stack to a chunked zarr v3 volume."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser

__all__ = ["register", "CODEC_CHOICES"]

#: pipeline.io.codecs.CODEC_NAMES, spelled out so that building the parser imports nothing heavy (a test keeps them equal)
CODEC_CHOICES: tuple[str, ...] = ("auto", "none", "lz4", "zstd")


def _chunks(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected three positive integers Z,Y,X")
    return values  # type: ignore[return-value]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "ingest",
        help="read a TIFF stack, a folder of slices or a .npy file into a zarr volume",
        description=(
            "Stream a stack into a chunked zarr v3 store that opens as an xarray DataArray with dims (z, y, x),\n"
            "coordinates in nm and attrs['voxel_size_nm']. The pixel type is kept. Slices in a folder are taken\n"
            "in natural order (slice_2 before slice_10). The store appears only once it is complete."
        ),
        example="porelab ingest stack.tif --voxel-size 10,5,5 -o stack.zarr",
    )
    p.add_argument("input", help="multi-page TIFF, folder of TIFF/PNG slices, or .npy file")
    p.add_argument("--voxel-size", required=True, metavar="Z,Y,X", help="voxel size in nm, e.g. 10,5,5")
    p.add_argument("-o", "--output", required=True, metavar="OUT.zarr", help="store to write")
    p.add_argument("--chunks", type=_chunks, default=None, metavar="Z,Y,X", help="chunk shape in voxels (default 32,256,256)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.zarr if it exists")
    p.add_argument(
        "--codec",
        choices=CODEC_CHOICES,
        default="auto",
        help="compression: auto (default) stores raw chunks when a sample of the first slab compresses less than "
        "1.2x with lz4 (noisy images), else lz4; none, lz4 or zstd force one. Recorded in the store's attrs['codec']",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.io.ingest import ingest, parse_voxel_size
    from pipeline.io.volume import DEFAULT_CHUNKS, open_volume

    voxel = parse_voxel_size(args.voxel_size)
    out = ingest(args.input, args.output, voxel, chunks=args.chunks or DEFAULT_CHUNKS, overwrite=args.overwrite, codec=args.codec)
    vol = open_volume(out)
    print(f"{out}: {' x '.join(map(str, vol.shape))} {vol.dtype}, voxel {voxel[0]:g} x {voxel[1]:g} x {voxel[2]:g} nm", file=sys.stdout)
    codec = vol.attrs.get("codec", {})
    print(f"codec: {codec.get('name')} ({codec.get('reason')})", file=sys.stdout)
    return 0
