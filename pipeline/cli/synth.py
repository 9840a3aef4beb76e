"""``porelab synth``: a synthetic FIB-SEM dataset (structures + rendered slices) in one zarr store."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pipeline.cli._common import add_parser

__all__ = ["register"]


def _triple(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, Any, Any]:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != 3 or min(values) <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected three positive numbers Z,Y,X")
        return values  # type: ignore[return-value]

    return parse


def _range(text: str) -> float | tuple[float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        return values[0]
    if len(values) == 2 and values[0] <= values[1]:
        return (values[0], values[1])
    raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected a number or LOW,HIGH")


def _family(text: str) -> tuple[str, float]:
    name, _, weight = text.partition("=")
    try:
        w = float(weight) if weight else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected FAMILY or FAMILY=WEIGHT") from None
    return name, w


def _param(text: str) -> tuple[str, float | tuple[float, float]]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected NAME=VALUE or NAME=LOW,HIGH")
    return name.strip(), _range(value)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "synth",
        help="generate a synthetic dataset: porous structures and FIB-SEM-like renders",
        description=(
            "Generate N porous structures with known labels (PuMA random spheres with log-normal diameters, and other\n"
            "families) and render every slice as a FIB-SEM image (cut face at the SEM angle, shine-through of pores,\n"
            "charging, curtaining, drift, noise; every renderer parameter drawn per sample from its range). Samples\n"
            "are made as Ray tasks in parallel. The store opens as an xarray Dataset with image and labels\n"
            "(sample, z, y, x), a split coordinate and per-sample parameters; figures/ holds the dataset card,\n"
            "the size distributions against log-normal fits and example panels. It appears only when complete;\n"
            "running the same command again after an interruption resumes it. Numbers given as LOW,HIGH are\n"
            "ranges drawn per sample."
        ),
        example="porelab synth --count 16 --shape 150,150,150 --porosity 0.4,0.6 --seed 1 -o synth.zarr",
    )
    p.add_argument("--count", type=int, required=True, metavar="N", help="number of samples")
    p.add_argument("--shape", type=_triple(int), default=(150, 150, 150), metavar="Z,Y,X", help="voxels per sample (default 150,150,150)")
    p.add_argument("--voxel-size", type=_triple(float), default=(10.0, 10.0, 10.0), metavar="Z,Y,X", help="voxel size in nm (default 10,10,10)")
    p.add_argument("--porosity", type=_range, default=0.5, metavar="P|LO,HI", help="target porosity (default 0.5)")
    p.add_argument("--median-nm", type=_range, default=100.0, metavar="D|LO,HI", help="median sphere diameter in nm (default 100)")
    p.add_argument("--sigma", type=_range, default=0.3, metavar="S|LO,HI", help="sigma of ln(diameter) (default 0.3)")
    p.add_argument("--family", type=_family, action="append", metavar="NAME[=W]",
                   help="structure family and weight, repeatable: solid_spheres (default), pore_spheres, blobs, agglomerates")
    p.add_argument("--generator", choices=["porelab", "pumapy"], default="porelab",
                   help="generator of solid_spheres: porelab (log-normal) or NASA pumapy (conda-forge; one diameter)")
    p.add_argument("--renderer", choices=["builtin", "blender", "none"], default="builtin", help="slice renderer (default builtin)")
    p.add_argument("--render-param", type=_param, action="append", default=[], metavar="NAME=V|NAME=LO,HI",
                   help="renderer parameter or range, repeatable (e.g. dose=30,100 or sem_angle_deg=52)")
    p.add_argument("--blender-samples", type=int, default=16, metavar="N", help="Cycles samples per pixel (default 16)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="CPUs of the local Ray instance (default all); 0 makes the samples in this process without Ray")
    p.add_argument("--ray", default=None, metavar="HOST:PORT", help="join a running Ray cluster instead of starting one")
    p.add_argument("--no-figures", action="store_true", help="skip the size-distribution plot and example panels")
    p.add_argument("-o", "--output", required=True, metavar="DATASET.zarr", help="store to write")
    p.add_argument("--overwrite", action="store_true", help="replace DATASET.zarr if it exists")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from pipeline.errors import UserError
    from pipeline.jobs.stages.synth import RenderSpec, StructureSpec
    from pipeline.synth.factory import build_dataset, plan_samples

    if args.count < 1:
        raise UserError(f"--count {args.count} is not valid; expected a positive number of samples")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers {args.workers} is not valid; expected 0 or more")
    families = dict(args.family or [("solid_spheres", 1.0)])
    from pipeline.synth.structures import FAMILIES

    for name in families:
        if name not in FAMILIES:
            raise UserError(f"--family {name} is unknown; expected one of {', '.join(FAMILIES)}")
    try:
        structure = StructureSpec(families=families, porosity=args.porosity, median_nm=args.median_nm, sigma=args.sigma,
                                  generator=args.generator)
        render = None if args.renderer == "none" else RenderSpec(
            backend=args.renderer, params=dict(args.render_param), samples=args.blender_samples)
    except ValidationError as err:
        first = err.errors()[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        option = {"params": "--render-param", "families": "--family", "samples": "--blender-samples"}
        where = option.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else ""
        raise UserError(f"{where}: {msg}" if where else msg) from None
    if render is not None and render.backend == "blender":
        from pipeline.synth.render_blender import blender_available

        if not blender_available():
            raise UserError("--renderer blender needs bpy 4.2; install it with pip install 'porelab[blender]'")
    if args.generator == "pumapy":
        from pipeline.synth.structures import pumapy_available

        if not pumapy_available():
            raise UserError("--generator pumapy needs NASA's pumapy (conda install -c conda-forge pumapy)")
    plans = plan_samples(
        args.count,
        seed=args.seed,
        shape=args.shape,
        voxel_size_nm=args.voxel_size,
        families=structure.families,
        structure_ranges=structure.ranges(),
        render=None if render is None else render.options(),
        render_ranges=None if render is None else render.ranges(),
        generator=args.generator,
    )
    card = {
        "job": {"command": "porelab synth", "argv": sys.argv[1:]},
        "structure_ranges": structure.ranges(),
        "families": structure.families,
        "render_ranges": None if render is None else render.ranges(),
        "render_backend": None if render is None else render.backend,
    }
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = dict(seed=args.seed, card=card, overwrite=args.overwrite, figures=not args.no_figures,
                                  progress="synth: samples")
    try:
        if args.workers == 0 and args.ray is None:
            result = build_dataset(args.output, plans, executor="local", **kwargs)
        else:
            from pipeline.engine.ray_cluster import ray_session

            with ray_session(args.ray, num_cpus=args.workers):
                result = build_dataset(args.output, plans, executor="ray", **kwargs)
    except ValueError as exc:
        cause = getattr(exc, "cause", None) or exc  # a Ray task error carries the worker's exception
        raise UserError(f"the structure parameters cannot be met ({cause})") from None
    seconds = time.perf_counter() - t0
    ach = result["achieved"]
    print(
        f"{args.output}: {args.count} samples of {' x '.join(map(str, args.shape))} voxels, porosity "
        f"{ach['porosity_min']:.3f}..{ach['porosity_max']:.3f} (max error {ach['porosity_abs_error_max']:.4f}), "
        f"splits {ach['splits']}, {seconds:.1f} s ({60 * args.count / max(seconds, 1e-9):.1f} samples/min)"
    )
    return 0
