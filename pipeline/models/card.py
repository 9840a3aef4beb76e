"""``model.json``: what a model folder says about its network, its input, its inference and its training.

A model is a folder: ``weights.safetensors`` (tensors only) and ``model.json``
(this model, validated by pydantic; its JSON Schema is checked in as
``schemas/model.schema.json``). The architecture is named from porelab's own
registry (:data:`pipeline.models.nets.NETWORKS`), never by a dotted import, and
nothing in the file is evaluated.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["SCHEMA_VERSION", "Architecture", "InputSpec", "InferenceSpec", "ModelCard", "model_schema", "card_markdown"]

#: Version of the model.json layout; a reader refuses newer ones.
SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Architecture(_Strict):
    """The network and its keyword arguments (see :class:`pipeline.models.nets.UNet`)."""

    name: Literal["unet"] = "unet"
    dims: Literal[2, 3] = 2
    in_channels: int = Field(1, ge=1, le=64)
    out_channels: int = Field(1, ge=1, le=8)
    features: int = Field(16, ge=1, le=512)
    depth: int = Field(4, ge=1, le=8)
    norm: Literal["batch", "instance", "group", "none"] = "batch"
    max_features: int = Field(256, ge=1, le=4096)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    residual_channel: int | None = Field(None, ge=0, le=63, description="Input channel whose logit is added to the output (refinement).")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the network class (everything but ``name``)."""
        return self.model_dump(exclude={"name"})


class InputSpec(_Strict):
    """What the network reads.

    ``kind`` "slices": a 2D network over (y, x) slices; ``slices`` neighbouring
    slices (z - k//2 .. z + k//2, mirrored at the volume's ends) are its
    channels and it predicts the middle one (k = 1: plain 2D). ``kind``
    "volume": a 3D network whose channels are ``channels`` (the refinement
    network reads the 2D pore probability and the grey image).
    Values are float32 in ``value_range``: the output of ``porelab preprocess``
    with ``preprocess`` (denoise and normalise settings), which training applied
    to its data too.
    """

    kind: Literal["slices", "volume"] = "slices"
    slices: int = Field(1, ge=1, le=15, description="Neighbouring slices per input (odd); 1 for 2D and volume models.")
    channels: list[str] = Field(default_factory=lambda: ["image"])
    value_range: tuple[float, float] = (0.0, 1.0)
    preprocess: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"denoise": {"method": "gaussian", "dims": 2, "sigma": 1.0},
                                 "normalize": {"low": 0.5, "high": 99.5, "clip": True}},
        description="porelab preprocess settings the training data went through (denoise, normalize).",
    )
    patch_size: list[int] = Field(description="Training patch, voxels (y, x) or (z, y, x).")
    divisor: int = Field(16, ge=1, description="Tiles should be a multiple of this many voxels per axis.")
    voxel_size_nm: dict[str, list[float]] | None = Field(
        None, description="Range of voxel sizes seen in training: {'min': [z, y, x], 'max': [z, y, x]} in nm."
    )

    @field_validator("slices")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"slices must be odd (the middle slice is predicted); got {v}")
        return v


class InferenceSpec(_Strict):
    """Defaults of tiled inference (see :mod:`pipeline.segment.tiling`)."""

    tile: list[int] = Field(description="Tile, voxels (y, x) or (z, y, x); a multiple of the input divisor.")
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="Fraction of a tile shared with the next one.")
    sigma_scale: float = Field(0.125, gt=0.0, le=1.0, description="Gaussian blending weight's sigma, fraction of the tile.")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Pore probability from which a voxel is pore.")
    batch_size: int = Field(4, ge=1, le=1024, description="Tiles per forward pass.")
    tta_axes: list[int] = Field(default_factory=list, description="Spatial axes (of the tile) training flipped: test-time flips.")


class ModelCard(_Strict):
    """Contents of ``model.json``."""

    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    task: Literal["segment", "refine"] = Field(description="segment: grey slices -> pore probability; refine: 3D clean-up.")
    description: str = ""
    architecture: Architecture
    input: InputSpec
    inference: InferenceSpec
    training: dict[str, Any] = Field(default_factory=dict, description="Data (path, hash, families, ranges, counts, seeds), "
                                     "loss, augmentation, epochs, time, hardware.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Validation (and test) metrics.")
    parameters: int = Field(0, ge=0)
    weights_sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    created: str = ""
    porelab_version: str = ""
    versions: dict[str, str] = Field(default_factory=dict)

    @field_validator("schema_version")
    @classmethod
    def _known(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(f"model.json schema_version {v} is newer than this porelab reads ({SCHEMA_VERSION}); upgrade porelab")
        return v

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=False)


def model_schema() -> dict[str, Any]:
    """JSON Schema of ``model.json``, as checked in at schemas/model.schema.json."""
    schema = ModelCard.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://porelab.dev/schemas/model.schema.json"
    schema["title"] = "porelab model.json"
    return schema


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def card_markdown(card: ModelCard) -> str:
    """A human-readable model card (Markdown) generated from ``model.json``."""
    a, i, inf, t = card.architecture, card.input, card.inference, card.training
    lines = [
        f"# porelab model `{card.name}`",
        "",
        card.description or f"A {a.dims}D U-Net that {'segments grey slices into pore probability' if card.task == 'segment' else 'refines stacked pore probabilities in 3D'}.",
        "",
        "## Architecture",
        f"- {a.dims}D U-Net, {a.depth} downsamplings, {a.features} base channels (up to {a.max_features}), "
        f"{a.norm} norm, {'bilinear' if a.dims == 2 else 'trilinear'} upsampling; {card.parameters:,} parameters",
        f"- input: {i.kind}, channels {', '.join(i.channels)}" + (f" ({i.slices} neighbouring slices)" if i.slices > 1 else ""),
        f"- values float32 in {list(i.value_range)} after porelab preprocess ({_fmt(i.preprocess)})",
        f"- training patch {i.patch_size}; inference tile {inf.tile}, overlap {inf.overlap}, gaussian blending "
        f"(sigma {inf.sigma_scale} x tile), threshold {inf.threshold}"
        + (f", test-time flips on axes {inf.tta_axes}" if inf.tta_axes else ""),
    ]
    if i.voxel_size_nm:
        lines.append(f"- voxel sizes seen in training: {i.voxel_size_nm.get('min')} to {i.voxel_size_nm.get('max')} nm (z, y, x)")
    if t:
        lines += ["", "## Training"]
        for k, v in t.items():
            if isinstance(v, dict) and len(json.dumps(v, default=str)) > 200:
                lines.append(f"- {k}:")
                lines += [f"  - {kk}: {_fmt(vv)}" for kk, vv in v.items()]
            else:
                lines.append(f"- {k}: {_fmt(v)}")
    if card.metrics:
        lines += ["", "## Metrics"]
        for split, m in card.metrics.items():
            if isinstance(m, dict) and m and all(isinstance(x, dict) for x in m.values()):
                keys = sorted({k for x in m.values() for k in x})
                lines += ["", f"### {split}", "", "| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
                lines += [f"| {row} | " + " | ".join(_fmt(x.get(k, "")) for k in keys) + " |" for row, x in m.items()]
            else:
                lines.append(f"- {split}: {_fmt(m)}")
    lines += ["", "## Provenance",
              f"- created {card.created}, porelab {card.porelab_version}; " + ", ".join(f"{k} {v}" for k, v in card.versions.items()),
              f"- weights.safetensors sha256 `{card.weights_sha256}`", ""]
    return "\n".join(lines)
