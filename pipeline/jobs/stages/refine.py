"""The ``refine`` stage: a 3D model cleans the stacked 2D pore probabilities (with the grey image) into the final mask."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext
from pipeline.jobs.stages.segment import Inference, elsewhere, options, write_dataset_segmentation

__all__ = ["Config", "run"]


class Config(StageConfig, Inference):
    """Refine a segment stage's probability in 3D; ``image`` is the grey volume it segmented (default: its input)."""

    stage: Literal["refine"] = "refine"
    image: str | None = Field(None, description="The preprocessed grey volume: an earlier stage's name or a .zarr path "
                              "(default: the volume the segment stage read).")


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Write ``<name>.zarr`` (``mask``, ``probability``, as ``segment``) from the input's probability and the image."""
    from pipeline.errors import UserError
    from pipeline.io.volume import as_volume, open_volume, voxel_size_of
    from pipeline.segment.dataset import dataset_of, is_dataset_store
    from pipeline.segment.volume import refine_volume

    src = ctx.require_input("a segment stage's output")
    opts = options(ctx, cfg, task="refine")
    if is_dataset_store(src):
        return write_dataset_segmentation(ctx, cfg, opts, dataset_of(src), task="refine", probability=Path(src))
    from pipeline.io.stores import probability_of

    prob = probability_of(src)
    if prob is None:
        raise UserError(f"stage {ctx.name!r}: {src} holds no pore probability; refine reads a segment stage's output")
    if cfg.image is not None:
        image_path = ctx.resolve_store(cfg.image)
    elif prob.attrs.get("image_store"):
        image_path = Path(prob.attrs["image_store"])
    else:
        raise UserError(f"stage {ctx.name!r}: {src} does not say which image it segmented; set image: to the preprocessed volume")
    image = open_volume(image_path)
    # each 3D tile computed once: their sums wait in the stage's work folder until the write is done
    scratch = ctx.work_dir / f"{ctx.name}.tiles-{ctx.stage_hash[:12]}"
    opts = dataclasses.replace(opts, scratch=scratch)
    seg = refine_volume(prob, image, opts, where=str(src), image_where=str(image_path))
    template = as_volume(image.data, voxel_size_of(image), name="mask",
                         attrs={**{k: v for k, v in image.attrs.items() if k not in ("provenance", "meaning")}, **seg.attrs,
                                "image_store": str(image_path), "probability_2d_store": str(src),
                                **({"probability_store": str(ctx.path(f"{cfg.probability_store}.zarr"))} if cfg.probability_store else {})})
    path = ctx.write_volumes(template, seg.data, seg.variables, f"{ctx.name}.zarr", params=cfg.model_dump(mode="json"),
                             elsewhere=elsewhere(cfg, seg.variables), cover_data_chunks=True,
                             max_block_bytes=opts.budget_bytes)
    shutil.rmtree(scratch, ignore_errors=True)
    porosity = float(open_volume(path).data.mean().compute())
    return StageOutput(path=path, metrics={"porosity": porosity, "model": seg.attrs["model"]["name"],
                                          "blocks_computed": ctx.blocks_computed.get(f"{ctx.name}.zarr", 0)})
