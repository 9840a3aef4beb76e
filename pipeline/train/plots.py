"""Figures of a training run, like the paper's: curves (Fig. 7), one slice across epochs (Fig. 8), prediction vs truth (Fig. 9)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.report.plots import png, pyplot

__all__ = ["curves_plot", "epochs_plot", "prediction_plot", "write_png"]


def write_png(path: Path, data: bytes) -> Path:
    """Write PNG bytes atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def curves_plot(history: Sequence[dict[str, Any]]) -> bytes:
    """Loss (training loss, validation CE) and validation metrics against the epoch (Fig. 7)."""
    plt = pyplot()
    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ax = axes[0]
    ax.plot(ep, [r["train_loss"] for r in history], "o-", ms=3, label="training loss")
    ax.plot(ep, [r.get("val_ce") for r in history], "s-", ms=3, label="validation CE")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    ax = axes[1]
    for key, label in (("val_accuracy", "pixel accuracy"), ("val_iou_pore", "IoU pore"), ("val_iou_solid", "IoU solid"),
                       ("val_dice", "Dice"), ("val_iou_3d", "3D IoU")):
        if any(key in r for r in history):
            ax.plot(ep, [r.get(key) for r in history], "o-", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_title("validation")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(ep, [r.get("val_porosity_abs_error") for r in history], "o-", ms=3, color="C3", label="|porosity error|")
    if any("val_smoothness" in r for r in history):
        ax.plot(ep, [r.get("val_smoothness") for r in history], "s-", ms=3, color="C4", label="smoothness (Laplacian)")
    ax.set_xlabel("epoch")
    ax.set_title("porosity error (validation)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


_EPOCH = re.compile(r"^epoch-(\d+)\.png$")


def epochs_plot(folder: Path, most: int = 8) -> bytes | None:
    """One validation slice (image, truth) and its predicted pore probability at up to ``most`` epochs (Fig. 8)."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _EPOCH.match(p.name)))
    if not found:
        return None
    idx = np.unique(np.linspace(0, len(found) - 1, min(most, len(found))).round().astype(int))
    picks = [found[i] for i in idx]
    extra = [(name, folder / f"{name}.png") for name in ("image", "truth") if (folder / f"{name}.png").is_file()]
    plt = pyplot()
    n = len(extra) + len(picks)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.5))
    axes = np.atleast_1d(axes)
    for ax, (title, path) in zip(axes, extra + [(f"epoch {e}", p) for e, p in picks]):
        ax.imshow(np.asarray(Image.open(path)), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return png(fig)


def prediction_plot(kept: dict[str, Any], threshold: float = 0.5) -> bytes:
    """Image, truth, prediction and where they differ, for one validation slice (Fig. 9)."""
    plt = pyplot()
    prob = np.asarray(kept["probability"])
    truth = np.asarray(kept["truth"]) == 1
    pred = prob >= threshold
    err = np.zeros((*truth.shape, 3))
    err[pred & ~truth] = (1.0, 0.3, 0.2)   # predicted pore, solid in truth
    err[~pred & truth] = (0.2, 0.5, 1.0)   # missed pore
    err[pred & truth] = (0.85, 0.85, 0.85)   # pore in both (white, as in the truth)
    err[~pred & ~truth] = (0.15, 0.15, 0.15)
    panels: list[tuple[str, Any, dict[str, Any]]] = [("image", kept["image"], {"cmap": "gray"}),
                                                   ("truth (pore white)", truth, {"cmap": "gray"})]
    if "input_probability" in kept:
        panels.append(("2D probability", kept["input_probability"], {"cmap": "magma", "vmin": 0, "vmax": 1}))
    panels += [("pore probability", prob, {"cmap": "magma", "vmin": 0, "vmax": 1}),
               (f"errors: red extra, blue missed ({100 * np.mean(pred != truth):.1f} %)", err, {})]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2))
    for ax, (title, data, kw) in zip(axes, panels):
        ax.imshow(data, **kw)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return png(fig)
