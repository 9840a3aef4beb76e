"""What a stage adapter is given by the runner: paths, seed, engines, resumable writes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr

from pipeline.errors import UserError

__all__ = ["StageContext"]

log = logging.getLogger("porelab")

#: Most bytes of a written block holding whole chunks of a lazy volume when no worker has a memory limit.
COVER_BYTES = 256 * 2**20


@dataclass
class StageContext:
    """The runner's view of one stage while it runs.

    Attributes
    ----------
    run_dir : Path
        The run folder ``runs/<name>/``.
    name : str
        This stage's output name (unique in the job).
    seed : int
        Seed for this stage, derived from the job seed and the stage name.
    backend : {"numpy", "cupy"}
        Array backend resolved for this run.
    input : Path or None
        Main output of the stage this one reads (None for the first stage).
    outputs : dict of str to Path
        Main outputs of all earlier stages by name.
    job_hash, stage_hash : str
        Hash of the whole job spec and of this stage's config plus inputs.
    chunks : (int, int, int)
        Default on-disk chunk shape of volumes.
    job_dir : Path
        Folder of the job file: relative input paths in stage configs are read from here.
    """

    run_dir: Path
    name: str
    seed: int
    backend: Literal["numpy", "cupy"]
    input: Path | None
    outputs: dict[str, Path]
    job_hash: str
    stage_hash: str
    chunks: tuple[int, int, int]
    job_dir: Path = Path(".")
    blocks_computed: dict[str, int] = field(default_factory=dict)
    _dask_client: Callable[[], Any] = field(repr=False, default=lambda: None)
    _ray_init: Callable[[], None] = field(repr=False, default=lambda: None)

    # -- paths -------------------------------------------------------------
    def path(self, filename: str) -> Path:
        """Path of a file or folder of this stage inside the run folder."""
        return self.run_dir / filename

    @property
    def work_dir(self) -> Path:
        """Scratch folder of this stage (markers, temporary files), kept until the run ends."""
        d = self.run_dir / ".work" / self.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def require_input(self, what: str = "a volume") -> Path:
        """The main input path, or a UserError saying which stage is missing."""
        if self.input is None:
            raise UserError(f"stage {self.name!r} needs {what} as input; add an earlier stage or set input:")
        return self.input

    # -- engines -----------------------------------------------------------
    def dask(self) -> Any:
        """The run's Dask client, started on first use (local cluster or --dask address)."""
        return self._dask_client()

    def ray(self) -> None:
        """Make sure Ray is initialised for this run (local 127.0.0.1 instance or --ray address)."""
        self._ray_init()

    # -- outputs -----------------------------------------------------------
    def cover_bytes(self) -> int:
        """Most bytes of one written block that holds whole chunks of a lazy volume: an eighth of a Dask
        worker's memory limit (a block, its parts and their casts are held at once, two blocks per worker),
        :data:`COVER_BYTES` without a limit."""
        from pipeline.engine.dask_cluster import worker_memory

        mem = worker_memory(self.dask())
        return COVER_BYTES if mem is None else int(mem) // 8

    def write_volume(
        self,
        vol: xr.DataArray,
        filename: str,
        *,
        params: dict[str, Any] | None = None,
        chunks: Sequence[int] | None = None,
        dtype: Any = None,
        progress: str | None = None,
        block_shape: Sequence[int] | None = None,
        codec: str | None = None,
    ) -> Path:
        """Write a lazy volume into the run folder, resumably.

        Blocks are chunk-aligned and each has a done marker under
        :attr:`work_dir`; a store whose markers belong to another stage hash is
        started afresh. The store's attrs get provenance (stage, params, job
        hash, versions). Runs on the run's Dask client. ``codec`` (a name of
        :data:`pipeline.io.codecs.CODEC_NAMES` other than ``"auto"``) sets the
        store's compression; default the variable's usual one.

        Without ``block_shape`` the blocks hold the lazy volume's own chunks
        (whole-slice slabs of a correction or a baseline filter; see
        :func:`pipeline.engine.blocks.store_blocks`, ``cover_data_chunks``) up
        to :meth:`cover_bytes`, so that each is computed once and not once per
        store chunk of its slices.
        """
        from pipeline.engine.blocks import store_blocks

        self.dask()
        path = self.path(filename)
        target, markers = self._open_target(vol, filename, "blocks", params=params, chunks=chunks, dtype=dtype, codec=codec)
        data = vol.data if isinstance(vol.data, da.Array) else da.from_array(np.asarray(vol.data), chunks=target.chunks)
        if dtype is not None:
            data = data.astype(dtype)
        computed = store_blocks(
            data, target, markers=markers, progress=progress or f"{self.name}: {filename}", block_shape=block_shape,
            cover_data_chunks=block_shape is None, max_block_bytes=self.cover_bytes(),
        )
        self.blocks_computed[filename] = computed
        return path

    def write_volumes(
        self,
        template: xr.DataArray,
        data: da.Array,
        variables: dict[str, Any],
        filename: str,
        *,
        params: dict[str, Any] | None = None,
        chunks: Sequence[int] | None = None,
        progress: str | None = None,
        elsewhere: dict[str, str] | None = None,
        cover_data_chunks: bool = False,
        max_block_bytes: int | None = None,
    ) -> Path:
        """Write several volumes computed together, resumably; return the main store.

        ``data`` has a leading axis of one channel per entry of ``variables``
        (name -> on-disk dtype, in channel order). They go into ``filename``
        (its first variable is the store's primary one, the one
        :func:`pipeline.io.volume.open_volume` opens by default), except those
        that ``elsewhere`` sends to another store of the run folder
        (variable -> filename). ``template`` gives coordinates and attrs. Each
        block computes all channels once and writes each into its variable;
        one set of done markers covers them all. ``cover_data_chunks``: write
        blocks that hold ``data``'s own chunks, up to ``max_block_bytes`` (see
        :func:`pipeline.engine.blocks.store_blocks`); without ``chunks`` the
        stores then get chunks that ``data``'s blocks are whole multiples of
        (:func:`pipeline.engine.blocks.nesting_chunks` of the job's chunks), so
        that each block is computed once.
        """
        import zarr

        from pipeline.engine.blocks import nesting_chunks, store_blocks
        from pipeline.io.volume import create_group_store, provenance

        self.dask()
        if cover_data_chunks and chunks is None:
            chunks = nesting_chunks(data.chunks[1:], tuple(min(int(c), int(s)) for c, s in zip(self.chunks, data.shape[1:])))
        elsewhere = dict(elsewhere or {})
        path = self.path(filename)
        reuse = (self.work_dir / f"{filename}.blocks-{self.stage_hash[:12]}").exists() and path.exists()
        main = {n: d for n, d in variables.items() if n not in elsewhere}
        targets, markers = self._open_target(template, filename, "blocks", params=params, chunks=chunks, dtype=None,
                                             variables=main)
        for other in dict.fromkeys(elsewhere.values()):
            names = {n: variables[n] for n, f in elsewhere.items() if f == other}
            opath = self.path(other)
            if reuse and opath.exists():
                targets.update({n: zarr.open_array(opath / n, mode="r+") for n in names})
            else:
                attrs = {**template.attrs, "provenance": provenance(self.name, params, job_hash=self.job_hash)}
                targets.update(create_group_store(opath, template.assign_attrs(attrs), names, chunks=chunks or self.chunks))
        computed = store_blocks(data, [targets[n] for n in variables], markers=markers,
                                progress=progress or f"{self.name}: {filename}", cover_data_chunks=cover_data_chunks,
                                max_block_bytes=max_block_bytes)
        self.blocks_computed[filename] = computed
        return path

    def write_volume_two_pass(
        self,
        vol: xr.DataArray,
        filename: str,
        *,
        summary: Callable[[Any], np.ndarray],
        finish: Callable[[np.ndarray, Callable[[Callable[[Any], Any]], list[Any]]], dict[str, Any]],
        apply: Callable[[Any, dict[str, Any]], Any],
        params: dict[str, Any] | None = None,
        chunks: Sequence[int] | None = None,
        dtype: Any = None,
        progress: str | None = None,
    ) -> Path:
        """Write a volume whose values need a statistic of the whole volume, computing ``vol`` once, resumably.

        Pass 1 writes ``vol``'s blocks as they are (as ``dtype``) while
        summing ``summary(block)`` over all blocks; ``finish(total, collect)``
        gives a small JSON state (``collect`` may take another look at the
        stored blocks), merged into the store's attrs; pass 2 rewrites
        every block in place as ``apply(block, state)``. Out-of-core: no
        block is kept. See :func:`pipeline.engine.two_pass.store_two_pass`
        for the markers that make a killed run finish without applying a
        block twice.

        Parameters
        ----------
        vol : xarray.DataArray
            The volume before ``apply`` (lazy); its attrs go to the store.
        filename : str
            Store name inside the run folder.
        summary, finish, apply : callable
            As in :func:`pipeline.engine.two_pass.store_two_pass`.
        params, chunks, dtype, progress
            As in :meth:`write_volume`; ``dtype`` is the store's, the same
            for both passes.
        """
        from pipeline.engine.two_pass import store_two_pass
        from pipeline.io.volume import consolidate_store

        self.dask()
        path = self.path(filename)
        target, markers = self._open_target(vol, filename, "twopass", params=params, chunks=chunks, dtype=dtype)
        data = vol.data if isinstance(vol.data, da.Array) else da.from_array(np.asarray(vol.data), chunks=target.chunks)
        result = store_two_pass(
            data, target, markers=markers, summary=summary, finish=finish, apply=apply,
            progress=progress or f"{self.name}: {filename}",
        )
        target.attrs.update(result.state)
        consolidate_store(path)
        self.blocks_computed[filename] = result.computed + result.recomputed
        return path

    def _open_target(
        self,
        vol: xr.DataArray,
        filename: str,
        kind: str,
        *,
        params: dict[str, Any] | None,
        chunks: Sequence[int] | None,
        dtype: Any,
        variables: dict[str, Any] | None = None,
        codec: str | None = None,
    ) -> tuple[Any, Path]:
        """The store to write ``vol`` into and its marker folder, reused when they belong to this stage hash and ``kind``.

        With ``variables`` (name -> dtype) the store holds those volumes and a
        dict of their zarr arrays is returned.

        Otherwise (another hash, another kind of write, or no store) every
        old marker folder of ``filename`` is removed and the store created
        afresh with provenance in its attrs.
        """
        import shutil

        import zarr

        from pipeline.io.volume import create_group_store, create_volume_store, provenance

        path = self.path(filename)
        markers = self.work_dir / f"{filename}.{kind}-{self.stage_hash[:12]}"
        if markers.exists() and path.exists():
            if variables:
                return {n: zarr.open_array(path / n, mode="r+") for n in variables}, markers
            return zarr.open_array(path / str(vol.name or "image"), mode="r+"), markers
        for pattern in (f"{filename}.blocks-*", f"{filename}.twopass-*"):
            for old in self.work_dir.glob(pattern):
                shutil.rmtree(old)
        attrs = dict(vol.attrs)
        attrs["provenance"] = provenance(self.name, params, job_hash=self.job_hash)
        template = vol.copy(data=vol.data) if isinstance(vol.data, da.Array) else vol
        template = template.assign_attrs(attrs)
        if variables:
            target = create_group_store(path, template, variables, chunks=chunks or self.chunks)
        else:
            target = create_volume_store(path, template, chunks=chunks or self.chunks, dtype=dtype, codec=codec)
        markers.mkdir(parents=True)
        return target, markers

    def resolve(self, path: str) -> Path:
        """An input path from the job file, relative to the job file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.job_dir / p)

    def resolve_store(self, ref: str) -> Path:
        """The output of an earlier stage named ``ref``, else an existing path relative to the job file.

        Raises
        ------
        UserError
            When ``ref`` is neither an earlier stage of this run nor an existing path.
        """
        if ref in self.outputs:
            return self.outputs[ref]
        path = self.resolve(ref)
        if not path.exists():
            raise UserError(f"stage {self.name!r}: {ref!r} is neither an earlier stage nor an existing path")
        return path
