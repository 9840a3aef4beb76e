"""Segmentation of the samples of a synthetic dataset (for 3D training and for evaluation).

The output store mirrors the dataset: ``mask`` (sample, z, y, x) uint8 and
``probability`` float16 for the samples of the chosen splits, with their
dataset index as the ``sample`` coordinate and their ``split`` and ``family``;
``attrs["dataset"]`` names the source. One task per sample (held in memory:
samples are small), written block by block with done markers, resumable.
A refinement model reads ``probability`` from an earlier such store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from pipeline.errors import UserError
from pipeline.models.card import ModelCard

__all__ = ["is_dataset_store", "segment_dataset_lazy", "create_dataset_output", "dataset_of"]


def is_dataset_store(path: str | os.PathLike[str]) -> bool:
    """True for a store with a ``sample`` dimension (a synthetic dataset or a segmentation of one)."""
    import zarr

    try:
        root = zarr.open_group(Path(path), mode="r")
    except Exception:  # noqa: BLE001
        return False
    for name in ("labels", "image", "mask", "probability"):
        if name in root and (root[name].metadata.dimension_names or ())[:1] == ("sample",):
            return True
    return False


def dataset_of(path: str | os.PathLike[str]) -> Path:
    """The dataset a segmentation store was made from (``attrs["dataset"]``), or ``path`` itself."""
    import zarr

    attrs = dict(zarr.open_group(Path(path), mode="r").attrs)
    return Path(attrs["dataset"]) if attrs.get("dataset") else Path(path)


def _segment_sample(i: int, *, dataset: str, probability: str | None, prob_row: int | None, folder: str, card_json: dict,
                    tta: bool, threshold: float, threads: int | None, device: str, runtime: str = "auto") -> np.ndarray:
    import zarr

    from pipeline.segment.infer import predict_volume
    from pipeline.train.data import prepare_image

    card = ModelCard.model_validate(card_json)
    img = prepare_image(np.asarray(zarr.open_array(Path(dataset) / "image", mode="r")[i]), card.input.preprocess)
    if card.input.kind == "volume":
        p = np.asarray(zarr.open_array(Path(probability) / "probability", mode="r")[prob_row], dtype=np.float32)  # type: ignore[arg-type]
        img = np.stack([p, img])
    out = predict_volume(img, folder, card, tta=tta, device=device, threads=threads, runtime=runtime)
    mask = (out[0] >= threshold).astype(np.float32)
    return np.stack([mask, *out])[:, None]


def segment_dataset_lazy(dataset: Path, folder: Path, card: ModelCard, *, rows: Sequence[int],
                         probability: Path | None = None, prob_rows: Sequence[int] | None = None, tta: bool = False,
                         threshold: float | None = None, threads: int | None = None, device: str = "cpu",
                         runtime: str = "auto") -> da.Array:
    """(channels, sample, z, y, x) of the chosen dataset samples: mask, probability (and spread), one chunk per sample."""
    import zarr

    shape = tuple(zarr.open_array(dataset / "labels", mode="r").shape[1:])
    thr = card.inference.threshold if threshold is None else float(threshold)
    n_out = 3 if tta else 2
    parts = []
    for j, i in enumerate(rows):
        task = dask.delayed(_segment_sample, pure=True)(
            int(i), dataset=str(dataset), probability=None if probability is None else str(probability),
            prob_row=None if prob_rows is None else int(prob_rows[j]), folder=str(folder),
            card_json=card.model_dump(mode="json"), tta=tta, threshold=thr, threads=threads, device=device, runtime=runtime,
            dask_key_name=f"segment-sample-{card.weights_sha256[:12]}-{i}")
        parts.append(da.from_delayed(task, shape=(n_out, 1, *shape), dtype=np.float32))
    return da.concatenate(parts, axis=1)


def create_dataset_output(out: Path, dataset: Path, rows: Sequence[int], variables: dict[str, Any], *,
                          attrs: dict[str, Any]) -> dict[str, Any]:
    """An empty store for the segmentation of ``rows`` of ``dataset`` (coordinates sample, split, family, z, y, x)."""
    import shutil

    import xarray as xr
    import zarr

    from pipeline.io.volume import compressors_for
    from pipeline.synth.dataset import open_dataset

    src = open_dataset(dataset)
    rows = [int(r) for r in rows]
    sub = src.isel(sample=rows)
    Z, Y, X = (int(s) for s in src["labels"].shape[1:])
    chunks = (1, min(Z, 64), Y, X)
    coords: dict[str, Any] = {"sample": ("sample", np.asarray(rows, dtype=np.int64)),
                              "z": src["z"], "y": src["y"], "x": src["x"]}
    if "split" in sub.coords:
        coords["split"] = ("sample", np.array([str(v) for v in sub["split"].values.tolist()], dtype=object))
    data_vars = {n: (("sample", "z", "y", "x"), da.zeros((len(rows), Z, Y, X), dtype=np.dtype(dt), chunks=chunks))
                 for n, dt in variables.items()}
    if "family" in sub:
        data_vars["family"] = ("sample", np.array([str(v) for v in sub["family"].values.tolist()], dtype=object))  # type: ignore[assignment]
    ds = xr.Dataset(data_vars, coords=coords, attrs={**attrs, "dataset": str(dataset), "voxel_size_nm": src.attrs.get("voxel_size_nm"),
                                                     "primary_variable": next(iter(variables))})
    if out.exists():
        shutil.rmtree(out)
    enc = {n: {"chunks": chunks, "compressors": compressors_for(n), "fill_value": 0} for n in variables}
    ds.to_zarr(out, mode="w", compute=False, zarr_format=3, consolidated=False, encoding=enc)
    src.close()
    from pipeline.io.volume import consolidate_store

    consolidate_store(out)
    return {n: zarr.open_array(out / n, mode="r+") for n in variables}


def select_rows(dataset: Path, splits: Sequence[str] | None) -> list[int]:
    """Dataset samples of ``splits`` (all samples when None)."""
    from pipeline.synth.dataset import open_dataset

    ds = open_dataset(dataset)
    split = [str(v) for v in ds["split"].values.tolist()] if "split" in ds.coords else [""] * ds.sizes["sample"]
    ds.close()
    if splits is None:
        return list(range(len(split)))
    rows = [i for i, s in enumerate(split) if s in set(splits)]
    if not rows:
        raise UserError(f"{dataset}: has no sample in the splits {list(splits)} (it has {sorted(set(split))})")
    return rows
