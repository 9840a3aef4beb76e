"""Run a training: the model card to fill in, the workers' config, Ray Train or one local process.

The entry point of the ``train2d`` / ``train3d`` stages (and so of
``porelab train``): :func:`train_model` returns the folder of the trained model.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pipeline
from pipeline.errors import UserError
from pipeline.models.card import Architecture, InferenceSpec, InputSpec, ModelCard
from pipeline.progress import progress_bar
from pipeline.train.augment import AugmentParams
from pipeline.train.config import Train2DSettings, Train3DSettings, TrainSettings
from pipeline.train.data import open_training_data
from pipeline.train.loop import history_paths

__all__ = ["TrainResult", "model_card", "worker_config", "train_model", "hardware", "dataset_summary"]


@dataclass
class TrainResult:
    """A finished training: the model folder, its history and how long it took."""

    model: Path
    history: list[dict[str, Any]]
    seconds: float
    root: Path


def hardware(use_gpu: bool = False) -> str:
    """One line about this machine: CPU model and cores (and the GPU when used)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = f"{cpu}, {cores} cores"
    if use_gpu:
        try:
            import torch

            out += f", {torch.cuda.get_device_name(0)}"
        except Exception:  # noqa: BLE001
            pass
    return out


def dataset_summary(path: Path, view: Any) -> dict[str, Any]:
    """What the model card says about its training data: path, hash, counts per split and family, ranges, seeds."""
    import zarr

    attrs = dict(zarr.open_group(path, mode="r").attrs)
    card = attrs.get("card", {}) or {}
    splits = {s: int((view.splits == s).sum()) for s in sorted(set(view.splits.tolist()))}
    fams: dict[str, dict[str, int]] = {}
    for s, f in zip(view.splits.tolist(), view.families.tolist()):
        fams.setdefault(s, {}).setdefault(f, 0)
        fams[s][f] += 1
    key = attrs.get("build_key", "")
    return {
        "dataset": str(path),
        "data_hash": key or "",
        "samples": splits,
        "families": fams,
        "sample_shape": list(view.shape),
        "voxel_size_nm": view.voxel_size_nm,
        "structure_ranges": card.get("structure_ranges"),
        "render_ranges": card.get("render_ranges"),
        "render_backend": card.get("render_backend"),
        "dataset_seed": (card.get("job") or {}).get("config", {}).get("seed"),
        "shine_through": (card.get("achieved") or {}).get("shine_through"),
    }


def model_card(settings: TrainSettings, *, name: str, view: Any, dataset: Path, seed: int,
               init_card: ModelCard | None = None) -> ModelCard:
    """The card of the model a training makes (metrics are filled in at the end)."""
    vol = isinstance(settings, Train3DSettings)
    net = settings.net
    if init_card is not None:
        arch, k = init_card.architecture, init_card.input.slices
        preprocess = init_card.input.preprocess
    else:
        k = 1 if vol else int(settings.slices)  # type: ignore[attr-defined]
        arch = Architecture(dims=3 if vol else 2, in_channels=2 if vol else k, features=net.features, depth=net.depth,
                            norm=net.norm, max_features=net.max_features, dropout=net.dropout,
                            residual_channel=0 if vol and settings.residual else None)  # type: ignore[attr-defined]
        preprocess = settings.preprocess
    if vol:
        channels = ["probability", "image"]
    else:
        channels = ["image"] if k == 1 else [f"slice z{j:+d}" for j in range(-(k // 2), k // 2 + 1)]
    aug = AugmentParams(**settings.augment.model_dump())
    vs = [float(v) for v in view.voxel_size_nm]
    inp = InputSpec(kind="volume" if vol else "slices", slices=k, channels=channels, preprocess=preprocess,
                    patch_size=list(settings.patch), divisor=2**arch.depth,  # type: ignore[attr-defined]
                    voxel_size_nm={"min": vs, "max": vs})
    inf = InferenceSpec(tile=list(settings.tile), overlap=settings.overlap, tta_axes=aug.tta_axes(arch.dims),  # type: ignore[attr-defined]
                        batch_size=2 if vol else 4)
    training = {
        **dataset_summary(dataset, view),
        "seed": seed,
        "loss": settings.loss.model_dump(),
        "augment": settings.augment.model_dump(),
        "optimizer": {"name": "AdamW", "lr": settings.lr, "weight_decay": settings.weight_decay,
                      "schedule": f"linear warm-up {settings.warmup_epochs} epochs, cosine decay"},
        "epochs_planned": settings.epochs,
        "steps_per_epoch": settings.steps_per_epoch,
        "batch_size": settings.batch_size,
        "workers": settings.workers.num_workers,
        "executor": settings.workers.executor,
        "hardware": hardware(settings.workers.use_gpu),
        "init": None if init_card is None else init_card.name,
        "train_split": settings.train_split,
        "val_split": settings.val_split,
    }
    import torch

    return ModelCard(
        name=name, task="refine" if vol else "segment", architecture=arch, input=inp, inference=inf, training=training,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), porelab_version=pipeline.__version__,
        versions={"torch": torch.__version__.split("+")[0], "numpy": np.__version__},
    )


def worker_config(settings: TrainSettings, *, card: ModelCard, dataset: Path, probability: Path | None, root: Path,
                  seed: int, stage_hash: str, init: Path | None) -> dict[str, Any]:
    """The JSON-able config every training worker gets."""
    return {
        "kind": card.input.kind,
        "settings": settings.model_dump(mode="json"),
        "card": card.model_dump(mode="json"),
        "dataset": str(dataset),
        "probability": None if probability is None else str(probability),
        "root": str(root),
        "seed": int(seed),
        "stage_hash": stage_hash,
        "init": None if init is None else str(init),
    }


def _progress_watch(history: Path, total: int, label: str | None):  # noqa: ANN202 - a thread target
    def watch(done: threading.Event) -> None:
        with progress_bar(total=total, desc=label, unit="epoch") as bar:
            seen = 0
            while not done.wait(2.0):
                try:
                    rows = json.loads(history.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                if len(rows) > seen:
                    bar.update(len(rows) - seen)
                    seen = len(rows)
                    r = rows[-1]
                    bar.set_postfix(loss=f"{r['train_loss']:.3f}", iou=f"{r.get('val_iou_pore', float('nan')):.3f}")
    return watch


def train_model(settings: Train2DSettings | Train3DSettings, *, root: Path, dataset: Path, seed: int, stage_hash: str,
                name: str, probability: Path | None = None, init: Path | None = None,
                progress: str | None = None) -> TrainResult:
    """Train a model into ``root/model`` (checkpoints, history and figures beside it).

    ``root`` is the stage's folder in the run folder; a folder of another stage
    hash is cleared first, one of the same hash is resumed from its newest checkpoint.
    Ray must be initialised for ``executor: ray`` (the runner does it).

    Raises
    ------
    UserError
        Bad data (see :func:`pipeline.train.data.open_training_data`) or a
        warm-start model that does not fit.
    """
    from pipeline.models.folder import read_card
    from pipeline.train.session import LocalSession

    vol = isinstance(settings, Train3DSettings)
    view = open_training_data(dataset, probability=probability, need=(settings.train_split, settings.val_split))
    init_card = None
    if init is not None:
        init_card = read_card(init)
        if init_card.input.kind != ("volume" if vol else "slices"):
            raise UserError(f"{init}: is a {init_card.input.kind} model; this stage trains a {'volume' if vol else 'slices'} model")
    card = model_card(settings, name=name, view=view, dataset=dataset, seed=seed, init_card=init_card)
    marker = root / "stage_hash"
    if root.exists() and (not marker.is_file() or marker.read_text().strip() != stage_hash):
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(stage_hash)
    config = worker_config(settings, card=card, dataset=dataset, probability=probability, root=root, seed=seed,
                           stage_hash=stage_hash, init=init)
    t0 = time.perf_counter()
    paths = history_paths(root)
    w = settings.workers
    if w.executor == "local":
        from pipeline.train.loop import train_worker

        threads = w.cpus_per_worker or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
        with progress_bar(total=settings.epochs, desc=progress, unit="epoch") as bar:
            def on_report(row: dict[str, Any]) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", iou=f"{row.get('val_iou_pore', float('nan')):.3f}")

            device = "cuda" if w.use_gpu else "cpu"
            train_worker({**config, "threads": threads}, LocalSession(device, on_report=on_report))
    else:
        from pipeline.train.ray_runner import fit_ray

        fit_ray(config, w, storage=root / "ray", name=f"{name}-{stage_hash[:12]}",
                watch=_progress_watch(paths["json"], settings.epochs, progress))
    history = json.loads(paths["json"].read_text()) if paths["json"].is_file() else []
    if not (paths["model"] / "model.json").is_file():
        raise RuntimeError(f"training ended without writing {paths['model']}")
    return TrainResult(model=paths["model"], history=history, seconds=time.perf_counter() - t0, root=root)
