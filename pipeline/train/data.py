"""Training data: patches read from a synthetic dataset store, a worker's own share, a few samples at a time.

A dataset (:mod:`pipeline.synth.dataset`) holds ``image`` and ``labels``
(sample, z, y, x) and a ``split`` per sample. Each training worker takes
every ``world``-th sample of a split (its share), loads a few of them at a
time (``buffer``), runs the model's preprocessing on each (the same
:mod:`pipeline.preprocess` functions ``porelab preprocess`` runs) and cuts
random patches from them; the whole dataset is never in memory. What a worker
reads in an epoch is a function of (seed, epoch, rank, world) alone, so a
resumed run replays the same batches.

2D/2.5D patches are ``(k, P, P)`` neighbouring slices (mirrored at the ends,
:func:`pipeline.models.inputs.neighbour_indices`) and the label of the middle
one; 3D patches are ``(2, D, P, P)`` (the 2D model's pore probability and the
image) and their labels.
"""

from __future__ import annotations


import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.models.inputs import neighbour_indices, pad_to

__all__ = ["DatasetView", "open_training_data", "prepare_image", "Patches", "PatchSampler", "rank_share"]


def prepare_image(image: np.ndarray, preprocess: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
    """A raw grey volume as a model reads it: denoised and normalised to float32 in [0, 1].

    ``preprocess`` is a model card's ``input.preprocess`` (``denoise`` and
    ``normalize`` settings of :mod:`pipeline.preprocess`). ``image`` is not modified.
    """
    from pipeline.preprocess import denoise, normalize, robust_range

    d = dict(preprocess.get("denoise", {}))
    method = d.pop("method", "gaussian")
    dims = int(d.pop("dims", 2))
    mode = d.pop("mode", "reflect")
    params: dict[str, Any] = {}
    if method == "gaussian":
        params["sigma"] = float(d.get("sigma", 1.0))
    elif method == "median":
        params["size"] = int(d.get("size", 3))
    elif method == "bilateral":
        params.update(sigma_spatial=float(d.get("sigma", 1.0)), sigma_range=d.get("sigma_range"))
    x = np.asarray(image)
    if method != "none":
        x = denoise(x, method, dims=dims, mode=mode, **params)
    n = dict(preprocess.get("normalize", {}))
    if n.get("enabled", True):
        lo, hi = robust_range(x, float(n.get("low", 0.5)), float(n.get("high", 99.5)))
        return np.asarray(normalize(x, lo, hi, clip=bool(n.get("clip", True))), dtype=np.float32)
    return np.asarray(x, dtype=np.float32)


@dataclass
class DatasetView:
    """The parts of a dataset store training reads (opened lazily, per worker).

    Attributes
    ----------
    path : Path
        The dataset store (``image``, ``labels``, ``split``).
    splits : ndarray of str
        Split of every sample.
    families : ndarray of str
        Structure family of every sample ("" when unknown).
    shape : (int, int, int)
        Voxels (z, y, x) of a sample.
    voxel_size_nm : list of float
    probability : Path or None
        A store with the 2D model's ``probability`` (sample, z, y, x) of some
        samples (3D training); ``prob_index`` maps a dataset sample to its row there.
    """

    path: Path
    splits: np.ndarray
    families: np.ndarray
    shape: tuple[int, int, int]
    voxel_size_nm: list[float]
    probability: Path | None = None
    prob_index: dict[int, int] = field(default_factory=dict)
    _arrays: dict[str, Any] = field(default_factory=dict, repr=False)

    def samples(self, split: str) -> list[int]:
        """Indices of the samples of ``split`` (and, for 3D training, with a probability)."""
        ids = [int(i) for i in np.flatnonzero(self.splits == split)]
        if self.probability is not None:
            ids = [i for i in ids if i in self.prob_index]
        return ids

    def _array(self, name: str) -> Any:
        import zarr

        if name not in self._arrays:
            if name == "probability":
                self._arrays[name] = zarr.open_array(Path(self.probability) / "probability", mode="r")  # type: ignore[arg-type]
            else:
                self._arrays[name] = zarr.open_array(self.path / name, mode="r")
        return self._arrays[name]

    def image(self, i: int) -> np.ndarray:
        """Raw image of sample ``i`` (uint8, z, y, x)."""
        return np.asarray(self._array("image")[i])

    def labels(self, i: int) -> np.ndarray:
        """Labels of sample ``i`` (uint8, 1 = pore)."""
        return np.asarray(self._array("labels")[i])

    def prob(self, i: int) -> np.ndarray:
        """The 2D model's pore probability of sample ``i`` (float32)."""
        if self.probability is None or i not in self.prob_index:
            raise KeyError(f"sample {i} has no probability")
        return np.asarray(self._array("probability")[self.prob_index[i]], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:  # zarr handles are reopened where the view travels
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


def open_training_data(path: str | os.PathLike[str], *, probability: str | os.PathLike[str] | None = None,
                       need: Sequence[str] = ("train", "val")) -> DatasetView:
    """Open a dataset store for training and check it.

    Raises
    ------
    UserError
        Not a finished dataset with images and labels, a split in ``need``
        without samples, or a probability store that does not belong to it.
    """
    import zarr

    from pipeline.synth.dataset import open_dataset

    ds = open_dataset(path)
    if "image" not in ds:
        raise UserError(f"{path}: holds labels only (a structures-only dataset); training needs rendered images")
    if "split" not in ds.coords:
        raise UserError(f"{path}: has no split per sample; expected a dataset written by porelab synth")
    splits = np.array([str(v) for v in ds["split"].values.tolist()])
    fams = np.array([str(v) for v in ds["family"].values.tolist()]) if "family" in ds else np.array([""] * len(splits))
    for name in need:
        if not (splits == name).any():
            have = sorted(set(splits.tolist()))
            raise UserError(f"{path}: has no sample in the {name!r} split (it has {have}); give the synth stage a {name} fraction")
    shape = tuple(int(s) for s in ds["labels"].shape[1:])
    view = DatasetView(path=Path(path), splits=splits, families=fams, shape=shape,  # type: ignore[arg-type]
                       voxel_size_nm=[float(v) for v in ds.attrs.get("voxel_size_nm", [1, 1, 1])])
    if probability is not None:
        p = Path(probability)
        try:
            root = zarr.open_group(p, mode="r")
            arr = root["probability"]
            rows = np.asarray(root["sample"][:]) if "sample" in root else np.arange(arr.shape[0])
        except Exception:  # noqa: BLE001
            raise UserError(f"{p}: is not a probability store of a dataset; expected the output of a segment stage on {path}") from None
        if tuple(arr.shape[1:]) != shape:
            raise UserError(f"{p}: probability samples have shape {list(arr.shape[1:])}; the dataset's are {list(shape)}")
        view.probability = p
        view.prob_index = {int(s): r for r, s in enumerate(rows.tolist())}
        for name in need:
            if not view.samples(name):
                raise UserError(f"{p}: has no probability for the {name!r} split; segment that split first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.close()
    return view


def rank_share(ids: Sequence[int], rank: int, world: int) -> list[int]:
    """The samples worker ``rank`` of ``world`` reads: every ``world``-th one (all of them when there are fewer)."""
    ids = list(ids)
    if len(ids) < world:
        return ids
    return ids[rank::world]


@dataclass
class Patches:
    """A batch: inputs (batch, channels, *patch) float32 and targets (batch, 1, *patch) float32."""

    x: np.ndarray
    y: np.ndarray


class PatchSampler:
    """The patches one worker trains on in one epoch, in a fixed order.

    Parameters
    ----------
    view : DatasetView
    split : str
        Split to read (``"train"``).
    kind : {"slices", "volume"}
        2D/2.5D patches of ``k`` slices, or 3D patches of (probability, image).
    patch : sequence of int
        (P, P) or (D, P, P) voxels.
    k : int
        Neighbouring slices (2.5D); 1 for 2D and 3D.
    preprocess : mapping
        The model's input preprocessing (:func:`prepare_image`).
    n_batches, batch_size : int
        Batches this worker draws in the epoch.
    seed, epoch, rank, world : int
        What decides the order.
    buffer : int
        Samples held in memory at once.
    """

    def __init__(self, view: DatasetView, split: str, *, kind: str, patch: Sequence[int], k: int,
                 preprocess: Mapping[str, Any], n_batches: int, batch_size: int, seed: int, epoch: int,
                 rank: int = 0, world: int = 1, buffer: int = 4) -> None:
        self.view, self.kind, self.k = view, kind, int(k)
        self.patch = tuple(int(p) for p in patch)
        self.preprocess = preprocess
        self.n_batches, self.batch_size = int(n_batches), int(batch_size)
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11, int(epoch), int(rank)]))
        share = rank_share(view.samples(split), rank, world)
        if not share:
            raise UserError(f"{view.path}: the {split!r} split has no sample to train on")
        self.share = share
        self.buffer = max(1, min(int(buffer), len(share)))

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img = prepare_image(self.view.image(i), self.preprocess)
        lab = self.view.labels(i)
        if self.kind == "volume":
            img = np.stack([self.view.prob(i), img])
        return img, lab

    def _cut(self, img: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        if self.kind == "slices":
            Z, Y, X = lab.shape
            py, px = self.patch
            z = int(rng.integers(0, Z))
            y0 = int(rng.integers(0, max(1, Y - py + 1)))
            x0 = int(rng.integers(0, max(1, X - px + 1)))
            zs = neighbour_indices(z, self.k, Z)
            x = img[zs, y0:y0 + py, x0:x0 + px]
            y = lab[z:z + 1, y0:y0 + py, x0:x0 + px]
            x, y = pad_to(x, (py, px), (1, 2)), pad_to(y, (py, px), (1, 2))
            return x, y
        Z, Y, X = lab.shape
        pd, py, px = self.patch
        z0, y0, x0 = (int(rng.integers(0, max(1, n - p + 1))) for n, p in zip((Z, Y, X), (pd, py, px)))
        x = img[:, z0:z0 + pd, y0:y0 + py, x0:x0 + px]
        y = lab[None, z0:z0 + pd, y0:y0 + py, x0:x0 + px]
        return pad_to(x, self.patch, (1, 2, 3)), pad_to(y, self.patch, (1, 2, 3))

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[Patches]:
        total = self.n_batches * self.batch_size
        order = [int(i) for i in self.rng.permutation(self.share)]
        groups = [order[j:j + self.buffer] for j in range(0, len(order), self.buffer)]
        n_groups = min(len(groups), total) or 1
        per_group = [total // n_groups + (1 if g < total % n_groups else 0) for g in range(n_groups)]
        pending_x: list[np.ndarray] = []
        pending_y: list[np.ndarray] = []
        for g in range(n_groups):
            loaded = [self._load(i) for i in groups[g % len(groups)]]
            picks = self.rng.integers(0, len(loaded), per_group[g])
            for j in picks:
                x, y = self._cut(*loaded[int(j)])
                pending_x.append(x)
                pending_y.append(y)
                if len(pending_x) == self.batch_size:
                    yield Patches(np.stack(pending_x).astype(np.float32), np.stack(pending_y).astype(np.float32))
                    pending_x, pending_y = [], []
            del loaded
        if pending_x:  # only when total is not a multiple of the batch (never with n_batches * batch_size)
            yield Patches(np.stack(pending_x).astype(np.float32), np.stack(pending_y).astype(np.float32))


