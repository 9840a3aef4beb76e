"""Segmentation of a porelab volume by a model folder: checks, lazy outputs, the attrs they carry.

The job stages (``segment``, ``refine``) and ``porelab segment`` call
:func:`segment_volume` and :func:`refine_volume`; both return the channels to
write (``probability`` float16, ``mask`` uint8 with 1 = pore, and with
test-time flips ``uncertainty`` float16) as one lazy dask array, plus the
store's attrs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from pipeline.errors import UserError
from pipeline.io.volume import LABEL_NAMES
from pipeline.models.card import ModelCard
from pipeline.models.folder import read_card, resolve_model
from pipeline.segment.infer import DEFAULT_BLOCK_BYTES, predict_dask

__all__ = ["SegmentOptions", "Segmentation", "segment_volume", "refine_volume", "refine_block_chunks", "check_voxel_size",
           "preprocess_for", "load_for"]


@dataclass
class SegmentOptions:
    """How a model is run over a volume.

    Attributes
    ----------
    model : str or path or None
        A model folder, a shipped model's name, or None / "default".
    tta : bool
        Average over test-time flips and write the spread as ``uncertainty``.
    tile, overlap, batch_size, threshold : optional
        Override the model's inference defaults.
    preprocess : bool
        Apply the model's input preprocessing (denoise, normalise) to a raw volume.
    device : str
        ``"cpu"`` or ``"cuda"``.
    threads : int or None
        torch / ONNX Runtime threads per task (None: their default).
    runtime : {"auto", "torch", "torch-bf16", "onnx"}
        What runs the network (see :func:`pipeline.segment.predictor.resolve_runtime`).
    resample : bool
        Segment at the voxel size the model was trained at (linear
        resampling there and back, :mod:`pipeline.segment.resample`).
    budget_bytes : int
        Memory for one block.
    scratch : str or path or None
        A folder (on storage every worker sees) for a volume model's tile sums:
        each tile is then computed once instead of once per block it touches
        (:mod:`pipeline.segment.owned`). None: blocks with a halo of one tile.
    """

    model: str | Path | None = None
    tta: bool = False
    tile: list[int] | None = None
    overlap: float | None = None
    batch_size: int | None = None
    threshold: float | None = None
    preprocess: bool = False
    device: str = "cpu"
    threads: int | None = None
    budget_bytes: int = DEFAULT_BLOCK_BYTES
    runtime: str = "auto"
    resample: bool = False
    scratch: str | Path | None = None


@dataclass
class Segmentation:
    """Lazy channels of a segmentation and where they go."""

    data: da.Array
    variables: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    card: ModelCard | None = None
    folder: Path | None = None


def check_voxel_size(card: ModelCard, voxel_size_nm: Any, *, factor: float = 2.0) -> str | None:
    """A warning when a voxel size lies more than ``factor`` outside the range the model saw in training, else None."""
    rng = card.input.voxel_size_nm
    if not rng or voxel_size_nm is None:
        return None
    lo, hi = np.asarray(rng["min"], float), np.asarray(rng["max"], float)
    vs = np.asarray(voxel_size_nm, float)
    if np.any(vs < lo / factor) or np.any(vs > hi * factor):
        return (f"voxel size {list(map(float, vs))} nm is far from the {lo.tolist()}-{hi.tolist()} nm (z, y, x) the model "
                f"{card.name!r} was trained on; pass --resample (resample: true in a job) to segment at that size")
    return None


def preprocess_for(vol: xr.DataArray, card: ModelCard) -> xr.DataArray:
    """``vol`` preprocessed (lazily) as the model's training data was: its denoise and normalise settings."""
    from pipeline.preprocess.chain import DenoiseParams, NormalizeParams, preprocess_volume

    d = {k: v for k, v in card.input.preprocess.get("denoise", {}).items() if k in DenoiseParams.__dataclass_fields__}
    n = {k: v for k, v in card.input.preprocess.get("normalize", {}).items() if k in NormalizeParams.__dataclass_fields__}
    try:
        return preprocess_volume(vol, DenoiseParams(**d), NormalizeParams(**n))
    except ValueError as exc:
        raise UserError(f"preprocess for the model: {exc}") from None


def _grey_input(vol: xr.DataArray, card: ModelCard, opts: SegmentOptions, where: str) -> xr.DataArray:
    if str(vol.name) in LABEL_NAMES or vol.dtype == bool:
        raise UserError(f"{where}: holds labels ({vol.name!r}, {vol.dtype}); expected a grey image volume (a preprocess output)")
    if vol.dtype.kind in "biu":
        if not opts.preprocess:
            raise UserError(f"{where}: holds {vol.dtype} values, not a preprocessed volume; run porelab preprocess first, "
                            "or pass --preprocess (preprocess: true in a job) to normalise it as the model was trained")
        vol = preprocess_for(vol, card)
    return vol


def load_for(opts: SegmentOptions, task: str) -> tuple[Path, ModelCard]:
    """The folder and card of the model ``opts`` names, checked to be a ``task`` model."""
    folder = resolve_model(opts.model, task=task)
    card = read_card(folder)
    if card.task != task:
        raise UserError(f"{folder}: is a {card.task} model; expected a {task} model here")
    return folder, card


def _predict(inputs: list[xr.DataArray], folder: Path, card: ModelCard, opts: SegmentOptions) -> da.Array:
    """(outputs, z, y, x) probabilities of a model over stacked ``inputs`` (channels), on the inputs' grid."""
    from pipeline.segment.resample import resample_like, resample_volume, training_voxel_size

    grid = inputs[0]
    if opts.resample and card.input.voxel_size_nm:
        target = training_voxel_size(card.input.voxel_size_nm)
        inputs = [resample_volume(v.astype(np.float32), target) for v in inputs]
    data = inputs[0].data if len(inputs) == 1 else da.stack([v.data.astype(np.float32) for v in inputs])
    prob = None
    if opts.scratch is not None and card.input.kind != "slices":
        from pipeline.segment.owned import predict_owned

        prob = predict_owned(data, folder, card, opts.scratch, tta=opts.tta, tile=opts.tile, overlap=opts.overlap,
                             batch_size=opts.batch_size, device=opts.device, threads=opts.threads,
                             budget_bytes=opts.budget_bytes, runtime=opts.runtime, progress="3D tiles")
    if prob is None:
        prob = predict_dask(data, folder, card, tta=opts.tta, tile=opts.tile, overlap=opts.overlap,
                            batch_size=opts.batch_size, device=opts.device, threads=opts.threads,
                            budget_bytes=opts.budget_bytes, runtime=opts.runtime)
    if inputs[0] is grid:
        return prob
    back = [resample_like(xr.DataArray(prob[i], dims=grid.dims, coords=inputs[0].coords, attrs=inputs[0].attrs), grid).data
            for i in range(prob.shape[0])]
    return da.clip(da.stack(back), 0.0, 1.0).astype(np.float32)


def _outputs(prob: da.Array, card: ModelCard, opts: SegmentOptions) -> tuple[da.Array, dict[str, Any]]:
    thr = card.inference.threshold if opts.threshold is None else float(opts.threshold)
    mask = (prob[0] >= np.float32(thr)).astype(np.float32)
    chans = [prob[0], mask] + ([prob[1]] if opts.tta else [])
    variables: dict[str, Any] = {"mask": np.uint8, "probability": np.float16}
    if opts.tta:
        variables["uncertainty"] = np.float16
    return da.stack([chans[1], chans[0], *chans[2:]]), variables


def _attrs(card: ModelCard, folder: Path, opts: SegmentOptions, plan_tile: Any) -> dict[str, Any]:
    return {
        "meaning": "mask: 1 = pore, 0 = solid; probability: pore probability; uncertainty: its spread over test-time flips",
        "model": {"name": card.name, "folder": str(folder), "weights_sha256": card.weights_sha256, "task": card.task},
        "inference": {"tile": list(plan_tile), "overlap": card.inference.overlap if opts.overlap is None else opts.overlap,
                      "threshold": card.inference.threshold if opts.threshold is None else opts.threshold,
                      "tta": opts.tta, "resampled": bool(opts.resample and card.input.voxel_size_nm)},
    }


def segment_volume(vol: xr.DataArray, opts: SegmentOptions, *, where: str = "input") -> Segmentation:
    """Segment a grey volume with a slice model (2D / 2.5D).

    Raises
    ------
    UserError
        A label volume, a raw (integer) volume without ``preprocess``, a
        volume with fewer slices than the model reads, or a refinement model.
    """
    from pipeline.segment.infer import plan_tiles

    folder, card = load_for(opts, "segment")
    vol = _grey_input(vol, card, opts, where)
    k = card.input.slices
    div = card.input.divisor
    if min(vol.shape[1:]) < div:
        raise UserError(f"{where}: has slices of {vol.shape[1]} x {vol.shape[2]} pixels; the model {card.name!r} needs at least "
                        f"{div} x {div}")
    if 1 < vol.shape[0] < k:  # one slice (a 2D image) is its own neighbour: segmented as one slice
        raise UserError(f"{where}: has {vol.shape[0]} slice(s); the model {card.name!r} reads {k} neighbouring slices, "
                        f"so it needs at least {k}")
    plan = plan_tiles(card, vol.shape, tile=opts.tile, overlap=opts.overlap)
    prob = _predict([vol], folder, card, opts)
    data, variables = _outputs(prob, card, opts)
    return Segmentation(data=data, variables=variables, attrs=_attrs(card, folder, opts, plan.tile[1:]), card=card, folder=folder)


def refine_volume(probability: xr.DataArray, image: xr.DataArray, opts: SegmentOptions, *,
                  where: str = "input", image_where: str = "image") -> Segmentation:
    """Refine a 2D model's pore probability in 3D, with the grey image as the second channel.

    Raises
    ------
    UserError
        A probability that is not in [0, 1] floats (labels given instead),
        an image that holds labels or raw values without ``preprocess``, or
        shapes that differ.
    """
    from pipeline.segment.infer import plan_tiles

    folder, card = load_for(opts, "refine")
    if probability.dtype.kind not in "f" or str(probability.name) in LABEL_NAMES:
        raise UserError(f"{where}: holds {probability.name!r} ({probability.dtype}); expected the pore probability of a segment stage")
    image = _grey_input(image, card, opts, image_where)
    if probability.shape != image.shape:
        raise UserError(f"{image_where}: has shape {list(image.shape)}; the probability {list(probability.shape)}")
    if min(image.shape) < 2:
        raise UserError(f"{image_where}: has shape {list(image.shape)}; a 3D refinement needs at least 2 voxels along every axis")
    plan = plan_tiles(card, image.shape, tile=opts.tile, overlap=opts.overlap)
    prob = _predict([probability, image], folder, card, opts)
    data, variables = _outputs(prob, card, opts)
    return Segmentation(data=data, variables=variables, attrs=_attrs(card, folder, opts, plan.tile), card=card, folder=folder)


def refine_block_chunks(shape: tuple[int, ...], opts: SegmentOptions) -> tuple[tuple[int, ...], ...]:
    """The blocks (dask chunks, z, y, x) :func:`refine_volume` computes a volume of ``shape`` in, before any is
    computed: the chunks its output store should nest (:func:`pipeline.engine.blocks.nesting_chunks`)."""
    from pipeline.segment.infer import dask_chunks
    from pipeline.segment.owned import blocks_for

    _, card = load_for(opts, "refine")
    kw = {"tile": opts.tile, "overlap": opts.overlap, "tta": opts.tta, "budget_bytes": opts.budget_bytes}
    blocks = blocks_for(card, shape, **kw) if opts.scratch is not None and card.input.kind != "slices" else None
    return blocks.chunks if blocks is not None else dask_chunks(card, shape, **kw)
