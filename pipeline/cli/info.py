"""``porelab info``: what a store holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli._common import add_parser

__all__ = ["register", "describe"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "info",
        help="print shape, dtype, chunks, voxel size and provenance of a store",
        description="Describe a zarr store written by porelab: every variable's shape, dtype, chunks, and its attrs.",
        example="porelab info stack.zarr",
    )
    p.add_argument("store", help="a .zarr store")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_run)


def describe(path: Path) -> dict:
    """A JSON-able description of every variable of a store."""
    import xarray as xr

    from pipeline.errors import UserError

    if not path.exists():
        raise UserError(f"{path}: no such store; expected a .zarr folder written by porelab")
    try:
        ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks={})
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}: cannot be opened as a zarr v3 store ({exc.__class__.__name__}: {exc})") from None
    out: dict = {"store": str(path), "attrs": dict(ds.attrs), "variables": {}}
    for name, var in ds.data_vars.items():
        enc = var.encoding
        out["variables"][str(name)] = {
            "dims": list(var.dims),
            "shape": list(var.shape),
            "dtype": str(var.dtype),
            "chunks": list(enc.get("chunks") or enc.get("preferred_chunks", {}).values()),
            "megabytes": round(var.nbytes / 1e6, 3),
            "attrs": dict(var.attrs),
        }
    return out


def _run(args: argparse.Namespace) -> int:
    info = describe(Path(args.store))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(info["store"])
    for name, var in info["variables"].items():
        attrs = dict(var["attrs"])
        print(f"  {name}: {' x '.join(map(str, var['shape']))} ({', '.join(var['dims'])}) {var['dtype']}")
        print(f"    chunks: {var['chunks']}   size: {var['megabytes']:.1f} MB")
        if "voxel_size_nm" in attrs:
            print(f"    voxel size (nm): {attrs.pop('voxel_size_nm')}")
        prov = attrs.pop("provenance", None)
        for key, value in attrs.items():
            text = json.dumps(value, default=str)
            print(f"    {key}: {text if len(text) < 100 else text[:97] + '...'}")
        if prov:
            print(f"    provenance: stage {prov.get('stage')}, job {prov.get('job_hash') or '-'}")
            print(f"      parameters: {json.dumps(prov.get('parameters'), default=str)}")
            print(f"      versions: {', '.join(f'{k} {v}' for k, v in (prov.get('versions') or {}).items())}")
    return 0
