"""The ``synth`` stage: a synthetic dataset (structures, rendered slices) as ``<name>.zarr``.

Samples are made as Ray tasks (one per sample, retried when a worker dies)
and written under their sample id; the store appears only when every sample
is in. A killed run, run again, resumes from the samples already written.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.jobs.base import StageConfig, StageOutput, Strict
from pipeline.jobs.context import StageContext
from pipeline.synth.params import DEFAULT_RENDER_RANGES
from pipeline.synth.render_builtin import RENDER_DEFAULTS, check_render_params

__all__ = ["Config", "StructureSpec", "RenderSpec", "engines", "run", "dataset_metrics"]

Range = float | tuple[float, float]


def _check_range(name: str, value: Range, lo: float, hi: float, *, open_interval: bool = False) -> Range:
    values = (value,) if isinstance(value, (int, float)) else tuple(value)
    for v in values:
        bad = (v <= lo or v >= hi) if open_interval else (v < lo or v > hi)
        if bad:
            raise ValueError(f"{name} {v} is outside {'(' if open_interval else '['}{lo}, {hi}{')' if open_interval else ']'}")
    if len(values) == 2 and values[0] > values[1]:
        raise ValueError(f"{name} range [{values[0]}, {values[1]}] has low above high")
    return value


class StructureSpec(Strict):
    """Which structures to generate; every number may be a [low, high] range drawn per sample."""

    families: dict[Literal["solid_spheres", "pore_spheres", "blobs", "agglomerates"], float] = Field(
        default_factory=lambda: {"solid_spheres": 1.0},
        description="Structure family -> weight of its share: solid_spheres (PuMA random spheres), pore_spheres, "
        "blobs (thresholded gaussian field), agglomerates (catalyst-like particle chains).",
    )
    generator: Literal["porelab", "pumapy"] = Field(
        default="porelab",
        description="Generator of solid_spheres: porelab (log-normal diameters) or pumapy (NASA PuMA's "
        "generate_random_spheres, one diameter = median_nm; needs pumapy from conda-forge).",
    )
    porosity: Range = Field(default=0.5, description="Target porosity (pore fraction), or a [low, high] range.")
    median_nm: Range = Field(default=100.0, description="Median sphere / particle diameter in nm (log-normal).")
    sigma: Range = Field(default=0.3, description="Sigma of ln(diameter) of the log-normal.")
    correlation_nm: Range = Field(default=50.0, description="Correlation length of the blobs family in nm.")
    particles_per_aggregate: Range = Field(default=12.0, description="Mean primary particles per aggregate (agglomerates).")

    @field_validator("families")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("give at least one family a weight above 0 (weights must be >= 0)")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> StructureSpec:
        _check_range("porosity", self.porosity, 0.0, 1.0, open_interval=True)
        _check_range("median_nm", self.median_nm, 0.0, 1e7, open_interval=True)
        _check_range("sigma", self.sigma, 0.0, 3.0)
        _check_range("correlation_nm", self.correlation_nm, 0.0, 1e7, open_interval=True)
        _check_range("particles_per_aggregate", self.particles_per_aggregate, 1.0, 1e4)
        return self

    def ranges(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"families", "generator"})


class RenderSpec(Strict):
    """How slices are rendered; ``params`` override the default domain-randomisation ranges."""

    backend: Literal["builtin", "blender"] = Field(
        default="builtin", description="builtin (fast, array based) or blender (Cycles; needs porelab[blender])."
    )
    params: dict[str, Range] = Field(
        default_factory=dict,
        description="Renderer parameters, each a number or a [low, high] range drawn per sample; unset ones use the "
        "default ranges (see pipeline.synth.params.DEFAULT_RENDER_RANGES). Names: " + ", ".join(sorted(RENDER_DEFAULTS)),
    )
    samples: int = Field(default=16, ge=1, le=4096, description="Cycles samples per pixel (blender backend).")
    threads: int = Field(default=1, ge=1, le=256, description="Cycles CPU threads per Ray task (blender backend).")

    @field_validator("params")
    @classmethod
    def _known(cls, v: dict[str, Range]) -> dict[str, Range]:
        for name, value in v.items():
            if name not in RENDER_DEFAULTS:
                raise ValueError(f"{name!r} is not a renderer parameter; expected one of {', '.join(sorted(RENDER_DEFAULTS))}")
            values = (value,) if isinstance(value, (int, float)) else tuple(value)
            check_render_params({name: x for x in values})
            if len(values) == 2 and values[0] > values[1]:
                raise ValueError(f"{name} range [{values[0]}, {values[1]}] has low above high")
        return v

    def ranges(self) -> dict[str, Any]:
        return {**DEFAULT_RENDER_RANGES, **self.params}

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"backend": self.backend}
        if self.backend == "blender":
            opts.update(samples=self.samples, threads=self.threads)
        return opts


class Config(StageConfig):
    """Generate a synthetic dataset: structures with known labels and their FIB-SEM renders."""

    stage: Literal["synth"] = "synth"
    count: int = Field(default=8, ge=1, le=10_000_000, description="Number of samples.")
    shape: tuple[int, int, int] = Field(default=(150, 150, 150), description="Voxels Z, Y, X per sample.")
    voxel_size_nm: tuple[float, float, float] = Field(default=(10.0, 10.0, 10.0), description="Voxel size Z, Y, X in nm.")
    structure: StructureSpec = Field(default_factory=StructureSpec)
    render: RenderSpec | None = Field(default_factory=RenderSpec, description="Rendering; null for structures only.")
    splits: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
        description="Split fractions (seeded permutation): train, val, test, and any other split a job names "
        "(e.g. refine: samples the 3D refinement trains on, unseen by the 2D model).",
    )
    executor: Literal["ray", "local"] = Field(default="ray", description="ray: one Ray task per sample; local: in the runner's process.")
    max_retries: int = Field(default=3, ge=0, le=100, description="Retries of a sample whose worker died.")
    figures: bool = Field(default=True, description="Write the size-distribution plot and example panels.")

    @field_validator("splits")
    @classmethod
    def _split_names(cls, v: dict[str, float]) -> dict[str, float]:
        import re

        for name, frac in v.items():
            if not re.match(r"^[a-z][a-z0-9_]{0,31}$", name):
                raise ValueError(f"split name {name!r} must be lower-case letters, digits and _")
            if frac < 0:
                raise ValueError(f"split {name!r} has fraction {frac}; expected >= 0")
        if sum(v.values()) <= 0:
            raise ValueError("give at least one split a fraction above 0")
        return v

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 4:
            raise ValueError("every size must be at least 4 voxels")
        return v

    @field_validator("voxel_size_nm")
    @classmethod
    def _voxel(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) <= 0:
            raise ValueError("every voxel size must be greater than 0 nm")
        return v


def dataset_metrics(card: dict[str, Any]) -> dict[str, Any]:
    """Manifest metrics from a dataset card."""
    ach = card.get("achieved", {})
    keep = ("samples", "porosity_mean", "porosity_min", "porosity_max", "porosity_abs_error_max", "families", "splits")
    out = {k: ach[k] for k in keep if k in ach}
    sd = ach.get("size_distribution", {})
    if sd.get("sphere_phase"):
        out["sphere_fit"] = sd["sphere_phase"]
    return out


def engines(cfg: Config) -> set[str]:
    """Ray when the samples are Ray tasks; nothing otherwise."""
    return {"ray"} if cfg.executor == "ray" else set()


def run(ctx: StageContext, cfg: Config) -> StageOutput:
    """Plan every sample from the stage seed, make them (Ray tasks), assemble ``<name>.zarr``."""
    import time

    from pipeline.synth.dataset import figures_dir
    from pipeline.synth.factory import build_dataset, plan_samples

    plans = plan_samples(
        cfg.count,
        seed=ctx.seed,
        shape=cfg.shape,
        voxel_size_nm=cfg.voxel_size_nm,
        families=cfg.structure.families,
        structure_ranges=cfg.structure.ranges(),
        render=None if cfg.render is None else cfg.render.options(),
        render_ranges=None if cfg.render is None else cfg.render.ranges(),
        generator=cfg.structure.generator,
    )
    if cfg.structure.generator == "pumapy":
        from pipeline.errors import UserError
        from pipeline.synth.structures import pumapy_available

        if not pumapy_available():
            raise UserError(f"stage {ctx.name!r}: generator pumapy needs NASA's pumapy (conda install -c conda-forge pumapy)")
    if cfg.executor == "ray":
        ctx.ray()
    out = ctx.path(f"{ctx.name}.zarr")
    card = {
        "job": {"stage": ctx.name, "job_hash": ctx.job_hash, "config": cfg.model_dump(mode="json")},
        "structure_ranges": cfg.structure.ranges(),
        "families": cfg.structure.families,
        "render_ranges": None if cfg.render is None else cfg.render.ranges(),
        "render_backend": None if cfg.render is None else cfg.render.backend,
    }
    t0 = time.perf_counter()
    card = build_dataset(
        out, plans, seed=ctx.seed, card=card, executor=cfg.executor, max_retries=cfg.max_retries,
        splits=cfg.splits, overwrite=True, figures=cfg.figures, work_dir=ctx.work_dir, progress=f"{ctx.name}: samples",
    )
    seconds = time.perf_counter() - t0
    metrics = dataset_metrics(card)
    metrics["samples_per_minute"] = round(60.0 * cfg.count / max(seconds, 1e-9), 3)
    files = {name: figures_dir(out) / f for name, f in (("card", "card.json"), ("psd", "psd.png"), ("panels", "panels.png"))
             if (figures_dir(out) / f).exists()}
    return StageOutput(path=out, metrics=metrics, files=files)
