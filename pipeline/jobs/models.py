"""The job file: pydantic models, loading with one-sentence errors, and hashing.

A job names an ordered list of stages. Each stage reads the output of the
previous one (or of the stage its ``input`` names) and writes its own output
into ``runs/<job name>/<stage name>...``. Unknown keys are errors.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

import pipeline
from pipeline.errors import UserError
from pipeline.jobs.base import StageConfig, Strict
from pipeline.jobs.registry import STAGE_MODULES, stage_module

__all__ = ["DaskTLS", "DaskEngine", "RayEngine", "EngineSpec", "JobSpec", "load_job", "spec_hash", "stage_hash", "job_schema"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class DaskTLS(Strict):
    """Certificates for a Dask cluster whose scheduler and workers use TLS (``tls://`` addresses).

    Paths are relative to the job file. The same files can serve the scheduler and the workers
    (``dask scheduler --tls-ca-file CA --tls-cert CERT --tls-key KEY``); see cluster/README.md.
    """

    ca_file: str = Field(description="CA certificate (PEM) that signed the scheduler's and workers' certificates.")
    cert: str = Field(description="This client's certificate (PEM), signed by that CA.")
    key: str | None = Field(default=None, description="The certificate's private key (PEM), when it is not in cert.")


class DaskEngine(Strict):
    """Where the array stages run."""

    address: str | None = Field(default=None, description="tcp://HOST:PORT of a running scheduler; none starts a local cluster.")
    n_workers: int | None = Field(default=None, ge=1, le=1024, description="Local workers (default: one per core).")
    threads_per_worker: int | None = Field(default=None, ge=1, le=256)
    memory_limit: str | None = Field(
        default=None,
        pattern=r"^\d+(\.\d+)?\s*([KMGT]i?B)?$",
        description="Memory limit per local worker, e.g. '4GiB' (default: 80 % of free memory, shared).",
    )
    tls: DaskTLS | None = Field(
        default=None,
        description="TLS certificates: encrypted, authenticated connections to a tls:// scheduler (a local cluster uses them too).",
    )


class RayEngine(Strict):
    """Where the task-parallel stages (synthesis, rendering, training) run."""

    address: str | None = Field(default=None, description="HOST:PORT of a running Ray cluster; none starts a local one on 127.0.0.1.")
    num_cpus: int | None = Field(default=None, ge=1, le=4096)


class EngineSpec(Strict):
    dask: DaskEngine = Field(default_factory=DaskEngine)
    ray: RayEngine = Field(default_factory=RayEngine)
    backend: Literal["numpy", "cupy", "auto"] = Field(default="numpy", description="Array backend of the workers.")
    chunks: tuple[int, int, int] = Field(default=(32, 256, 256), description="On-disk chunk shape (z, y, x) of volumes.")

    @field_validator("chunks")
    @classmethod
    def _positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(c < 1 for c in v):
            raise ValueError("every chunk size must be at least 1")
        return v


def _named(kind: str) -> type[StageConfig]:
    """An adapter's Config under a schema-friendly name (``ingest`` -> ``IngestStage``)."""
    cfg = stage_module(kind).Config
    title = "".join(part.capitalize() for part in kind.split("_")) + "Stage"
    if cfg.__name__ == title:
        return cfg
    return type(title, (cfg,), {"__module__": cfg.__module__, "__doc__": cfg.__doc__})


def _stage_union() -> Any:
    configs = tuple(_named(kind) for kind in STAGE_MODULES)
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[configs], Field(discriminator="stage")]  # type: ignore[valid-type]


StageSpec = _stage_union()


class JobSpec(Strict):
    """A porelab job: a name, a seed, engines and an ordered list of stages."""

    name: str = Field(pattern=NAME_PATTERN, description="Run folder name under the runs folder (letters, digits, _ . -).")
    description: str = ""
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed of the whole job; each stage derives its own.")
    engine: EngineSpec = Field(default_factory=EngineSpec)
    stages: list[StageSpec] = Field(min_length=1)  # type: ignore[valid-type]

    @field_validator("name")
    @classmethod
    def _no_dots(cls, v: str) -> str:
        if ".." in v:
            raise ValueError("must not contain '..'")
        return v

    @model_validator(mode="after")
    def _check_stage_graph(self) -> JobSpec:
        seen: list[str] = []
        for i, stage in enumerate(self.stages):
            name = stage.name or stage.stage
            if name in seen:
                raise ValueError(f"stage {i + 1} is named {name!r} like an earlier stage; give it a unique name:")
            if stage.input is not None and stage.input not in seen:
                raise ValueError(f"stage {name!r} reads input {stage.input!r}, which is not an earlier stage of this job")
            seen.append(name)
        return self

    def stage_names(self) -> list[str]:
        return [s.name or s.stage for s in self.stages]


def _format_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    loc_parts: list[str] = []
    for part in first["loc"]:
        if isinstance(part, int):
            loc_parts.append(f"[{part + 1}]" if loc_parts and loc_parts[-1] == "stages" else f"[{part}]")
        elif part in STAGE_MODULES and loc_parts and loc_parts[-1].startswith("["):
            continue  # the discriminator tag pydantic adds to a union member's location
        else:
            loc_parts.append(str(part))
    loc = ".".join(loc_parts).replace(".[", "[") or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "is not a known key"
    elif first["type"] == "union_tag_invalid" or (first["type"] == "literal_error" and first["loc"][-1] == "stage"):
        kind = first["input"].get("stage") if isinstance(first["input"], dict) else first["input"]
        msg = f"stage kind {kind!r} is unknown; expected one of {', '.join(STAGE_MODULES)}"
        first = {**first, "type": "union_tag_invalid"}
        loc = loc.removesuffix(".stage")
    given = "" if first["type"] in ("missing", "extra_forbidden", "union_tag_invalid") else f" (got {first.get('input')!r})"
    more = len(err.errors()) - 1
    tail = f"; {more} more problem{'s' if more > 1 else ''} after this one" if more else ""
    return f"{path}: {loc}: {msg}{given}{tail}"


def load_job(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a YAML job file (``yaml.safe_load`` only).

    Raises
    ------
    UserError
        Missing or unreadable file, invalid YAML, or a value the models
        reject; the message names the file, the key and what was expected.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such job file; expected a YAML file such as jobs/demo.yaml")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{p}: is not valid YAML{where} ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{p}: holds {type(raw).__name__}; expected a mapping with name and stages")
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_error(p, err)) from None


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def spec_hash(spec: JobSpec) -> str:
    """Hash of what determines a job's results (not where it runs)."""
    data = spec.model_dump(mode="json", exclude={"engine": {"dask", "ray"}, "description": True})
    return _digest({"spec": data, "porelab": pipeline.__version__})


def stage_hash(stage: StageConfig, seed: int, input_hashes: list[str]) -> str:
    """Hash of one stage: its config, its seed and the hashes of its inputs."""
    return _digest(
        {"stage": stage.model_dump(mode="json"), "seed": seed, "inputs": input_hashes, "porelab": pipeline.__version__}
    )


def job_schema() -> dict[str, Any]:
    """JSON Schema of job files, as checked in at schemas/job.schema.json."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://porelab.dev/schemas/job.schema.json"
    schema["title"] = "porelab job"
    return schema
