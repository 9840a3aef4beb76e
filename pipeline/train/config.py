"""Settings of a training run (the ``train2d`` / ``train3d`` stages and ``porelab train``).

Plain pydantic models: the job stages inherit them, the training loop reads
them back from ``model_dump``. Unknown keys are errors.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.models.losses import LOSSES

__all__ = ["NetSettings", "LossSettings", "AugmentSettings", "WorkerSettings", "TrainSettings", "Train2DSettings",
           "Train3DSettings", "DEFAULT_PREPROCESS"]

#: The input preprocessing models train with: ``porelab preprocess`` defaults.
DEFAULT_PREPROCESS: dict[str, dict[str, Any]] = {
    "denoise": {"method": "gaussian", "dims": 2, "sigma": 1.0},
    "normalize": {"low": 0.5, "high": 99.5, "clip": True},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NetSettings(_Strict):
    """The U-Net (see :class:`pipeline.models.nets.UNet`)."""

    features: int = Field(16, ge=2, le=256, description="Channels of the first level (doubled per level).")
    depth: int = Field(4, ge=1, le=6, description="Downsamplings.")
    norm: Literal["batch", "instance", "group", "none"] = Field("batch", description="Normalisation after each convolution.")
    max_features: int = Field(256, ge=2, le=2048, description="Cap of channels per level.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Channel dropout after the bottleneck.")


class LossSettings(_Strict):
    """The loss (see :func:`pipeline.models.losses.make_loss`)."""

    name: Literal["ce", "dice", "dice_ce", "focal", "boundary"] = Field("dice_ce", description="CE + Dice by default, as in the paper.")
    dice_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    gamma: float = Field(2.0, ge=0, le=10, description="Focal loss focusing parameter.")
    boundary_weight: float = Field(4.0, ge=0, le=100, description="Extra CE weight on the pore/solid interface band (boundary).")
    boundary_px: int = Field(2, ge=1, le=16, description="Half-width of the interface band, voxels (boundary).")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        assert v in LOSSES
        return v


class AugmentSettings(_Strict):
    """Augmentation (see :class:`pipeline.train.augment.AugmentParams`)."""

    flip_y: bool = True
    flip_x: bool = True
    rot90: bool = True
    gamma: float = Field(1.5, ge=1.0, le=4.0, description="Largest gamma factor (1 = off).")
    contrast: float = Field(0.25, ge=0.0, le=1.0)
    noise: float = Field(0.04, ge=0.0, le=0.5, description="Largest noise std (values in [0, 1]).")
    blur: float = Field(1.0, ge=0.0, le=5.0, description="Largest blur sigma, pixels.")
    p: float = Field(0.5, ge=0.0, le=1.0, description="Probability of each intensity step.")


class WorkerSettings(_Strict):
    """Where training runs: Ray Train workers (DDP), or one process without Ray."""

    executor: Literal["ray", "local"] = Field("ray", description="ray: Ray Train TorchTrainer; local: in the runner's process.")
    num_workers: int = Field(1, ge=1, le=1024, description="Training workers (DDP), one share of the data each.")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: int | None = Field(None, ge=1, le=512, description="CPUs (and torch threads) per worker; default: the cores / workers.")
    max_failures: int = Field(2, ge=0, le=100, description="Restarts from the last checkpoint after a worker dies.")


class TrainSettings(_Strict):
    """What both training stages share."""

    dataset: str | None = Field(None, description="The synthetic dataset: an earlier stage's name or a .zarr path (default: the input).")
    net: NetSettings = Field(default_factory=NetSettings)
    batch_size: int = Field(8, ge=1, le=4096, description="Patches per step per worker.")
    epochs: int = Field(10, ge=1, le=100000)
    steps_per_epoch: int = Field(50, ge=1, le=10_000_000, description="Optimiser steps per epoch.")
    lr: float = Field(2e-3, gt=0, le=1.0, description="Peak learning rate (AdamW; linear warm-up, cosine decay).")
    weight_decay: float = Field(1e-4, ge=0, le=1.0)
    warmup_epochs: float = Field(0.5, ge=0, le=1000)
    loss: LossSettings = Field(default_factory=LossSettings)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="Tile overlap of inference (recorded in model.json).")
    train_split: str = Field("train", min_length=1)
    val_split: str = Field("val", min_length=1)
    val_samples: int | None = Field(None, ge=1, le=100000, description="Validation samples per epoch (default: the whole val split).")
    buffer: int = Field(4, ge=1, le=1024, description="Samples a worker holds in memory at once.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Arithmetic of the forward/backward pass: bf16 autocast (auto: where the CPU has "
        "AVX-512 BF16 / AMX or on CUDA), or fp32; weights and optimiser stay fp32.")
    keep: Literal["best", "last"] = Field("best", description="Ship the epoch with the best validation mean IoU, or the last.")
    init: str | None = Field(None, description="Start from this model (a folder, a shipped model's name, or an earlier stage): fine-tuning.")
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    preprocess: dict[str, dict[str, Any]] = Field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PREPROCESS.items()},
                                                  description="Input preprocessing (denoise, normalize), as porelab preprocess.")
    model_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Name in model.json (default: the stage's).")

    def _check_sizes(self) -> None:
        div = 2**self.net.depth
        for name in ("patch", "tile"):
            v = getattr(self, name)
            if any(s % div for s in v):
                raise ValueError(f"{name} {list(v)} must be a multiple of {div} (2 ** net.depth) in each axis")


class Train2DSettings(TrainSettings):
    """A 2D (k = 1) or 2.5D (k = 3, 5) U-Net that segments grey slices."""

    slices: Literal[1, 3, 5, 7] = Field(1, description="Neighbouring slices per input (2.5D); 1 = plain 2D.")
    patch: tuple[int, int] = Field((128, 128), description="Training patch (y, x) in pixels.")
    tile: tuple[int, int] = Field((256, 256), description="Inference tile (y, x) in pixels.")
    val_slices: int = Field(16, ge=1, le=100000, description="Slices per validation sample (evenly spread).")

    @model_validator(mode="after")
    def _sizes(self) -> Train2DSettings:
        self._check_sizes()
        return self


class Train3DSettings(TrainSettings):
    """A 3D U-Net that refines the stacked 2D pore probabilities, with the grey image as a second channel."""

    probability: str = Field(description="The 2D model's probabilities of the dataset: an earlier segment stage's name or a .zarr path.")
    residual: bool = Field(True, description="Start from the 2D probability and learn corrections to it (its logit is "
                           "added to the output; the head starts at zero), rather than from nothing.")
    patch: tuple[int, int, int] = Field((32, 64, 64), description="Training patch (z, y, x) in voxels.")
    tile: tuple[int, int, int] = Field((32, 96, 96), description="Inference tile (z, y, x) in voxels.")

    @model_validator(mode="after")
    def _sizes(self) -> Train3DSettings:
        self._check_sizes()
        return self
