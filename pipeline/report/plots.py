"""The report's figures as PNG bytes (matplotlib, Agg backend, no files)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "pyplot",
    "png",
    "drift_plot",
    "illumination_plot",
    "slices_plot",
    "porosity_profile_plot",
    "psd_plot",
    "method_bars",
    "sensitivity_plot",
    "porosity_map_plot",
    "probability_plot",
]

_METHOD_LABELS = {
    "mc_basic": "MC basic",
    "mc_smoothed": "MC smoothed",
    "mc_hole_filled": "MC hole-filled",
    "voxel_direct": "Voxel direct",
    "convex_hull": "Convex hull",
    "dual_contouring": "Dual contouring",
    "multiscale": "Multiscale",
}


def pyplot():  # noqa: ANN201
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_plt = pyplot


def png(fig: Any, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes and close it."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def drift_plot(drift_px: Sequence[Sequence[float]], measured_px: Sequence[Sequence[float]] | None = None) -> bytes:
    """Slice drift (dy, dx) in px against the slice index; the measured values as dots."""
    plt = _plt()
    d = np.asarray(drift_px, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 3))
    z = np.arange(len(d))
    for k, (name, c) in enumerate((("dy", "C0"), ("dx", "C1"))):
        ax.plot(z, d[:, k], color=c, lw=1.8, label=f"{name} applied")
        if measured_px is not None and len(measured_px) == len(d):
            ax.plot(z, np.asarray(measured_px, float)[:, k], ".", color=c, ms=3, alpha=0.6, label=f"{name} measured")
    ax.set_xlabel("slice")
    ax.set_ylabel("drift (px)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=4)
    ax.set_title("Slice-to-slice drift")
    return png(fig)


def illumination_plot(relative_range: Sequence[Sequence[float]], mean_map: Sequence[Sequence[float]] | None) -> bytes:
    """Background min/max over its mean per slice, and the mean background map."""
    plt = _plt()
    r = np.asarray(relative_range, dtype=float)
    ncols = 2 if mean_map is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols + 1, 3), squeeze=False)
    ax = axes[0, 0]
    z = np.arange(len(r))
    ax.fill_between(z, r[:, 0], r[:, 1], color="C2", alpha=0.35, label="min..max")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("slice")
    ax.set_ylabel("background / its mean")
    ax.set_title("Illumination background removed")
    ax.legend(fontsize=8)
    if mean_map is not None:
        im = axes[0, 1].imshow(np.asarray(mean_map, float), cmap="magma")
        axes[0, 1].set_title("Mean background (relative)")
        axes[0, 1].axis("off")
        fig.colorbar(im, ax=axes[0, 1], fraction=0.046)
    return png(fig)


def slices_plot(image: np.ndarray, overlays: Mapping[str, np.ndarray], indices: Sequence[int], *, voxel_size_nm: Sequence[float] | None = None) -> bytes:
    """Example slices: the grey image, then each segmentation's pores in colour over it.

    Parameters
    ----------
    image : array (k, y, x)
        The slices ``indices`` of the grey volume.
    overlays : mapping of name to (k, y, x) uint8
        Labels (1 = pore) on the same slices.
    """
    plt = _plt()
    rows = 1 + len(overlays)
    k = len(indices)
    fig, axes = plt.subplots(rows, k, figsize=(3.2 * k, 3.0 * rows), squeeze=False)
    colors = [(1.0, 0.2, 0.2), (0.2, 0.7, 1.0), (0.3, 1.0, 0.3), (1.0, 0.8, 0.1)]
    for j, z in enumerate(indices):
        img = np.asarray(image[j], dtype=np.float32)
        lo, hi = np.percentile(img, [1, 99]) if img.size else (0, 1)
        axes[0, j].imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        axes[0, j].set_title(f"image, slice {z}", fontsize=9)
        for i, (name, lab) in enumerate(overlays.items()):
            ax = axes[1 + i, j]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            rgba = np.zeros((*lab[j].shape, 4), np.float32)
            rgba[..., :3] = colors[i % len(colors)]
            rgba[..., 3] = 0.45 * (np.asarray(lab[j]) == 1)
            ax.imshow(rgba)
            ax.set_title(f"{name}: pores, slice {z}", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return png(fig)


def porosity_profile_plot(profiles: Mapping[str, Sequence[float]], *, truth: Sequence[float] | None = None) -> bytes:
    """Porosity of every z slice, one line per segmentation."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for i, (name, prof) in enumerate(profiles.items()):
        p = np.asarray(prof, float)
        ax.plot(np.arange(len(p)), p, color=f"C{i}", lw=1.6, label=f"{name} (mean {p.mean():.3f})")
    if truth is not None:
        t = np.asarray(truth, float)
        ax.plot(np.arange(len(t)), t, "k--", lw=1.2, label=f"truth (mean {t.mean():.3f})")
    ax.set_xlabel("slice (z)")
    ax.set_ylabel("porosity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Porosity per slice")
    return png(fig)


def porosity_map_plot(per_block: Any) -> bytes:
    """Porosity of the blocks, averaged along z (a map over y, x blocks)."""
    plt = _plt()
    b = np.asarray(per_block, float)
    m = b.mean(axis=0)
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    im = ax.imshow(m, cmap="viridis", vmin=max(0.0, float(b.min()) - 0.02), vmax=min(1.0, float(b.max()) + 0.02))
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    for (i, j), v in np.ndenumerate(m):
        if m.size <= 64:
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < m.mean() else "k")
    ax.set_xlabel("x block")
    ax.set_ylabel("y block")
    ax.set_title(f"Porosity per block (mean over {b.shape[0]} z blocks)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return png(fig)


def _lognormal_pdf(x: np.ndarray, median: float, sigma: float) -> np.ndarray:
    s = max(sigma, 1e-9)
    return np.exp(-((np.log(x) - math.log(median)) ** 2) / (2 * s * s)) / (x * s * math.sqrt(2 * math.pi))


def psd_plot(counts: Sequence[int], edges: Sequence[float], fit: Mapping[str, float] | None, median_nm: float | None = None) -> bytes:
    """Volume-weighted pore-size histogram (local thickness) with its median and the log-normal fit (dashed when poor)."""
    plt = _plt()
    c = np.asarray(counts, float)
    e = np.asarray(edges, float)
    if len(c) > 12:  # local thickness takes discrete, lattice-biased values: regular bins read better
        centres = 0.5 * (e[:-1] + e[1:])
        c, e = np.histogram(centres, bins=min(24, max(8, len(c) // 2)), range=(float(e[0]), float(e[-1])), weights=c)
    dens = c / (c.sum() * np.diff(e)) if c.sum() else c
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(e[:-1], dens, width=np.diff(e), align="edge", color="0.72", edgecolor="0.35", label="local thickness (volume-weighted)")
    if fit:
        x = np.linspace(max(e[0], 1e-6), e[-1] * 1.05, 400)
        poor = ", poor fit" if fit.get("poor") else ""
        ax.plot(x, _lognormal_pdf(x, fit["median_nm"], fit["sigma"]), "C3", lw=2, ls="--" if poor else "-",
                label=f"log-normal fit: median {fit['median_nm']:.1f} nm, σ {fit['sigma']:.2f} (KS {fit['ks']:.3f}{poor})")
    if median_nm is not None:
        ax.axvline(median_nm, color="k", lw=1.2, label=f"median of the data: {median_nm:.1f} nm")
    ax.set_xlabel("pore diameter (nm)")
    ax.set_ylabel("density (1/nm)")
    ax.legend(fontsize=8)
    ax.set_title("Pore-size distribution")
    return png(fig)


def method_bars(rows: Sequence[Mapping[str, Any]], keys: Sequence[tuple[str, str]]) -> bytes:
    """Bar charts per method (paper Fig. 11 / 12), with ``<key>_std`` as error bars when present.

    Parameters
    ----------
    rows : list of mapping
        One per method: ``method`` and the metric keys.
    keys : list of (key, axis label)
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.0 * len(keys), 3.8), squeeze=False)
    names = [_METHOD_LABELS.get(r["method"], r["method"]) for r in rows]
    for ax, (key, label) in zip(axes[0], keys):
        vals = np.asarray([np.nan if r.get(key) is None else r[key] for r in rows], float)
        err = np.asarray([r.get(f"{key}_std", 0.0) or 0.0 for r in rows], float)
        best = int(np.nanargmin(vals)) if np.isfinite(vals).any() else -1
        colors = ["C2" if i == best else "C0" for i in range(len(rows))]
        ax.bar(range(len(rows)), np.nan_to_num(vals), yerr=err if err.any() else None, capsize=4, color=colors, edgecolor="0.2")
        for i, v in enumerate(vals):
            if np.isfinite(v):
                ax.text(i, v + (err[i] if err.any() else 0), f"{v:.3g}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return png(fig)


def sensitivity_plot(sweep: Mapping[str, Any], others: Mapping[str, Sequence[float]] | None = None,
                     truth: float | None = None) -> bytes:
    """Baseline porosity against each parameter (paper Fig. 1) and the spreads side by side.

    ``others`` maps a label (e.g. "porelab") to porosities from its own
    settings/seeds, drawn as a spread beside the baseline's; ``truth`` (the
    true porosity, when known) is a green line on every panel.
    """
    plt = _plt()
    params = list(sweep["by_parameter"].items())
    n = len(params) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.9 * n, 3.2), squeeze=False)
    default = sweep["default_porosity"]
    lo, hi = sweep["min"], sweep["max"]
    if truth is not None:
        lo, hi = min(lo, truth), max(hi, truth)
    for ax, (name, d) in zip(axes[0], params):
        if truth is not None:
            ax.axhline(truth, color="C2", lw=1.2, label="truth")
        vals = [str(v) for v in d["values"]]
        ax.plot(range(len(vals)), d["porosity"], "o-", color="C0")
        ax.axhline(default, color="0.4", ls="--", lw=0.8)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(vals, rotation=40, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(lo - 0.02, hi + 0.02)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("porosity")
    ax = axes[0, -1]
    groups = [("baseline", [r["porosity"] for r in sweep["runs"]])] + list((others or {}).items())
    for i, (label, vals) in enumerate(groups):
        v = np.asarray(vals, float)
        ax.plot([i, i], [v.min(), v.max()], color=f"C{i}", lw=8, alpha=0.5, solid_capstyle="butt")
        ax.plot(np.full(len(v), i), v, "k.", ms=3)
        ax.text(i, v.max() + 0.005, f"{100 * (v.max() - v.min()):.1f} pts", ha="center", fontsize=8)
    if truth is not None:
        ax.axhline(truth, color="C2", lw=1.2)
        axes[0, 0].legend(fontsize=7, loc="upper left")
    ax.set_ylim(lo - 0.03, hi + 0.04)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)
    ax.set_xlim(-0.7, len(groups) - 0.3)
    ax.set_title("spread of porosity", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return png(fig)


def probability_plot(image: np.ndarray | None, panels: Mapping[str, np.ndarray]) -> bytes:
    """A slice's grey image beside a segmentation's maps (probability, uncertainty), each with its colour bar."""
    plt = pyplot()
    items = ([("image", image, "gray", None)] if image is not None else []) + [
        (k, v, "magma" if "probability" in k else "viridis", (0.0, 1.0) if "probability" in k else None) for k, v in panels.items()]
    fig, axes = plt.subplots(1, len(items), figsize=(3.4 * len(items), 3.3))
    axes = np.atleast_1d(axes)
    for ax, (title, data, cmap, lim) in zip(axes, items):
        im = ax.imshow(data, cmap=cmap, vmin=None if lim is None else lim[0], vmax=None if lim is None else lim[1])
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        if title != "image":
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.tight_layout()
    return png(fig)
