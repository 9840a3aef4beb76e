"""The ``analyze`` stage: porosity, pore sizes, specific surface, connectivity, transport (and truth metrics) of a label volume.

Results go to ``<name>.json`` (files["metrics"]) and a summary to the
manifest; the stage's main output is its input labels, passed on, so that
``reconstruct`` or another ``analyze`` can follow it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.errors import UserError
from pipeline.jobs.base import StageConfig, StageOutput
from pipeline.jobs.context import StageContext

__all__ = ["Config", "run", "summary", "write_json"]


class Config(StageConfig):
    """Measure a label volume (1 = pore) from the previous stage."""

    stage: Literal["analyze"] = "analyze"
    truth: str | None = Field(None, description="Ground-truth labels: an earlier stage's name or a .zarr path (relative to the job file).")
    block_shape: tuple[int, int, int] = Field((64, 64, 64), description="Block (z, y, x voxels) of the porosity map.")
    n_radii: int = Field(64, ge=2, le=1024, description="Most radii of the local-thickness sweep.")
    tortuosity: bool = Field(True, description="Transport per axis (in memory: volumes up to 64 Mvoxel, else on transport_roi); false: recorded under skipped.")
    tortuosity_method: Literal["factor", "geometric", "both"] = Field(
        "factor", description="Tortuosity factor of steady diffusion (with effective diffusivity and MacMullin number), geometric tortuosity (shortest paths, cheaper), or both.")
    solid_tortuosity: bool = Field(False, description="Also the tortuosity factor of the solid phase.")
    transport_roi: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | Literal["centre"] | None = Field(
        "centre", description="Sub-volume [[z0, z1], [y0, y1], [x0, x1]] (voxels, end excluded) for the transport measures; "
        "'centre' (default): the whole volume up to 64 Mvoxel, else its centred 16.8 Mvoxel (and the connectivity there "
        "above 256 Mvoxel); null: skip them above those sizes.")
    write_thickness: bool = Field(False, description="Also write the local-thickness volume (nm) as thickness.zarr.")
    baseline: str | None = Field(None, description="A baseline stage whose porosity and sweep spread go into the metrics beside the segmentation's.")


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (NaN as null)."""
    import math
    import os

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not k.startswith("_")}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean(data), indent=1, default=float))
    os.replace(tmp, path)
    return path


def summary(m: dict[str, Any]) -> dict[str, Any]:
    """The compact numbers of :func:`pipeline.analyze.measure` for manifest.json."""
    out: dict[str, Any] = {"porosity": m["porosity"]["porosity"], "porosity_block_std": m["porosity"]["per_block_std"]}
    psd = m.get("psd", {})
    if "median_nm" in psd:
        out.update(psd_median_nm=psd["median_nm"], psd_mean_nm=psd["mean_nm"])
    fit = psd.get("fit")
    if fit:
        out.update(psd_fit_median_nm=fit["median_nm"], psd_fit_sigma=fit["sigma"], psd_fit_ks=fit["ks"],
                   psd_fit_r2_cdf=fit["r2_cdf"], psd_fit_poor=fit["poor"])
    if "r_max_nm" in m.get("psd", {}):
        out["max_pore_diameter_nm"] = 2 * m["psd"]["r_max_nm"]
    out["specific_surface_per_nm"] = m["surface"]["specific_surface_per_nm"]
    if "connectivity" in m:
        out["connected_fraction"] = m["connectivity"]["connected_fraction"]
    tr = m.get("transport") or {}
    for phase in ("pore", "solid"):
        if phase in tr:
            out[f"{phase}_tortuosity_factor"] = {a: v["tau"] for a, v in tr[phase].items()}
            out[f"{phase}_macmullin"] = {a: v["macmullin"] for a, v in tr[phase].items()}
    if "geometric" in tr:
        out["geometric_tortuosity"] = tr["geometric"]
    if "truth" in m:
        out["truth"] = m["truth"]
    if m.get("skipped"):
        out["skipped"] = m["skipped"]
    if m.get("baseline"):
        out["baseline"] = m["baseline"]
    return out


def _baseline_summary(store: Path) -> dict[str, Any]:
    """The baseline stage's porosity and the spread of its parameter sweep (from its JSON beside the store)."""
    f = store.with_suffix(".json")
    if not f.is_file():
        raise UserError(f"{store}: has no {f.name} beside it; 'baseline' names a baseline stage")
    d = json.loads(f.read_text())
    sweep = d.get("sweep") or {}
    out = {"porosity": d.get("porosity"), "threshold": (d.get("threshold") or {}).get("threshold")}
    out.update({f"sweep_{k}": sweep[k] for k in ("min", "max", "spread", "std") if k in sweep})
    if d.get("truth"):
        out["truth"] = {k: d["truth"][k] for k in ("accuracy", "iou_pore", "iou_solid", "porosity_error") if k in d["truth"]}
    return out


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Measure the input labels into ``<name>.json`` (full results) and the manifest (summary); pass the labels on."""
    from pipeline.analyze import measure
    from pipeline.io.volume import open_volume, voxel_size_of

    ctx.dask()
    vol = open_volume(ctx.require_input("a label volume"))
    if vol.dtype.kind not in "biu":
        raise UserError(f"stage {ctx.name!r}: {ctx.input} holds {vol.dtype} values; expected integer labels (1 = pore), "
                        "such as a segment, refine or baseline stage's output")
    vs = voxel_size_of(vol)
    truth = None
    if cfg.truth:
        from pipeline.analyze.truth import align_truth

        truth = open_volume(ctx.resolve_store(cfg.truth))
        try:
            truth = align_truth(truth, vol)  # by coordinates when the correction changed the geometry
        except ValueError as exc:
            raise UserError(f"stage {ctx.name!r}: truth {cfg.truth!r} does not fit the labels: {exc}") from None
    src = ctx.require_input("a label volume")
    from pipeline.io.stores import probability_of

    probability = probability_of(src)
    try:
        m = measure(vol, vs, truth=truth, block_shape=cfg.block_shape, n_radii=cfg.n_radii, tortuosity=cfg.tortuosity,
                    tortuosity_method=cfg.tortuosity_method, solid_tortuosity=cfg.solid_tortuosity,
                    transport_roi=cfg.transport_roi, thickness_store=ctx.path("thickness.zarr") if cfg.write_thickness else None,
                    probability=probability, progress=ctx.name, scratch_dir=ctx.work_dir)
    except ValueError as exc:
        raise UserError(f"stage {ctx.name!r}: {exc}") from None
    files: dict[str, Path] = {}
    if cfg.write_thickness and m.get("psd", {}).get("thickness_store"):
        files["thickness"] = ctx.path("thickness.zarr")
    m["input"] = str(ctx.input)
    if cfg.baseline:
        m["baseline"] = _baseline_summary(ctx.resolve_store(cfg.baseline))
    path = write_json(ctx.path(f"{ctx.name}.json"), m)
    files["metrics"] = path
    # the labels are passed on, so that reconstruct (or another analyze) can follow
    return StageOutput(path=ctx.input, metrics=summary(m), files=files)
