"""Jobs that porelab writes for a user: ``porelab analyze`` is one of them under the hood."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["analyze_job"]


def analyze_job(
    stack: str | Path,
    *,
    name: str,
    voxel_size_nm: Sequence[float] | None,
    angle_deg: float = 52.0,
    model: str = "default",
    refine: str | None = "default",
    truth: str | Path | None = None,
    truth_voxel_size_nm: Sequence[float] | None = None,
    methods: Sequence[str] = ("voxel_direct",),
    baseline: bool = True,
    tta: bool = False,
    resample: bool = False,
    backend: str = "numpy",
    dask: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The job of ``porelab analyze``: ingest -> correct -> preprocess -> segment -> refine -> baseline -> measure -> mesh -> report.

    Outputs in the run folder: ``mask.zarr`` (uint8, 1 = pore, the corrected
    geometry), ``probability.zarr``, ``metrics.json`` (with the baseline's
    porosity and sweep spread), ``meshes/<method>.ply``, ``report/``.
    ``angle_deg`` 90 switches the tilt correction off (micro-CT, already
    corrected stacks); ``refine`` None skips the 3D refinement.
    """
    segment = {"stage": "segment", "name": "segment2d" if refine else "mask", "input": "preprocess", "model": model,
               "tta": tta, "resample": resample}
    stages: list[dict[str, Any]] = [
        {"stage": "ingest", "path": str(Path(stack).resolve()),
         **({"voxel_size_nm": [float(v) for v in voxel_size_nm]} if voxel_size_nm else {})},
        # The defaults: on test-like renders (benchmarks/correction.py, 8 stacks) the threshold baseline
        # gains 4 points of pore IoU, the shipped U-Nets stay within 0.4 points of the raw stack; slices
        # move by whole pixels (sub-pixel shifts blur them and cost the U-Nets 1.1-1.5 points), and the older
        # per-slice polynomial illumination cut pore IoU from 0.84 to 0.75.
        {"stage": "correct", "tilt": {"enabled": angle_deg < 90, "angle_deg": min(float(angle_deg), 90.0)}},
        {"stage": "preprocess"},
    ]
    if refine:
        stages += [segment, {"stage": "refine", "name": "mask", "input": "segment2d", "model": refine, "resample": resample,
                             "probability_store": "probability"}]
    else:
        stages.append({**segment, "probability_store": "probability"})
    if truth is not None:
        stages.append({"stage": "ingest", "name": "truth", "path": str(Path(truth).resolve()), "variable": "labels",
                       **({"voxel_size_nm": [float(v) for v in truth_voxel_size_nm]} if truth_voxel_size_nm else {})})
    if baseline:
        stages.append({"stage": "baseline", "input": "preprocess", **({"truth": "truth"} if truth is not None else {})})
    stages.append({"stage": "analyze", "name": "metrics", "input": "mask", **({"truth": "truth"} if truth is not None else {}),
                   **({"baseline": "baseline"} if baseline else {})})
    stages.append({"stage": "reconstruct", "name": "meshes", "input": "mask", "methods": list(methods),
                   **({"truth": "truth"} if truth is not None else {})})
    stages.append({"stage": "report"})
    engine: dict[str, Any] = {"backend": backend}
    if dask:
        engine["dask"] = dask
    return {"name": name, "description": f"porelab analyze {stack}", "seed": 0, "engine": engine, "stages": stages}
