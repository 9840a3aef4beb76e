"""Segmentations of a synthetic dataset's samples against their labels: overall, per structure family, per sample.

Each method (a segmentation store of the dataset, written by a ``segment`` or
``refine`` stage on it, or the threshold baseline run here on the same raw
stacks) is scored with the confusion counts of :mod:`pipeline.analyze.confusion`:
pixel accuracy, IoU of pores and of solid, Dice and CE pooled over the
voxels of a group, and the porosity error of each sample (its mean absolute
value and its largest). One task per sample.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.analyze.confusion import counts, summarize
from pipeline.errors import UserError

__all__ = ["sample_scores", "evaluate_dataset", "summarize_scores", "markdown_table"]

BASELINE = "baseline"


def _baseline_mask(raw: np.ndarray, params: Mapping[str, Any] | None) -> np.ndarray:
    from pipeline.baseline import BaselineParams, baseline_segment

    labels, _ = baseline_segment(raw, BaselineParams(**dict(params or {})))
    return np.asarray(labels.compute(scheduler="sync"))


def sample_scores(dataset: str, index: int, *, store: str | None, row: int | None,
                  baseline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Counts of one sample: a segmentation store's ``row`` (its probability gives CE), or the baseline when ``store`` is None."""
    import zarr

    root = Path(dataset)
    truth = np.asarray(zarr.open_array(root / "labels", mode="r")[index])
    if store is None:
        mask = _baseline_mask(np.asarray(zarr.open_array(root / "image", mode="r")[index]), baseline)
        prob = mask.astype(np.float32)
    else:
        prob = np.asarray(zarr.open_array(Path(store) / "probability", mode="r")[row], dtype=np.float32)
        mask = np.asarray(zarr.open_array(Path(store) / "mask", mode="r")[row])
    # counts threshold a probability: hand them the stored mask itself (0/1) so a tuned threshold is kept,
    # and take CE from the probability
    c = counts(mask.astype(np.float32), truth, smoothness=True)
    if store is not None:
        c[4] = counts(prob, truth)[4]
    else:
        c[4] = np.nan  # no probability: no CE
    return {"sample": int(index), "counts": c.tolist(),
            "porosity": float(mask.mean()), "porosity_truth": float((truth == 1).mean())}


def summarize_scores(rows: Sequence[Mapping[str, Any]], families: Mapping[int, str]) -> dict[str, Any]:
    """Overall, per-family and per-sample metrics of one method from its per-sample counts."""
    def group(rs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        total = np.sum([r["counts"] for r in rs], axis=0)
        m = summarize(total)
        if np.isnan(total[4]):
            m.pop("ce", None)
        err = np.array([r["porosity"] - r["porosity_truth"] for r in rs])
        m.update(samples=len(rs), porosity_abs_error=float(np.mean(np.abs(err))), porosity_abs_error_max=float(np.max(np.abs(err))),
                 porosity_error_mean=float(np.mean(err)))
        return m

    fams = sorted({families.get(r["sample"], "") for r in rows})
    out = {"overall": group(rows), "families": {f: group([r for r in rows if families.get(r["sample"], "") == f]) for f in fams}}
    out["per_sample"] = [{"sample": r["sample"], "family": families.get(r["sample"], ""), "porosity": r["porosity"],
                          "porosity_truth": r["porosity_truth"], **{k: v for k, v in summarize(np.asarray(r["counts"])).items()
                                                                    if k in ("accuracy", "iou_pore", "iou_solid")}} for r in rows]
    return out


def _rows_of(store: Path) -> dict[int, int]:
    import zarr

    samples = np.asarray(zarr.open_array(store / "sample", mode="r")[:])
    return {int(s): r for r, s in enumerate(samples.tolist())}


def evaluate_dataset(dataset: str | os.PathLike[str], methods: Mapping[str, str | os.PathLike[str] | None], *,
                     split: str | None = "test", baseline: Mapping[str, Any] | None = None, compute: Any = None,
                     progress: str | None = None) -> dict[str, Any]:
    """Score segmentation stores (and the baseline) on the samples of ``split``.

    Parameters
    ----------
    dataset : path
        The synthetic dataset (labels, image, split, family).
    methods : mapping of name to path or None
        Segmentation stores of the dataset (``None``: the threshold baseline).
    split : str or None
        Split to score (None: every sample the stores hold).
    baseline : mapping, optional
        :class:`pipeline.baseline.BaselineParams` of the baseline.
    compute : callable, optional
        ``compute(list of delayed) -> list of results`` (a Dask client's); default the threaded scheduler.

    Raises
    ------
    UserError
        A store that is not a segmentation of this dataset, or a split it does not cover.
    """
    import dask

    from pipeline.synth.dataset import open_dataset

    dataset = Path(dataset)
    ds = open_dataset(dataset)
    splits = [str(v) for v in ds["split"].values.tolist()] if "split" in ds.coords else [""] * ds.sizes["sample"]
    fam = [str(v) for v in ds["family"].values.tolist()] if "family" in ds else [""] * len(splits)
    ds.close()
    wanted = [i for i, s in enumerate(splits) if split is None or s == split]
    if not wanted:
        raise UserError(f"{dataset}: has no sample in the {split!r} split")
    tasks: dict[str, list[Any]] = {}
    for name, store in methods.items():
        if store is None:
            tasks[name] = [dask.delayed(sample_scores)(str(dataset), i, store=None, row=None, baseline=baseline) for i in wanted]
            continue
        rows = _rows_of(Path(store))
        missing = [i for i in wanted if i not in rows]
        if missing:
            raise UserError(f"{store}: holds no segmentation of samples {missing[:5]} of the {split!r} split of {dataset}")
        tasks[name] = [dask.delayed(sample_scores)(str(dataset), i, store=str(store), row=rows[i]) for i in wanted]
    flat = [t for ts in tasks.values() for t in ts]
    if compute is None:
        results = list(dask.compute(*flat, scheduler="threads"))
    else:
        results = list(compute(flat))
    families = dict(enumerate(fam))
    out: dict[str, Any] = {"dataset": str(dataset), "split": split, "samples": len(wanted),
                           "families": {f: sum(1 for i in wanted if fam[i] == f) for f in sorted({fam[i] for i in wanted})},
                           "methods": {}}
    pos = 0
    for name, ts in tasks.items():
        out["methods"][name] = summarize_scores(results[pos:pos + len(ts)], families)
        pos += len(ts)
    return out


_COLUMNS = (("accuracy", "pixel accuracy", 100), ("iou_pore", "IoU pore", 100), ("iou_solid", "IoU solid", 100),
            ("porosity_abs_error", "mean abs porosity error", 1), ("porosity_abs_error_max", "max abs porosity error", 1))


def markdown_table(result: Mapping[str, Any]) -> str:
    """The evaluation as a Markdown table: one row per method and family (accuracy and IoU in %)."""
    head = "| method | family | samples | " + " | ".join(c[1] for c in _COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(_COLUMNS))]
    for name, m in result["methods"].items():
        groups = [("all", m["overall"])] + list(m["families"].items())
        for fam, g in groups:
            cells = [f"{g[k] * s:.2f}" if s == 100 else f"{g[k]:.4f}" for k, _, s in _COLUMNS]
            lines.append(f"| {name} | {fam} | {g['samples']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
