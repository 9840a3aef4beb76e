"""The stage kinds a job can name, each an adapter module in ``pipeline.jobs.stages``.

An adapter module defines ``Config`` (a :class:`~pipeline.jobs.base.StageConfig`
with ``stage: Literal["<kind>"]``) and ``run(ctx, cfg) -> StageOutput``, and
may define ``engines(cfg) -> set[str]`` (which of "dask", "ray" it uses; Dask
when it does not say, so that a batch job starts the right clusters). It
wires the plain array functions of a stage package to the engine; the stage
package itself knows nothing of jobs or clusters.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["STAGE_MODULES", "stage_module", "stage_engines"]

#: kind -> adapter module, in the order stages usually run.
STAGE_MODULES: dict[str, str] = {
    "ingest": "pipeline.jobs.stages.ingest",
    "synth": "pipeline.jobs.stages.synth",
    "render": "pipeline.jobs.stages.render",
    "correct": "pipeline.jobs.stages.correct",
    "preprocess": "pipeline.jobs.stages.preprocess",
    "train2d": "pipeline.jobs.stages.train2d",
    "segment": "pipeline.jobs.stages.segment",
    "train3d": "pipeline.jobs.stages.train3d",
    "refine": "pipeline.jobs.stages.refine",
    "baseline": "pipeline.jobs.stages.baseline",
    "reconstruct": "pipeline.jobs.stages.reconstruct",
    "analyze": "pipeline.jobs.stages.analyze",
    "evaluate": "pipeline.jobs.stages.evaluate",
    "report": "pipeline.jobs.stages.report",
}


def stage_module(kind: str) -> ModuleType:
    """Import the adapter module of a stage kind."""
    return importlib.import_module(STAGE_MODULES[kind])


def stage_engines(cfg: Any) -> set[str]:
    """The engines ("dask", "ray") a configured stage uses; Dask when its adapter does not say."""
    module = stage_module(cfg.stage)
    engines = getattr(module, "engines", None)
    return set(engines(cfg)) if engines is not None else {"dask"}
