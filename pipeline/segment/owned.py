"""3D inference over blocks without recomputed tiles: each tile is computed once, by the block that holds its start.

:func:`pipeline.segment.infer.predict_dask` gives every block the tiles that
touch its core, with a halo of one tile, so a tile across a block border is
computed by every block it touches. For the shipped 3D refinement (tiles of
32 x 128 x 128 at a step of 24 x 96 x 96) on blocks of 48 x 192 x 192 that is
3 tiles per axis where 2 start in the block: 3.4 times the work of the whole
volume in one piece.

Here (for volume models, whose blocks are not whole planes):

1. :func:`accumulate_owned` (eager, resumable): each block computes only the
   tiles whose start lies in its core, over its core and the part of its upper
   neighbours they reach (less than a tile per axis), and saves the weighted
   sums and the sum of the weights, not divided, as one ``.npy`` file in a
   scratch folder. A block whose file is there is not computed again.
2. :func:`combine_owned` (lazy): each core adds its own sums to what its lower
   neighbours' tiles spilled into it, and divides.

The tiles and weights are those of the whole volume, so the values are the
whole volume's up to the order of float32 additions (tested within 1e-5). A
block reads its core plus one tile on the upper side, not a tile on every
side, so blocks of the same memory are larger.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from pipeline.models.card import ModelCard
from pipeline.segment.infer import DEFAULT_BLOCK_BYTES, TilePlan, _cluster_threads, block_chunks, plan_tiles
from pipeline.segment.predictor import cached_predictor, resolve_runtime
from pipeline.segment.tiling import accumulate_tiles, tile_starts

__all__ = ["OwnedBlocks", "owned_blocks", "blocks_for", "accumulate_owned", "combine_owned", "predict_owned"]


@dataclass(frozen=True)
class OwnedBlocks:
    """Blocks of a volume (cores per axis) and the grid's tiles each one owns."""

    shape: tuple[int, int, int]
    chunks: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    tile: tuple[int, int, int]
    step: tuple[int, int, int]

    def _bounds(self, axis: int) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.chunks[axis])]).astype(int)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Blocks per axis."""
        return tuple(len(c) for c in self.chunks)  # type: ignore[return-value]

    def indices(self) -> list[tuple[int, int, int]]:
        """Every block index, in C order."""
        return list(itertools.product(*(range(n) for n in self.grid)))  # type: ignore[arg-type]

    def core(self, index: Sequence[int]) -> tuple[slice, slice, slice]:
        """The voxels of block ``index`` (global coordinates)."""
        return tuple(slice(int(self._bounds(a)[i]), int(self._bounds(a)[i + 1])) for a, i in enumerate(index))  # type: ignore[return-value]

    def starts(self, index: Sequence[int]) -> list[list[int]]:
        """Per axis, the starts of the grid's tiles that lie in the block's core."""
        out = []
        for a, c in enumerate(self.core(index)):
            out.append([s for s in tile_starts(self.shape[a], self.tile[a], self.step[a]) if c.start <= s < c.stop])
        return out

    def extent(self, index: Sequence[int]) -> tuple[slice, slice, slice]:
        """The voxels the block's own tiles cover: its core and, past its upper side, less than a tile."""
        out = []
        for a, (c, s) in enumerate(zip(self.core(index), self.starts(index))):
            end = max([c.stop] + [v + min(self.tile[a], self.shape[a]) for v in s])
            out.append(slice(c.start, min(self.shape[a], end)))
        return tuple(out)  # type: ignore[return-value]

    def sources(self, index: Sequence[int]) -> list[tuple[int, int, int]]:
        """The blocks whose tiles reach into block ``index``: itself and lower neighbours whose extent crosses its border."""
        core = self.core(index)
        out = []
        for delta in itertools.product((0, 1), repeat=3):
            other = tuple(i - d for i, d in zip(index, delta))
            if min(other) < 0:
                continue
            ext = self.extent(other)
            if all(e.stop > c.start and e.start < c.stop for e, c in zip(ext, core)):
                out.append(other)  # type: ignore[arg-type]
        return out


def owned_blocks(shape: Sequence[int], plan: TilePlan, *, n_out: int = 1, budget_bytes: int = DEFAULT_BLOCK_BYTES,
                 min_blocks: int = 1) -> OwnedBlocks:
    """The blocks of a volume model over ``shape``: as large as ``budget_bytes`` allows for a core, one tile past
    its upper side and the accumulators (:func:`pipeline.segment.infer.block_chunks` with ``owned``)."""
    if plan.tile[0] == 1:
        raise ValueError("owned tiles are for volume models; a slice model's blocks are whole planes")
    chunks = block_chunks(shape, plan, n_out=n_out, budget_bytes=budget_bytes, min_blocks=min_blocks, owned=True)
    return OwnedBlocks(tuple(int(s) for s in shape), chunks, plan.tile, plan.step)  # type: ignore[arg-type]


def _grid_folder(scratch: str | os.PathLike[str], blocks: OwnedBlocks) -> Path:
    """The sums of one block grid: another grid (another worker memory on a resumed run) never reads them."""
    import hashlib

    key = repr((blocks.shape, blocks.chunks, blocks.tile, blocks.step)).encode()
    return Path(scratch) / f"grid-{hashlib.sha256(key).hexdigest()[:12]}"


def _digest(scratch: Path) -> str:
    """A short name of a scratch folder for task keys: two folders (two stages, two inputs) never share a task."""
    import hashlib

    return hashlib.sha256(str(scratch.resolve()).encode()).hexdigest()[:16]


def _path(scratch: Path, index: Sequence[int]) -> Path:
    return scratch / ("sums-" + ".".join(str(i) for i in index) + ".npy")


def _accumulate_block(block: np.ndarray, *, blocks: OwnedBlocks, index: tuple[int, int, int], path: str, folder: str,
                      sha256: str, tta: bool, device: str, threads: int | None, batch_size: int, sigma_scale: float,
                      runtime: str) -> str:
    """Pass 1 for one block: its own tiles' weighted sums and weights over its extent, saved to ``path`` (atomic)."""
    if os.path.exists(path):
        return path
    ext = blocks.extent(index)
    starts = list(itertools.product(*blocks.starts(index)))
    predictor = cached_predictor(folder, sha256, tta=tta, device=device, threads=threads, runtime=runtime)
    n_out = predictor.n_out
    if starts:
        acc, wsum = accumulate_tiles(np.asarray(block, dtype=np.float32), [e.start for e in ext], ext, blocks.shape, starts,
                                     tile=blocks.tile, predict=predictor, n_out=n_out, batch_size=batch_size,
                                     sigma_scale=sigma_scale)
        sums = np.concatenate([acc, wsum[None]])
    else:  # a short last block: every voxel of it comes from its lower neighbours' tiles
        sums = np.zeros((n_out + 1, *(e.stop - e.start for e in ext)), np.float32)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as fh:
        np.save(fh, sums)
    os.replace(tmp, path)
    return path


def accumulate_owned(data: da.Array, folder: str | os.PathLike[str], card: ModelCard, blocks: OwnedBlocks,
                     scratch: str | os.PathLike[str], *, tta: bool = False, batch_size: int | None = None, device: str = "cpu",
                     threads: int | None = None, runtime: str = "auto", progress: str | None = None) -> Path:
    """Pass 1: every block's own tiles, on the active Dask client, into ``scratch`` (blocks already there are skipped).

    Parameters
    ----------
    data : dask array (channels, z, y, x)
        float32 in the model's value range.
    folder, card : path, ModelCard
        A volume model.
    blocks : OwnedBlocks
        From :func:`owned_blocks` of the data's shape.
    scratch : path
        Folder of the sums (created; about (outputs + 1) x 4 bytes per voxel,
        in a subfolder named after the block grid).
    """
    from pipeline.engine.blocks import compute_tasks

    scratch = _grid_folder(scratch, blocks)
    scratch.mkdir(parents=True, exist_ok=True)
    folder_s = str(Path(folder).resolve())
    rt = resolve_runtime(runtime, device)
    if rt == "onnx":
        from pipeline.models.onnx import ensure_onnx

        ensure_onnx(folder_s, card)
    x = data.astype(np.float32)
    todo = [i for i in blocks.indices() if not _path(scratch, i).exists()]
    tasks = []
    for index in todo:
        ext = blocks.extent(index)
        tasks.append(dask.delayed(_accumulate_block)(
            x[(slice(None), *ext)], blocks=blocks, index=index, path=str(_path(scratch, index)), folder=folder_s,
            sha256=card.weights_sha256, tta=tta, device=device, threads=threads,
            batch_size=batch_size or card.inference.batch_size, sigma_scale=card.inference.sigma_scale, runtime=rt,
            dask_key_name=f"owned-sums-{_digest(scratch)}-{'.'.join(map(str, index))}"))
    compute_tasks(tasks, progress=progress, total=len(blocks.indices()))
    return scratch


def _combine_block(paths: list[str], extents: list[tuple[slice, ...]], core: tuple[slice, ...], n_out: int) -> np.ndarray:
    """Pass 2 for one block: its sources' sums over its core, divided by their weights."""
    shape = tuple(c.stop - c.start for c in core)
    sums = np.zeros((n_out + 1, *shape), np.float32)
    for path, ext in zip(paths, extents):
        src, dst = [], []
        for e, c in zip(ext, core):
            lo, hi = max(e.start, c.start), min(e.stop, c.stop)
            src.append(slice(lo - e.start, hi - e.start))
            dst.append(slice(lo - c.start, hi - c.start))
        part = np.load(path, mmap_mode="r")
        sums[(slice(None), *dst)] += part[(slice(None), *src)]
    return sums[:n_out] / sums[n_out]


def combine_owned(scratch: str | os.PathLike[str], blocks: OwnedBlocks, n_out: int) -> da.Array:
    """Pass 2 (lazy): the blended probabilities, (n_out, z, y, x) float32 in the blocks' chunks."""
    scratch = _grid_folder(scratch, blocks)
    parts: dict[tuple[int, ...], da.Array] = {}
    for index in blocks.indices():
        core = blocks.core(index)
        sources = blocks.sources(index)
        task = dask.delayed(_combine_block)([str(_path(scratch, s)) for s in sources], [blocks.extent(s) for s in sources],
                                            core, n_out, dask_key_name=f"owned-combine-{_digest(scratch)}-{'.'.join(map(str, index))}")
        parts[index] = da.from_delayed(task, shape=(n_out, *(c.stop - c.start for c in core)), dtype=np.float32)
    gz, gy, gx = blocks.grid
    return da.block([[[parts[(i, j, k)] for k in range(gx)] for j in range(gy)] for i in range(gz)])


def predict_owned(data: da.Array, folder: str | os.PathLike[str], card: ModelCard, scratch: str | os.PathLike[str], *,
                  tta: bool = False, tile: Sequence[int] | None = None, overlap: float | None = None,
                  batch_size: int | None = None, device: str = "cpu", threads: int | None = None,
                  budget_bytes: int = DEFAULT_BLOCK_BYTES, runtime: str = "auto", progress: str | None = None) -> da.Array | None:
    """Pass 1 now (eager) and pass 2 lazily: the probabilities of a volume model over a dask volume, each tile once.

    Returns None when the volume is one block (nothing is recomputed there:
    :func:`pipeline.segment.infer.predict_dask` is as fast). Parameters as in
    :func:`pipeline.segment.infer.predict_dask`, plus ``scratch`` (see
    :func:`accumulate_owned`) and ``progress`` (a progress bar's label).
    """
    data = data if data.ndim == 4 else data[None]
    shape = tuple(int(s) for s in data.shape[1:])
    plan = plan_tiles(card, shape, tile=tile, overlap=overlap)
    if data.shape[0] != plan.channels:
        raise ValueError(f"the model reads {plan.channels} channel(s); the data has {data.shape[0]}")
    blocks = blocks_for(card, shape, tile=tile, overlap=overlap, tta=tta, budget_bytes=budget_bytes)
    if blocks is None:
        return None
    accumulate_owned(data, folder, card, blocks, scratch, tta=tta, batch_size=batch_size, device=device, threads=threads,
                     runtime=runtime, progress=progress)
    return combine_owned(scratch, blocks, 2 if tta else 1)


def blocks_for(card: ModelCard, shape: Sequence[int], *, tile: Sequence[int] | None = None, overlap: float | None = None,
               tta: bool = False, budget_bytes: int = DEFAULT_BLOCK_BYTES) -> OwnedBlocks | None:
    """The blocks :func:`predict_owned` computes a volume of ``shape`` in, on the active Dask client (at least two
    per worker thread); None for a volume of one block, which it leaves to :func:`pipeline.segment.infer.predict_dask`."""
    plan = plan_tiles(card, shape, tile=tile, overlap=overlap)
    blocks = owned_blocks(shape, plan, n_out=2 if tta else 1, budget_bytes=budget_bytes, min_blocks=2 * _cluster_threads())
    return None if math.prod(blocks.grid) == 1 else blocks
