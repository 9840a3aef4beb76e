"""Figures of a dataset: size distributions (paper Fig. 4) and example panels (Fig. 5-6).

Both are written into the store's ``figures/`` group folder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.synth import dataset as dstore

__all__ = ["psd_figure", "example_panels"]

_SPHERE_FAMILIES = ("solid_spheres", "pore_spheres", "agglomerates")


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    i = 0
    while True:
        rec = dstore.read_record(path, i)
        if rec is None:
            break
        out.append(rec)
        i += 1
    return out


def psd_figure(path: str | os.PathLike[str], *, max_samples: int = 2) -> dict[str, Any]:
    """Plot pore-size and sphere-size distributions against log-normal fits.

    Panel 1: the pore-size distribution (local thickness of the pore phase) of
    the first sample with its log-normal fit, as in the paper's Fig. 4.
    Further panels: for up to ``max_samples`` samples of sphere families, the
    size distribution of the sphere phase against the generator's input
    log-normal (fitted number median via Hatch-Choate).

    Returns
    -------
    dict
        The fits (JSON-able) for the dataset card.
    """
    import zarr

    from pipeline.synth.psd import fit_lognormal, local_thickness, plot_psd, sphere_phase_fit

    path = Path(path)
    root = zarr.open_group(path, mode="r")
    vs = tuple(float(v) for v in root.attrs["voxel_size_nm"])
    recs = _records(path)
    panels: list[dict[str, Any]] = []
    stats: dict[str, Any] = {}
    labels0 = np.asarray(root["labels"][0])
    pore = labels0 == 1
    if pore.any() and (~pore).any():
        lt = local_thickness(pore, vs, correct_discretisation=True)
        vals = lt[pore]
        fit = fit_lognormal(vals)
        stats["pore_size_sample0"] = fit.as_dict()
        panels.append({"values": vals, "fit": fit, "label": f"pore sizes, sample 0 ({recs[0].get('family')})"})
    chosen = [i for i, r in enumerate(recs) if r.get("family") in _SPHERE_FAMILIES and r.get("sphere_phase", -1) >= 0][:max_samples]
    stats["sphere_phase"] = []
    for i in chosen:
        r = recs[i]
        med, sig = float(r["structure"]["median_nm"]), float(r["structure"]["sigma"])
        margin = 0.5 * med * math.exp(2 * sig)
        vals, fit = sphere_phase_fit(np.asarray(root["labels"][i]), int(r["sphere_phase"]), vs, margin_nm=margin)
        if vals.size < 2:
            continue
        stats["sphere_phase"].append({"sample": i, "family": r["family"], "input_median_nm": med, "input_sigma": sig, **fit.as_dict()})
        phase = "solid" if r["sphere_phase"] == 0 else "pore"
        panels.append({
            "values": vals,
            "fit": fit,
            "label": f"{phase} spheres, sample {i} ({r['family']}): number median {fit.number_median_nm:.0f} nm",
            "input": (med, sig),
        })
    if panels:
        plot_psd(dstore.figures_dir(path) / "psd.png", panels)
    return stats


def _mask_rgb(labels: np.ndarray) -> np.ndarray:
    return np.where(labels == 1, 0, 255).astype(np.uint8)  # paper Fig. 5: pores black, solid white


def example_panels(
    path: str | os.PathLike[str],
    *,
    n: int = 3,
    blender: bool | None = None,
    blender_samples: int = 16,
) -> Path | None:
    """Mask | built-in render | Blender render of the middle slice of ``n`` samples.

    The image stored in the dataset fills its backend's column; the other
    backend renders that slice afresh from the stored labels with the same
    drawn parameters (no drift, so it stays on the mask). The Blender column
    is left out when ``bpy`` is absent (``blender=None``) or ``blender=False``.

    Returns
    -------
    Path or None
        ``figures/panels.png``, or None for a dataset without images.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import zarr

    from pipeline.synth.render_blender import blender_available

    path = Path(path)
    root = zarr.open_group(path, mode="r")
    if "image" not in root:
        return None
    vs = tuple(float(v) for v in root.attrs["voxel_size_nm"])
    recs = _records(path)
    use_blender = blender_available() if blender is None else (blender and blender_available())
    # one sample per family first, then the rest
    order: list[int] = []
    seen: set[str] = set()
    for i, r in enumerate(recs):
        if r.get("family") not in seen:
            order.append(i)
            seen.add(str(r.get("family")))
    order += [i for i in range(len(recs)) if i not in order]
    order = order[:n]
    cols = ["mask (labels)", "built-in render", "Blender render"] if use_blender else ["mask (labels)", "built-in render"]
    fig, axes = plt.subplots(len(order), len(cols), figsize=(3.2 * len(cols), 3.3 * len(order)), squeeze=False)
    for row, i in enumerate(order):
        r = recs[i]
        labels = np.asarray(root["labels"][i])
        k = labels.shape[0] // 2
        params = dict(r.get("render", {}))
        params["drift_px"] = 0.0
        backend = r.get("render_backend", "builtin")
        stored = np.asarray(root["image"][i, k])
        if backend == "builtin":
            builtin = stored
        else:
            from pipeline.synth.render_builtin import render_builtin

            builtin = render_builtin(labels, vs, params, seed=int(r.get("render_seed", 0))).image[k]
        images = [_mask_rgb(labels[k]), builtin]
        if use_blender:
            if backend == "blender":
                images.append(stored)
            else:
                from pipeline.synth.render_blender import render_blender

                images.append(render_blender(labels, vs, params, seed=int(r.get("render_seed", 0)), slices=[k],
                                             samples=blender_samples).image[0])
        for c, img in enumerate(images):
            ax = axes[row][c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(f"sample {i}, z={k}\n{r.get('family')}, φ={r.get('porosity', float('nan')):.2f}", fontsize=8)
    fig.tight_layout()
    out = dstore.figures_dir(path) / "panels.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
