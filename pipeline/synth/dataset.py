"""The synthetic dataset store: one zarr v3 store per dataset.

Layout of ``DATASET.zarr`` (opens with :func:`open_dataset` or plain
``xarray.open_zarr``):

* ``image`` (sample, z, y, x) uint8 — rendered slices (absent for a
  structures-only dataset); ``labels`` (sample, z, y, x) uint8, 1 = pore,
  registered to the image; ``drift_px`` (sample, z, axis) int16.
* coordinate ``split`` on sample (train / val / test, seeded permutation),
  coordinates z, y, x in nm, ``attrs["voxel_size_nm"]``.
* one variable per drawn parameter (sample,) — ``family``, ``porosity``,
  ``target_porosity``, ``structure_seed``, ``render_seed``, ``render_<name>``...
* group ``spheres``: one array (sphere, field) per sample, fields z, y, x,
  diameter in nm (the sphere list of sphere families).
* group ``records``: one JSON record per finished sample, written last and
  atomically; a sample is present exactly when its record is.
* group ``figures``: ``card.json`` (job, ranges, achieved statistics),
  ``psd.png`` (size distributions against log-normal fits), ``panels/``.
* ``attrs["card"]`` (the card) and ``attrs["complete"] = True`` once finalised,
  with consolidated metadata (so plain xarray opens it without a warning);
  an unfinished store has none, because samples add nodes while it is built.

Every chunk holds one sample, so workers writing different samples never
touch the same file, and writing a sample twice writes the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.io.volume import compressors_for, consolidate_store

__all__ = [
    "sample_id",
    "create_store",
    "store_matches",
    "write_sample",
    "read_record",
    "done_samples",
    "finalize",
    "open_dataset",
    "figures_dir",
]

_Z_CHUNK = 64


def sample_id(index: int) -> str:
    """Name of sample ``index`` in the store (``s000012``)."""
    return f"s{int(index):06d}"


def figures_dir(path: str | os.PathLike[str]) -> Path:
    """Folder of the dataset's card, plots and panels (inside the store)."""
    return Path(path) / "figures"


def create_store(
    path: str | os.PathLike[str],
    n_samples: int,
    shape: Sequence[int],
    voxel_size_nm: Sequence[float],
    *,
    with_image: bool = True,
    build_key: str = "",
) -> Path:
    """Create an empty dataset store (metadata only; chunks are written per sample).

    Parameters
    ----------
    path : path
        Store folder; replaced if it exists.
    n_samples : int
    shape : (int, int, int)
        Voxels z, y, x of every sample.
    voxel_size_nm : (float, float, float)
    with_image : bool
        Create the ``image`` variable (False for structures only).
    build_key : str
        Hash of what the samples are made from; :func:`store_matches` compares
        it so an interrupted build is resumed only with the same plan.
    """
    import dask.array as da
    import xarray as xr
    import zarr

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    z, y, x = (int(s) for s in shape)
    vs = [float(v) for v in voxel_size_nm]
    chunks = (1, min(z, _Z_CHUNK), y, x)
    dims = ("sample", "z", "y", "x")
    data_vars: dict[str, Any] = {
        "labels": (dims, da.zeros((n_samples, z, y, x), dtype=np.uint8, chunks=chunks), {"meaning": "1 = pore, 0 = solid"}),
        "drift_px": (("sample", "z", "axis"), da.zeros((n_samples, z, 2), dtype=np.int16, chunks=(1, z, 2)),
                     {"meaning": "stage drift (dy, dx) in pixels applied to each slice"}),
    }
    if with_image:
        data_vars["image"] = (dims, da.zeros((n_samples, z, y, x), dtype=np.uint8, chunks=chunks),
                              {"meaning": "SEM view of the cut face at each z"})
    coords = {
        "sample": ("sample", np.arange(n_samples, dtype=np.int64)),
        "z": ("z", vs[0] * np.arange(z), {"units": "nm"}),
        "y": ("y", vs[1] * np.arange(y), {"units": "nm"}),
        "x": ("x", vs[2] * np.arange(x), {"units": "nm"}),
        "axis": ("axis", np.array(["y", "x"], dtype=object)),
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs={"voxel_size_nm": vs, "build_key": build_key, "complete": False})
    enc = {k: {"chunks": ds[k].data.chunksize, "compressors": compressors_for(k), "fill_value": 0} for k in data_vars}
    ds.to_zarr(path, mode="w", compute=False, zarr_format=3, consolidated=False, encoding=enc)
    root = zarr.open_group(path, mode="r+")
    root.require_group("records")
    root.require_group("spheres")
    root.require_group("figures")
    return path


def store_matches(path: str | os.PathLike[str], build_key: str) -> bool:
    """True when ``path`` is an unfinished store created for ``build_key``."""
    import zarr

    try:
        root = zarr.open_group(Path(path), mode="r")
    except Exception:  # noqa: BLE001 - anything unreadable does not match
        return False
    return root.attrs.get("build_key") == build_key and (Path(path) / "records").is_dir()


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def write_sample(
    path: str | os.PathLike[str],
    index: int,
    *,
    labels: np.ndarray,
    record: Mapping[str, Any],
    image: np.ndarray | None = None,
    drift_px: np.ndarray | None = None,
    spheres: np.ndarray | None = None,
) -> None:
    """Write one sample's arrays, then its record (which marks it complete).

    Safe to call again for the same sample (a retry): the arrays are rewritten
    with the same values and the record replaced atomically. A sample whose
    writer dies before the record is written counts as absent.
    """
    import zarr

    path = Path(path)
    root = zarr.open_group(path, mode="r+")
    lab = root["labels"]
    if tuple(labels.shape) != tuple(lab.shape[1:]):
        raise ValueError(f"labels of shape {labels.shape} do not fit the store's {lab.shape[1:]}")
    lab[index] = np.asarray(labels, dtype=np.uint8)
    if image is not None:
        root["image"][index] = np.asarray(image, dtype=np.uint8)
    if drift_px is not None:
        root["drift_px"][index] = np.asarray(drift_px, dtype=np.int16)
    sid = sample_id(index)
    sph = np.zeros((0, 4), np.float32) if spheres is None else np.asarray(spheres, np.float32).reshape(-1, 4)
    group = root["spheres"]
    group.create_array(sid, shape=sph.shape, dtype=np.float32, chunks=(max(1, min(len(sph), 65536)), 4),
                       dimension_names=("sphere", "field"), overwrite=True, compressors=compressors_for("spheres"),
                       attributes={"fields": ["z_nm", "y_nm", "x_nm", "diameter_nm"]})
    if len(sph):
        group[sid][...] = sph
    text = json.dumps(dict(record), sort_keys=True, default=_default).encode()
    _atomic_write_bytes(path / "records" / f"{sid}.json", text)


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_record(path: str | os.PathLike[str], index: int) -> dict[str, Any] | None:
    """The record of sample ``index``, or None when the sample is absent."""
    f = Path(path) / "records" / f"{sample_id(index)}.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text())


def done_samples(path: str | os.PathLike[str]) -> set[int]:
    """Indices of the samples whose record exists."""
    folder = Path(path) / "records"
    if not folder.is_dir():
        return set()
    return {int(f.stem[1:]) for f in folder.glob("s*.json")}


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}_"))
        elif isinstance(v, (int, float, str, bool, np.generic)) or v is None:
            out[key] = v
    return out


def finalize(
    path: str | os.PathLike[str],
    n_samples: int,
    splits: Sequence[str],
    card: Mapping[str, Any],
) -> dict[str, Any]:
    """Turn the per-sample records into variables, add ``split`` and the card, mark complete, consolidate.

    Returns
    -------
    dict
        The card with ``achieved`` statistics added.

    Raises
    ------
    RuntimeError
        If a sample is missing its record.
    """
    import xarray as xr
    import zarr

    path = Path(path)
    records = []
    for i in range(n_samples):
        rec = read_record(path, i)
        if rec is None:
            raise RuntimeError(f"sample {sample_id(i)} of {path} is missing; it was not written")
        records.append(_flatten(rec))
    keys = sorted({k for r in records for k in r})
    data_vars: dict[str, Any] = {}
    for k in keys:
        vals = [r.get(k) for r in records]
        if all(isinstance(v, bool) for v in vals if v is not None):
            arr = np.array([bool(v) for v in vals])
        elif all(isinstance(v, (int, float, np.generic)) and not isinstance(v, bool) for v in vals if v is not None):
            arr = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
            if all(isinstance(v, (int, np.integer)) for v in vals):
                arr = arr.astype(np.int64)
        else:
            arr = np.array(["" if v is None else str(v) for v in vals], dtype=object)
        data_vars[k] = ("sample", arr)
    ds = xr.Dataset(data_vars, coords={"split": ("sample", np.array(list(splits), dtype=object))})
    ds = ds.assign_coords(sample=np.arange(n_samples, dtype=np.int64))
    keep = dict(zarr.open_group(path, mode="r").attrs)
    ds.drop_vars("sample").to_zarr(path, mode="a", zarr_format=3, consolidated=False)
    por = np.array([r.get("porosity", np.nan) for r in records], dtype=np.float64)
    tgt = np.array([r.get("target_porosity", np.nan) for r in records], dtype=np.float64)
    fams = [str(r.get("family")) for r in records]
    achieved = {
        "samples": n_samples,
        "porosity_mean": float(np.nanmean(por)),
        "porosity_min": float(np.nanmin(por)),
        "porosity_max": float(np.nanmax(por)),
        "porosity_abs_error_max": float(np.nanmax(np.abs(por - tgt))),
        "families": {f: fams.count(f) for f in sorted(set(fams))},
        "splits": {s: list(splits).count(s) for s in sorted(set(splits))},
    }
    shine = np.array([r["shine_through"] for r in records if r.get("shine_through") is not None], dtype=np.float64)
    if shine.size:
        # share of pore voxels brighter than the slice's Otsu threshold (see pipeline.synth.stats)
        achieved["shine_through"] = {"mean": float(shine.mean()), "min": float(shine.min()), "max": float(shine.max()),
                                     "samples_at_least_0.4": int((shine >= 0.4).sum()),
                                     "fraction_at_least_0.4": float((shine >= 0.4).mean())}
    full = {**dict(card), "achieved": {**dict(card.get("achieved", {})), **achieved}}
    fig = figures_dir(path)
    fig.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(fig / "card.json", json.dumps(full, indent=2, sort_keys=True, default=_default).encode())
    root = zarr.open_group(path, mode="r+")
    root.attrs.update({**keep, "card": json.loads(json.dumps(full, default=_default)), "complete": True})
    consolidate_store(path)
    return full


def open_dataset(path: str | os.PathLike[str]) -> Any:
    """Open a finished dataset lazily as an xarray Dataset.

    Raises
    ------
    UserError
        If the path is missing, not a dataset store, or not finished.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such dataset; expected a .zarr store written by porelab synth")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(path, zarr_format=3, consolidated=False)
    except Exception as exc:  # noqa: BLE001 - any failure to open is a user-facing error
        raise UserError(f"{path}: cannot be opened as a zarr v3 dataset ({exc.__class__.__name__}: {exc})") from None
    if "labels" not in ds or ds["labels"].dims != ("sample", "z", "y", "x"):
        raise UserError(f"{path}: is not a synthetic dataset; expected a labels variable with dims (sample, z, y, x)")
    if not ds.attrs.get("complete"):
        raise UserError(f"{path}: was left unfinished by an interrupted build; run the command again to finish it")
    return ds
