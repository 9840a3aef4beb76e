"""The ``reconstruct`` stage: meshes of a label volume by the paper's methods, and their metrics.

Meshes go to ``<name>/<method>.<format>`` (files[method]), the table to
``<name>.json``; the stage's main output is its input labels, passed on, so
that ``analyze`` can follow it. A volume above ``max_voxels`` is meshed on a
centred sub-volume (``roi`` in the table and the metrics, meshes in the whole
volume's frame): a mesh is held in memory whole.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from pipeline.errors import UserError
from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext
from pipeline.reconstruct.build import METHODS

__all__ = ["Config", "run", "MAX_MESH_VOXELS"]

#: Largest volume the stage meshes whole by default. A mesh is held in memory whole: voxel_direct on
#: 316 Mvoxel of small pores (radius about 5 voxels) went over 22 GB and was killed.
MAX_MESH_VOXELS = 32_000_000

Method = Literal["mc_basic", "mc_smoothed", "mc_hole_filled", "voxel_direct", "convex_hull", "dual_contouring", "multiscale"]


class Config(StageConfig):
    """Mesh the pores (or the solid) of the previous stage's labels."""

    stage: Literal["reconstruct"] = "reconstruct"
    methods: list[Method] = Field(default_factory=lambda: list(METHODS), description="Methods to run (the paper's seven by default).")
    phase: Literal[0, 1] = Field(1, description="Label meshed: 1 pores, 0 solid.")
    format: Literal["ply", "stl"] = Field("ply", description="Mesh file format.")
    block_shape: tuple[int, int, int] = Field((128, 128, 256), description="Block (z, y, x voxels) of the chunked meshing.")
    truth: str | None = Field(None, description="Ground-truth labels (an earlier stage's name or a .zarr path): adds mesh metrics.")
    truth_method: Method = Field("mc_basic", description="Method that meshes the ground truth.")
    n_points: int = Field(20000, ge=100, le=10_000_000, description="Points drawn per surface for Chamfer / Hausdorff.")
    max_points: int = Field(5000, ge=10, le=10_000_000, description="Points kept by the convex hull (the paper's 5,000).")
    max_voxels: int = Field(
        MAX_MESH_VOXELS, ge=0,
        description="A volume larger than this is meshed on a centred sub-volume of at most this many voxels (recorded as roi): "
        "a whole mesh lives in memory (316 Mvoxel of small pores went over 22 GB); 0: always the whole volume.")
    roi: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = Field(
        None, description="Sub-volume meshed, [[z0, z1], [y0, y1], [x0, x1]] voxels (overrides max_voxels).")

    @field_validator("methods")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one method")
        return list(dict.fromkeys(v))


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Write ``<name>/<method>.<format>`` per method; metrics per method (and against the truth)."""
    import time

    from pipeline.engine.blocks import centred_box
    from pipeline.io.volume import open_volume, voxel_size_of
    from pipeline.jobs.stages.analyze import write_json
    from pipeline.reconstruct import enclosed_porosity, mesh_metrics, mesh_volume, write_mesh

    ctx.dask()
    vol = open_volume(ctx.require_input("a label volume"))
    vs = voxel_size_of(vol)
    if cfg.roi is not None:
        roi: tuple[tuple[int, int], ...] | None = tuple((int(a), int(b)) for a, b in cfg.roi)
        if any(not 0 <= a < b <= n for (a, b), n in zip(roi, vol.shape)):
            raise UserError(f"stage {ctx.name!r}: roi {[list(r) for r in roi]} is not inside the volume {list(vol.shape)}; "
                            "expected [[z0, z1], [y0, y1], [x0, x1]] with 0 <= start < stop <= size")
    else:
        roi = centred_box(tuple(vol.shape), cfg.max_voxels)
    whole_shape = tuple(vol.shape)
    if roi is not None:
        box = {d: slice(a, b) for d, (a, b) in zip(vol.dims, roi)}
        vol = vol.isel(box)
        print(f"[{ctx.name}] meshing the centred sub-volume {[list(r) for r in roi]} of {list(whole_shape)} "
              f"({vol.size / 1e6:.3g} of {math.prod(whole_shape) / 1e6:.3g} Mvoxel; set max_voxels or roi for another)")
    shift = np.array([roi[2][0], roi[1][0], roi[0][0]], float) * np.array(vs[::-1]) if roi is not None else None
    truth_mesh = truth_por = None
    if cfg.truth:
        from pipeline.analyze.truth import align_truth

        tv = open_volume(ctx.resolve_store(cfg.truth))
        try:
            tv = align_truth(tv, vol)  # by coordinates when the correction changed the geometry
        except ValueError as exc:
            raise UserError(f"stage {ctx.name!r}: truth {cfg.truth!r} does not fit the labels: {exc}") from None
        truth_mesh = mesh_volume(tv, cfg.truth_method, voxel_size_nm=vs, phase=cfg.phase, block_shape=cfg.block_shape, seed=ctx.seed)
        truth_por = float((tv.data == 1).mean().compute())
    out_dir = ctx.path(ctx.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_method: dict[str, dict] = {}
    files: dict[str, Path] = {}
    for m in cfg.methods:
        t0 = time.perf_counter()
        mesh = mesh_volume(vol, m, voxel_size_nm=vs, phase=cfg.phase, block_shape=cfg.block_shape, seed=ctx.seed,
                           max_points=cfg.max_points, progress=f"{ctx.name}: {m}")
        sec = time.perf_counter() - t0
        if shift is not None:
            mesh.apply_translation(shift)  # in the whole volume's frame (x, y, z nm)
        files[m] = write_mesh(mesh, out_dir / f"{m}.{cfg.format}", overwrite=True)
        row = {
            "faces": int(len(mesh.faces)),
            "vertices": int(len(mesh.vertices)),
            "area_nm2": float(mesh.area),
            "volume_nm3": float(abs(mesh.volume)) if len(mesh.faces) else 0.0,
            "porosity": enclosed_porosity(mesh, vol.shape, vs, phase=cfg.phase) if len(mesh.faces) else None,
            "watertight": bool(mesh.is_watertight),
            "seconds": round(sec, 3),
            "mvox_per_s": float(vol.size / 1e6 / sec) if sec > 0 else None,
        }
        if truth_mesh is not None and len(mesh.faces) and len(truth_mesh.faces):
            row.update(mesh_metrics(mesh, truth_mesh, n_points=cfg.n_points, seed=ctx.seed))
            row["true_porosity"] = truth_por
            row["porosity_abs_error"] = abs(row["porosity"] - truth_por) if row["porosity"] is not None else None
        per_method[m] = row
    where = {"roi": [list(r) for r in roi] if roi is not None else None, "volume_shape": list(whole_shape)}
    table = write_json(ctx.path(f"{ctx.name}.json"), {"methods": per_method, "voxel_size_nm": list(vs),
                                                      "shape": list(vol.shape), "phase": cfg.phase, "truth": cfg.truth, **where})
    files["table"] = table
    return StageOutput(path=ctx.input, metrics={"methods": per_method, **where}, files=files)
