"""Segmentation of volumes by a model: in memory, or over dask blocks with a halo.

The model's tiles sit on one grid over the whole volume
(:mod:`pipeline.segment.tiling`), so a block computed with a halo of one tile
(and the ``k // 2`` neighbour slices of a 2.5D model) gives exactly what the
whole volume gives there: the result does not depend on the chunking. Blocks
are whole (y, x) planes when a few slices of them fit the memory budget
(no tile is then computed twice); otherwise they are multiples of the grid's
step. Each dask task loads the model once per worker process
(:func:`pipeline.segment.predictor.cached_predictor`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from pipeline.models.card import ModelCard
from pipeline.models.inputs import effective_tile
from pipeline.segment.predictor import cached_predictor, resolve_runtime
from pipeline.segment.tiling import predict_region

__all__ = ["TilePlan", "plan_tiles", "predict_volume", "predict_dask", "dask_chunks", "block_chunks", "block_budget",
           "DEFAULT_BLOCK_BYTES"]

#: Default memory for one block's input, halo and accumulators (bytes).
DEFAULT_BLOCK_BYTES = 384 * 2**20
# What a Dask worker holds before its first block: the interpreter with dask, xarray, zarr and
# ONNX Runtime imported, a session loaded (measured 220-320 MiB on CPU workers).
WORKER_BASE_BYTES = 256 * 2**20
#: A worker that runs torch holds more: 480 MiB measured with the shipped 2D model loaded (ONNX Runtime: 310).
TORCH_WORKER_BASE_BYTES = 512 * 2**20
MIN_BLOCK_BYTES = 16 * 2**20


def block_budget(memory_limit: int | None, runtime: str = "onnx") -> int:
    """Bytes of one block's estimate (:func:`block_chunks`) for a worker with ``memory_limit`` bytes.

    A block really costs about three times its estimate (the halo copy Dask's
    overlap makes, the network's activations, the float16 and uint8 outputs), so
    a sixth of what the worker has left after its libraries
    (:data:`WORKER_BASE_BYTES`, :data:`TORCH_WORKER_BASE_BYTES` for the torch
    runtimes), at least :data:`MIN_BLOCK_BYTES` and at most
    :data:`DEFAULT_BLOCK_BYTES`; :data:`DEFAULT_BLOCK_BYTES` without a limit.
    """
    if memory_limit is None:
        return DEFAULT_BLOCK_BYTES
    base = WORKER_BASE_BYTES if runtime == "onnx" else TORCH_WORKER_BASE_BYTES
    return int(min(DEFAULT_BLOCK_BYTES, max(MIN_BLOCK_BYTES, (int(memory_limit) - base) // 6)))


@dataclass(frozen=True)
class TilePlan:
    """Tiles of a model over a volume: per axis (z, y, x) the tile, the grid step and the halo a block needs."""

    tile: tuple[int, int, int]
    step: tuple[int, int, int]
    halo: tuple[int, int, int]
    neighbours: int
    channels: int


def plan_tiles(card: ModelCard, shape: Sequence[int], *, tile: Sequence[int] | None = None,
               overlap: float | None = None) -> TilePlan:
    """The tiling of a model (``card``) over a volume of ``shape`` (z, y, x).

    ``tile`` and ``overlap`` override the model's inference defaults. Tiles are
    made multiples of the network's divisor; an axis shorter than the tile gets
    one tile of the axis rounded up to the divisor.
    """
    inf, inp = card.inference, card.input
    div = inp.divisor
    t = [int(v) for v in (tile if tile is not None else inf.tile)]
    ov = inf.overlap if overlap is None else float(overlap)
    if not 0 <= ov < 1:
        raise ValueError(f"overlap {ov} is not in [0, 1)")
    if inp.kind == "slices":
        if len(t) != 2:
            raise ValueError(f"a slice model's tile has two sizes (y, x); got {t}")
        t = [max(div, -(-v // div) * div) for v in t]
        ty, tx = (effective_tile(int(n), v, div) for n, v in zip(shape[1:], t))
        sy, sx = (max(1, int(round(v * (1 - ov)))) for v in (ty, tx))
        h = inp.slices // 2
        return TilePlan(tile=(1, ty, tx), step=(1, sy, sx), halo=(h, ty, tx), neighbours=inp.slices, channels=1)
    if len(t) != 3:
        raise ValueError(f"a volume model's tile has three sizes (z, y, x); got {t}")
    t = [max(div, -(-v // div) * div) for v in t]
    te = tuple(effective_tile(int(n), v, div) for n, v in zip(shape, t))
    st = tuple(max(1, int(round(v * (1 - ov)))) for v in te)
    return TilePlan(tile=te, step=st, halo=te, neighbours=1, channels=len(inp.channels))  # type: ignore[arg-type]


def _block_bytes(plan: TilePlan, core: Sequence[int], halo: Sequence[int], n_out: int, *, owned: bool = False) -> int:
    """Input with its halo plus the accumulators of one block, float32.

    ``owned``: a block of :mod:`pipeline.segment.owned`, which reads and sums
    over its core and one tile past its upper side only.
    """
    if owned:
        return 4 * (plan.channels + n_out + 1) * math.prod(c + h for c, h in zip(core, halo))
    inp = plan.channels * math.prod(c + 2 * h for c, h in zip(core, halo))
    return 4 * (inp + (n_out + 1) * math.prod(core))


def _split(n: int, c: int, halo: int) -> tuple[int, ...]:
    """Chunks of ``c`` voxels over ``n``; a last chunk too short to lend ``halo`` voxels joins the one before."""
    parts = [c] * (n // c)
    rest = n - c * len(parts)
    if rest:
        if parts and rest < halo + 1:
            parts[-1] += rest
        else:
            parts.append(rest)
    return tuple(parts) or (n,)


def block_chunks(shape: Sequence[int], plan: TilePlan, *, n_out: int = 1, budget_bytes: int = DEFAULT_BLOCK_BYTES,
                 z_multiple: int = 1, min_blocks: int = 1, owned: bool = False) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Dask chunks (z, y, x) of the blocks a volume is segmented in.

    Whole (y, x) planes when a few slices of them fit ``budget_bytes`` (no
    tile is computed twice in y, x); otherwise (y, x) blocks that are
    multiples of the grid step and at least a tile. Along z, as many slices as
    fit the budget, in multiples of ``z_multiple`` (the store's chunk) for a
    slice model (or of its half, quarter... when one chunk of slices does not
    fit) and of the z step for a 3D model, so that few tiles straddle two
    blocks. No chunk is shorter than the halo it lends a neighbour. Outputs
    are written into stores whose chunks nest in these blocks
    (:func:`pipeline.engine.blocks.nesting_chunks`). ``owned``: blocks of
    :mod:`pipeline.segment.owned` (their memory estimate).
    """
    Z, Y, X = (int(s) for s in shape)
    hz = int(plan.halo[0])
    min_z = max(int(plan.tile[0]), hz + 1)
    yx, halo_yx = [Y, X], [0, 0]
    if _block_bytes(plan, (min_z, Y, X), (hz, 0, 0), n_out, owned=owned) > budget_bytes:
        halo_yx = [int(plan.halo[1]), int(plan.halo[2])]
        lows = []
        for i, n in enumerate((Y, X)):
            step, t = plan.step[i + 1], plan.tile[i + 1]
            low = min(n, -(-t // step) * step)
            lows.append(low)
            yx[i] = min(n, max(low, (4 * t // step) * step))
        while _block_bytes(plan, (min_z, *yx), (hz, *halo_yx), n_out, owned=owned) > budget_bytes and (yx[0] > lows[0] or yx[1] > lows[1]):
            i = 0 if yx[0] - lows[0] >= yx[1] - lows[1] else 1
            step = plan.step[i + 1]
            yx[i] = max(lows[i], (yx[i] // 2 // step) * step)
        halo_yx = [0 if yx[i] == n else halo_yx[i] for i, n in enumerate((Y, X))]
    grain = max(1, int(z_multiple)) if plan.tile[0] == 1 else int(plan.step[0])
    grain = min(grain, Z)
    if plan.tile[0] == 1:
        # a store chunk of slices that does not fit: halves of it (whole divisors), so that blocks still nest in it
        while grain > 1 and grain % 2 == 0 and _block_bytes(plan, (max(min_z, grain), *yx), (hz, *halo_yx), n_out, owned=owned) > budget_bytes:
            grain //= 2
    cz = min(Z, -(-min_z // grain) * grain)
    while cz + grain <= Z and _block_bytes(plan, (cz + grain, *yx), (hz, *halo_yx), n_out, owned=owned) <= budget_bytes:
        cz += grain
    if Z - cz < grain and _block_bytes(plan, (Z, *yx), (0, *halo_yx), n_out, owned=owned) <= budget_bytes:
        cz = Z  # the rest of the axis fits too: one block along z
    n_yx = -(-Y // yx[0]) * -(-X // yx[1])
    if n_yx * -(-Z // cz) < min_blocks:
        want = -(-min_blocks // n_yx)
        cz = max(min_z, -(-Z // want))
        if grain > 1 and cz > grain:
            cz = -(-cz // grain) * grain
    return _split(Z, cz, hz), _split(Y, yx[0], int(plan.halo[1])), _split(X, yx[1], int(plan.halo[2]))


def _cluster_threads() -> int:
    """Dask threads of the active client (1 without one)."""
    try:
        from distributed import get_client

        return max(1, sum(get_client().nthreads().values()))
    except (ImportError, ValueError):
        return 1


def _predict_block(block: np.ndarray, *, origin: Sequence[int], region: Sequence[slice], shape: Sequence[int],
                   plan: TilePlan, folder: str, sha256: str, tta: bool, device: str, threads: int | None,
                   batch_size: int, sigma_scale: float, runtime: str = "torch") -> np.ndarray:
    predictor = cached_predictor(folder, sha256, tta=tta, device=device, threads=threads, runtime=runtime)
    if block.ndim == 3:
        block = block[None]
    return predict_region(
        np.asarray(block, dtype=np.float32), origin, region, shape, tile=plan.tile, step=plan.step,
        predict=predictor, n_out=predictor.n_out, batch_size=batch_size, sigma_scale=sigma_scale,
        neighbours=plan.neighbours,
    )


def predict_volume(image: np.ndarray, folder: str | os.PathLike[str], card: ModelCard, *, tta: bool = False,
                   tile: Sequence[int] | None = None, overlap: float | None = None, batch_size: int | None = None,
                   device: str = "cpu", threads: int | None = None, runtime: str = "auto") -> np.ndarray:
    """Pore probability of a whole volume held in memory.

    Parameters
    ----------
    image : ndarray (z, y, x) or (channels, z, y, x)
        float32 in the model's value range (a 3D refinement model: channels
        probability and image).
    folder, card : path, ModelCard
        The model folder and its ``model.json``.
    tta : bool
        Average over test-time flips; the output then has a second channel, the spread.
    runtime : {"auto", "torch", "torch-bf16", "onnx"}
        What runs the network (auto: torch-bf16 on CPUs with AMX and on CUDA
        with bf16, else ONNX Runtime on CPUs where installed, see
        :func:`pipeline.segment.predictor.resolve_runtime`).

    Returns
    -------
    ndarray of float32, shape (outputs, z, y, x)
    """
    arr = np.asarray(image, dtype=np.float32)
    shape = arr.shape[-3:]
    plan = plan_tiles(card, shape, tile=tile, overlap=overlap)
    return _predict_block(arr, origin=(0, 0, 0), region=tuple(slice(0, s) for s in shape), shape=shape, plan=plan,
                          folder=str(Path(folder).resolve()), sha256=card.weights_sha256, tta=tta, device=device,
                          threads=threads, batch_size=batch_size or card.inference.batch_size,
                          sigma_scale=card.inference.sigma_scale, runtime=resolve_runtime(runtime, device))


def dask_chunks(card: ModelCard, shape: Sequence[int], *, tile: Sequence[int] | None = None, overlap: float | None = None,
                tta: bool = False, budget_bytes: int = DEFAULT_BLOCK_BYTES,
                z_multiple: int = 1) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The blocks (dask chunks, z, y, x) :func:`predict_dask` cuts a volume of ``shape`` into, on the active
    Dask client (at least two per worker thread); ``z_multiple``: the input's z chunk (slice models)."""
    plan = plan_tiles(card, shape, tile=tile, overlap=overlap)
    return block_chunks(shape, plan, n_out=2 if tta else 1, budget_bytes=budget_bytes, z_multiple=z_multiple,
                        min_blocks=2 * _cluster_threads())


def predict_dask(data: da.Array, folder: str | os.PathLike[str], card: ModelCard, *, tta: bool = False,
                 tile: Sequence[int] | None = None, overlap: float | None = None, batch_size: int | None = None,
                 device: str = "cpu", threads: int | None = None, budget_bytes: int = DEFAULT_BLOCK_BYTES,
                 runtime: str = "auto") -> da.Array:
    """Pore probability of a dask volume, block by block with a halo (lazy).

    Parameters
    ----------
    data : dask array (z, y, x) or (channels, z, y, x)
        float32 in the model's value range.
    budget_bytes : int
        Memory for one block (input with its halo and accumulators).
    Other parameters as in :func:`predict_volume`.

    Returns
    -------
    dask array of float32, shape (outputs, z, y, x)
        The same values as :func:`predict_volume` of the whole volume,
        whatever the chunking of ``data``.
    """
    data = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=-1)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"expected (z, y, x) or (channels, z, y, x); got shape {data.shape}")
    shape = tuple(int(s) for s in data.shape[1:])
    plan = plan_tiles(card, shape, tile=tile, overlap=overlap)
    if data.shape[0] != plan.channels:
        raise ValueError(f"the model reads {plan.channels} channel(s); the data has {data.shape[0]}")
    n_out = 2 if tta else 1
    z_multiple = int(data.chunks[1][0]) if data.numblocks[1] > 1 else 1
    chunks = dask_chunks(card, shape, tile=tile, overlap=overlap, tta=tta, budget_bytes=budget_bytes, z_multiple=z_multiple)
    x = data.astype(np.float32).rechunk(((data.shape[0],), *chunks))
    depth = {0: 0}
    for ax in range(3):
        depth[ax + 1] = 0 if len(chunks[ax]) == 1 else int(plan.halo[ax])
    xo = da.overlap.overlap(x, depth=depth, boundary="none") if any(depth.values()) else x
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in chunks]
    folder_s = str(Path(folder).resolve())
    batch = batch_size or card.inference.batch_size
    rt = resolve_runtime(runtime, device)
    if rt == "onnx":  # exported here, once: the workers then open it without importing torch
        from pipeline.models.onnx import ensure_onnx

        ensure_onnx(folder_s, card)

    def run(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        loc = block_info[0]["chunk-location"][1:]  # type: ignore[index]
        core = [slice(int(starts[a][i]), int(starts[a][i] + chunks[a][i])) for a, i in enumerate(loc)]
        origin = [max(0, c.start - depth[a + 1]) for a, c in enumerate(core)]
        return _predict_block(block, origin=origin, region=core, shape=shape, plan=plan, folder=folder_s,
                              sha256=card.weights_sha256, tta=tta, device=device, threads=threads,
                              batch_size=batch, sigma_scale=card.inference.sigma_scale, runtime=rt)

    return da.map_blocks(run, xo, dtype=np.float32, chunks=((n_out,), *chunks),
                         meta=np.empty((0, 0, 0, 0), dtype=np.float32), name=f"segment-{card.weights_sha256[:12]}")
