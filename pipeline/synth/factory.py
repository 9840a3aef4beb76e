"""The synthetic data factory: plan samples, make each one, assemble the dataset.

:func:`plan_samples` draws every sample's parameters up front (family,
porosity, diameters, renderer settings, seeds) from the dataset seed, so a
sample is fully described by a small dict. :func:`make_sample` turns one such
dict into a written sample (structure, rendering, record) and is the unit of
work that :func:`build_dataset` fans out over Ray. Building happens in a
``.NAME.partial`` folder next to the output that is renamed when complete;
running the same build again resumes it, skipping finished samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.synth import dataset as dstore
from pipeline.synth.params import DEFAULT_RENDER_RANGES, assign_splits, draw_params, draw_value, jsonable, pick_family, sample_rng, sample_seeds
from pipeline.synth.pool import Executor, fan_out

__all__ = ["DEFAULT_STRUCTURE_RANGES", "plan_samples", "plan_renders", "make_sample", "build_dataset", "partial_path"]

#: Structure parameters drawn per sample (numbers are fixed, pairs are ranges).
DEFAULT_STRUCTURE_RANGES: dict[str, float | tuple[float, float]] = {
    "porosity": 0.5,
    "median_nm": 100.0,
    "sigma": 0.3,
    "correlation_nm": 50.0,
    "particles_per_aggregate": 12.0,
}


def plan_samples(
    count: int,
    *,
    seed: int,
    shape: Sequence[int],
    voxel_size_nm: Sequence[float],
    families: Mapping[str, float],
    structure_ranges: Mapping[str, float | Sequence[float]],
    render: Mapping[str, Any] | None,
    render_ranges: Mapping[str, float | Sequence[float]] | None = None,
    start: int = 0,
    generator: str = "porelab",
) -> list[dict[str, Any]]:
    """Every sample's full description, drawn reproducibly from ``seed``.

    Parameters
    ----------
    count : int
        Number of samples.
    seed : int
        Dataset seed; sample ``i`` draws from ``SeedSequence([seed, i, ...])``.
    shape, voxel_size_nm :
        Voxels z, y, x and their size in nm.
    families : mapping
        Structure family -> weight (see :mod:`pipeline.synth.structures`).
    structure_ranges : mapping
        porosity, median_nm, sigma, correlation_nm, particles_per_aggregate:
        a number or a ``[low, high]`` range each.
    render : mapping or None
        ``{"backend": "builtin" | "blender", ...backend options}``; None for
        structures only.
    render_ranges : mapping, optional
        Renderer parameters (numbers or ranges); default
        :data:`~pipeline.synth.params.DEFAULT_RENDER_RANGES`.
    start : int
        Index of the first sample.
    generator : {"porelab", "pumapy"}
        Generator of the ``solid_spheres`` family.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1; got {count}")
    ranges = {**DEFAULT_STRUCTURE_RANGES, **dict(structure_ranges)}
    rranges = dict(DEFAULT_RENDER_RANGES if render_ranges is None else render_ranges)
    plans = []
    for i in range(start, start + count):
        rng = sample_rng(seed, i, 0)
        family = pick_family(families, rng)
        sparams = {k: draw_value(k, ranges[k], rng) for k in sorted(ranges)}
        s_seed, r_seed = sample_seeds(seed, i)
        plan: dict[str, Any] = {
            "index": i,
            "family": family,
            "shape": [int(s) for s in shape],
            "voxel_size_nm": [float(v) for v in voxel_size_nm],
            "structure": sparams,
            "structure_seed": s_seed,
            "generator": generator,
        }
        if render is not None:
            plan["render"] = {
                **dict(render),
                "params": draw_params(rranges, sample_rng(seed, i, 1)),
                "seed": r_seed,
            }
        plans.append(jsonable(plan))
    return plans


def plan_renders(
    source: str | os.PathLike[str],
    *,
    seed: int,
    render: Mapping[str, Any],
    render_ranges: Mapping[str, float | Sequence[float]] | None = None,
) -> list[dict[str, Any]]:
    """Plans that render the structures of a finished dataset ``source`` anew.

    Each sample keeps its structure (labels, spheres, structure record) and
    gets renderer parameters drawn from ``render_ranges`` with ``seed``.
    """
    import zarr

    from pipeline.errors import UserError

    src = Path(source)
    try:
        root = zarr.open_group(src, mode="r")
        n, z, y, x = root["labels"].shape
        vs = [float(v) for v in root.attrs["voxel_size_nm"]]
    except Exception as exc:  # noqa: BLE001 - anything else is not a dataset
        raise UserError(f"{src}: is not a synthetic dataset with labels (sample, z, y, x) ({exc})") from None
    if not root.attrs.get("complete"):
        raise UserError(f"{src}: is an unfinished dataset; finish building it first")
    rranges = dict(DEFAULT_RENDER_RANGES if render_ranges is None else render_ranges)
    plans = []
    for i in range(int(n)):
        _, r_seed = sample_seeds(seed, i)
        plans.append(jsonable({
            "index": i,
            "shape": [int(z), int(y), int(x)],
            "voxel_size_nm": vs,
            "render": {**dict(render), "params": draw_params(rranges, sample_rng(seed, i, 1)), "seed": r_seed},
        }))
    return plans


def _render(labels: np.ndarray, voxel_size_nm: Sequence[float], spec: Mapping[str, Any]) -> Any:
    backend = spec.get("backend", "builtin")
    if backend == "builtin":
        from pipeline.synth.render_builtin import render_builtin

        return render_builtin(labels, voxel_size_nm, spec["params"], seed=int(spec["seed"]))
    if backend == "blender":
        from pipeline.synth.render_blender import render_blender

        opts = {k: v for k, v in spec.items() if k not in ("backend", "params", "seed")}
        return render_blender(labels, voxel_size_nm, spec["params"], seed=int(spec["seed"]), **opts)
    raise ValueError(f"render backend {backend!r} is unknown; expected builtin or blender")


def make_sample(store: str, plan: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """Make and write one sample (the unit of work); return its record.

    Idempotent: if the sample's record exists it is returned untouched;
    otherwise the sample is made from its plan and written (arrays first,
    record last).

    Parameters
    ----------
    store : str
        Dataset store being built (created by :func:`pipeline.synth.dataset.create_store`).
    plan : mapping
        One entry of :func:`plan_samples`.
    source : str, optional
        A finished dataset whose labels (sample ``plan["index"]``) are
        rendered instead of generating a structure (the ``render`` stage).
    """
    from pipeline.synth.structures import generate

    i = int(plan["index"])
    done = dstore.read_record(store, i)
    if done is not None:
        return done
    t0 = time.perf_counter()
    vs = tuple(plan["voxel_size_nm"])
    spheres = None
    if source is None:
        sp = plan["structure"]
        st = generate(
            plan["family"],
            shape=plan["shape"],
            porosity=sp["porosity"],
            voxel_size_nm=vs,
            seed=int(plan["structure_seed"]),
            median_nm=sp["median_nm"],
            sigma=sp["sigma"],
            correlation_nm=sp["correlation_nm"],
            particles_per_aggregate=sp["particles_per_aggregate"],
            generator=plan.get("generator", "porelab"),
        )
        labels = st.labels
        spheres = st.spheres
        record: dict[str, Any] = {
            "family": plan["family"],
            "generator": plan.get("generator", "porelab"),
            "target_porosity": float(sp["porosity"]),
            "porosity": st.porosity,
            "structure": {k: v for k, v in sp.items() if k != "porosity"},
            "structure_seed": int(plan["structure_seed"]),
            "n_spheres": int(len(st.spheres)),
            "sphere_phase": -1 if st.sphere_phase is None else int(st.sphere_phase),
        }
    else:
        import zarr

        src = zarr.open_group(source, mode="r")
        labels = np.asarray(src["labels"][i])
        spheres = np.asarray(src["spheres"][dstore.sample_id(i)][...]) if dstore.sample_id(i) in src["spheres"] else None
        srec = dstore.read_record(source, i) or {}
        record = {k: v for k, v in srec.items() if k not in ("render", "render_seed", "seconds", "render_backend")}
    t1 = time.perf_counter()
    image = drift = None
    if "render" in plan:
        res = _render(labels, vs, plan["render"])
        image, drift, labels = res.image, res.drift_px, res.labels
        record["render"] = dict(res.params)
        record["render_seed"] = int(plan["render"]["seed"])
        record["render_backend"] = str(plan["render"].get("backend", "builtin"))
        from pipeline.synth.stats import shine_through_share

        record["shine_through"] = round(shine_through_share(image, labels), 4)
    t2 = time.perf_counter()
    record["seconds_structure"] = round(t1 - t0, 4)
    record["seconds_render"] = round(t2 - t1, 4)
    dstore.write_sample(store, i, labels=labels, image=image, drift_px=drift, spheres=spheres, record=record)
    return record


def partial_path(out: str | os.PathLike[str]) -> Path:
    """The folder an unfinished build of ``out`` lives in (stable, so a rerun resumes)."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def _build_key(plans: Sequence[Mapping[str, Any]], source: str | None) -> str:
    text = json.dumps({"plans": list(plans), "source": source}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def build_dataset(
    out: str | os.PathLike[str],
    plans: Sequence[Mapping[str, Any]],
    *,
    seed: int,
    card: Mapping[str, Any] | None = None,
    source: str | os.PathLike[str] | None = None,
    executor: Executor = "ray",
    max_retries: int = 3,
    splits: Mapping[str, float] | None = None,
    overwrite: bool = False,
    figures: bool = True,
    work_dir: str | os.PathLike[str] | None = None,
    progress: str | None = None,
    cpus_per_sample: float = 1.0,
) -> dict[str, Any]:
    """Build (or resume) a dataset store from sample plans.

    Parameters
    ----------
    out : path
        Store to create (``DATASET.zarr``); appears only when complete.
    plans : list of dict
        From :func:`plan_samples` (indices ``0..n-1``).
    seed : int
        Dataset seed (for the split rule).
    card : mapping, optional
        Job description and ranges for the dataset card.
    source : path, optional
        Finished dataset whose structures are rendered (render stage).
    executor : {"ray", "local"}
        Ray tasks (Ray must be running) or this process.
    max_retries : int
        Retries of a sample whose worker died.
    splits : mapping, optional
        Split fractions (default 0.8 / 0.1 / 0.1).
    overwrite : bool
        Replace ``out`` if it exists.
    figures : bool
        Write the size-distribution plot and example panels.
    work_dir : path, optional
        Where the unfinished store lives (default next to ``out``); must be
        on the same file system.
    progress : str, optional
        Label of a progress bar over samples.
    cpus_per_sample : float
        CPUs a sample's Ray task reserves (more than 1 bounds how many run at once).

    Returns
    -------
    dict
        The dataset card with achieved statistics.
    """
    from pipeline.errors import UserError

    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    n = len(plans)
    if [int(p["index"]) for p in plans] != list(range(n)):
        raise ValueError("plans must be numbered 0..n-1 in order")
    first = plans[0]
    src = None if source is None else str(source)
    key = _build_key(plans, src)
    tmp = Path(work_dir) / f"{out.name}.partial" if work_dir is not None else partial_path(out)
    if not dstore.store_matches(tmp, key):
        dstore.create_store(tmp, n, first["shape"], first["voxel_size_nm"], with_image="render" in first, build_key=key)
    todo = sorted(set(range(n)) - dstore.done_samples(tmp))
    try:
        fan_out(make_sample, [(str(tmp), plans[i], src) for i in todo], executor=executor, max_retries=max_retries,
                progress=progress, num_cpus=cpus_per_sample)
    except BaseException:
        if not dstore.done_samples(tmp):  # nothing worth resuming
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    split_list = assign_splits(n, seed, splits)
    full_card = {
        **dict(card or {}),
        "seed": int(seed),
        "count": n,
        "shape": first["shape"],
        "voxel_size_nm": first["voxel_size_nm"],
        "source": src,
    }
    full_card = dstore.finalize(tmp, n, split_list, full_card)
    if figures:
        from pipeline.synth.figures import example_panels, psd_figure

        stats = psd_figure(tmp)
        full_card = {**full_card, "achieved": {**full_card["achieved"], "size_distribution": stats}}
        dstore.finalize(tmp, n, split_list, full_card)
        example_panels(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return full_card
