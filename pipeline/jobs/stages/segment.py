"""The ``segment`` stage: pore probability and mask of a grey volume (or of a dataset's samples) by a 2D / 2.5D model."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.jobs.base import StageConfig, StageOutput, Strict
from pipeline.jobs.context import StageContext

__all__ = ["Config", "Inference", "run", "options", "write_dataset_segmentation", "elsewhere"]

log = logging.getLogger("porelab.segment")


class Inference(Strict):
    """Settings of tiled inference shared by ``segment`` and ``refine``."""

    model: str = Field("default", description="An earlier train stage's name, a shipped model's name, 'default', or a model folder.")
    tta: bool = Field(False, description="Average over test-time flips; also write the spread as 'uncertainty'.")
    tile: list[int] | None = Field(None, description="Tile (y, x) or (z, y, x) voxels; default the model's.")
    overlap: float | None = Field(None, ge=0.0, lt=1.0, description="Tile overlap; default the model's.")
    batch_size: int | None = Field(None, ge=1, le=1024, description="Tiles per forward pass; default the model's.")
    threshold: float | None = Field(None, gt=0.0, lt=1.0, description="Probability from which a voxel is pore; default the model's.")
    preprocess: bool = Field(False, description="Denoise and normalise a raw (integer) volume as the model's training data was.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the network runs (auto: cuda with backend cupy).")
    runtime: Literal["auto", "torch", "torch-bf16", "onnx"] = Field(
        "auto", description="What runs the network: torch (fp32), torch-bf16 (bf16 autocast) or ONNX Runtime (CPUs; exported "
        "once from the weights). auto: torch-bf16 on CPUs with AMX and on CUDA with bf16, else ONNX Runtime on CPUs where installed, else torch.")
    resample: bool = Field(False, description="Segment at the voxel size the model was trained at (linear resampling there and back).")
    probability_store: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                                          description="Write the probability (and uncertainty) into this separate store "
                                          "of the run folder (e.g. 'probability' for probability.zarr) instead of beside the mask.")
    splits: list[str] | None = Field(None, description="A dataset input: the splits whose samples are segmented (default all).")


class Config(StageConfig, Inference):
    """Segment the previous stage's grey volume (or a synthetic dataset's samples) with a 2D / 2.5D model."""

    stage: Literal["segment"] = "segment"


def elsewhere(cfg: Inference, variables: dict[str, Any]) -> dict[str, str]:
    """Variables that go to the separate ``probability_store``, if the stage names one."""
    if cfg.probability_store is None:
        return {}
    return {n: f"{cfg.probability_store}.zarr" for n in variables if n != "mask"}


def options(ctx: StageContext, cfg: Inference, *, task: str) -> Any:
    """:class:`pipeline.segment.volume.SegmentOptions` of a stage, with the model resolved and threads sized to the workers."""
    from pipeline.engine.dask_cluster import threads_per_task, worker_memory
    from pipeline.jobs.stages.training import model_ref
    from pipeline.segment.infer import block_budget
    from pipeline.segment.predictor import resolve_runtime
    from pipeline.segment.volume import SegmentOptions

    client = ctx.dask()
    device = cfg.device if cfg.device != "auto" else ("cuda" if ctx.backend == "cupy" else "cpu")
    mem = worker_memory(client)
    runtime = resolve_runtime(cfg.runtime, device, memory_limit=mem)
    budget = block_budget(mem, runtime)
    return SegmentOptions(model=model_ref(ctx, cfg.model, task=task), tta=cfg.tta, tile=cfg.tile, overlap=cfg.overlap,
                          batch_size=cfg.batch_size, threshold=cfg.threshold, preprocess=cfg.preprocess, device=device,
                          threads=threads_per_task(client), budget_bytes=budget, runtime=runtime,
                          resample=cfg.resample)


def write_dataset_segmentation(ctx: StageContext, cfg: Inference, opts: Any, dataset: Path, *, task: str,
                               probability: Path | None = None) -> StageOutput:
    """Segment (or refine) the chosen samples of a dataset into ``<name>.zarr``, one resumable block per sample."""
    from pipeline.engine.blocks import store_blocks
    from pipeline.errors import UserError
    from pipeline.segment.dataset import create_dataset_output, segment_dataset_lazy, select_rows
    from pipeline.segment.volume import load_for

    folder, card = load_for(opts, task)
    prob_rows = None
    if probability is not None:
        import zarr

        have = [int(v) for v in zarr.open_array(probability / "sample", mode="r")[:]]
        wanted = select_rows(dataset, cfg.splits)
        rows = [r for r in wanted if r in set(have)]
        if not rows:
            raise UserError(f"{probability}: has no probability for the samples asked for; segment them first")
        prob_rows = [have.index(r) for r in rows]
    else:
        rows = select_rows(dataset, cfg.splits)
    variables: dict[str, Any] = {"mask": "uint8", "probability": "float16"}
    if opts.tta:
        variables["uncertainty"] = "float16"
    out = ctx.path(f"{ctx.name}.zarr")
    attrs = {"model": {"name": card.name, "folder": str(folder), "weights_sha256": card.weights_sha256, "task": task},
             "tta": opts.tta, "stage_hash": ctx.stage_hash}
    markers = ctx.work_dir / f"{ctx.name}.zarr.samples-{ctx.stage_hash[:12]}"
    if markers.exists() and out.exists():
        import zarr

        targets = {n: zarr.open_array(out / n, mode="r+") for n in variables}
    else:
        import shutil

        if markers.exists():
            shutil.rmtree(markers)
        targets = create_dataset_output(out, dataset, rows, variables, attrs=attrs)
    data = segment_dataset_lazy(dataset, folder, card, rows=rows, probability=probability, prob_rows=prob_rows,
                                tta=opts.tta, threshold=opts.threshold, threads=opts.threads, device=opts.device,
                                runtime=opts.runtime)
    first = targets["mask"]
    computed = store_blocks(data, [targets[n] for n in variables], markers=markers, progress=f"{ctx.name}: samples",
                            block_shape=(1, *first.shape[1:]))
    return StageOutput(path=out, metrics={"samples": len(rows), "blocks_computed": computed,
                                          "model": card.name, "weights_sha256": card.weights_sha256})


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Write ``<name>.zarr``: ``mask`` (uint8, 1 = pore; the store's primary variable), ``probability`` (float16),
    and with ``tta`` ``uncertainty``; from a dataset input, the same per sample."""
    from pipeline.io.volume import as_volume, open_volume, voxel_size_of
    from pipeline.segment.dataset import is_dataset_store
    from pipeline.segment.volume import check_voxel_size, segment_volume

    src = ctx.require_input("a preprocessed grey volume or a synthetic dataset")
    opts = options(ctx, cfg, task="segment")
    if is_dataset_store(src):
        return write_dataset_segmentation(ctx, cfg, opts, Path(src), task="segment")
    vol = open_volume(src)
    seg = segment_volume(vol, opts, where=str(src))
    warn = check_voxel_size(seg.card, vol.attrs.get("voxel_size_nm")) if not cfg.resample else None  # type: ignore[arg-type]
    if warn:
        log.warning("stage %s: %s", ctx.name, warn)
        print(f"[{ctx.name}] warning: {warn}", file=sys.stderr)
    template = as_volume(vol.data, voxel_size_of(vol), name="mask",
                         attrs={**{k: v for k, v in vol.attrs.items() if k not in ("provenance", "meaning")}, **seg.attrs, "image_store": str(src),
                                **({"probability_store": str(ctx.path(f"{cfg.probability_store}.zarr"))} if cfg.probability_store else {})})
    path = ctx.write_volumes(template, seg.data, seg.variables, f"{ctx.name}.zarr", params=cfg.model_dump(mode="json"),
                             elsewhere=elsewhere(cfg, seg.variables), cover_data_chunks=True,
                             max_block_bytes=opts.budget_bytes)
    written = open_volume(path)
    porosity = float(written.data.mean().compute())
    return StageOutput(path=path, metrics={"porosity": porosity, "model": seg.attrs["model"]["name"],
                                          "blocks_computed": ctx.blocks_computed.get(f"{ctx.name}.zarr", 0)})
