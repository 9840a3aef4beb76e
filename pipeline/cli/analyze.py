"""``porelab analyze``: a user's stack end to end — correction, learned segmentation, measurements, meshes, report."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser, numbers

__all__ = ["register"]


_voxel = numbers(float, (3,), "Z,Y,X", " in nm")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "analyze",
        help="a FIB-SEM stack end to end: correct, segment with the shipped U-Nets, measure, mesh, report",
        description=(
            "Run the whole method on STACK (a multi-page TIFF, a folder of slices, a .npy or a zarr store; one image is\n"
            "one slice): ingest -> correct (tilt, curtaining, drift, ROI) -> preprocess -> segment (2D / 2.5D\n"
            "U-Net) -> refine (3D U-Net) -> baseline (threshold method, for the spread it removes) -> measure ->\n"
            "mesh -> report, out of core on a local Dask cluster. It is a job (DIR/job.yaml) and DIR a run folder:\n"
            "run it again and finished steps are skipped. DIR gets mask.zarr (uint8, 1 = pore, in the corrected\n"
            "geometry, coordinates in nm), probability.zarr, metrics.json, meshes/, report/index.html."
        ),
        example="porelab analyze stack.tif --voxel-size 10,5,5 --out results/sample1",
    )
    p.add_argument("stack", help="TIFF stack, folder of slices, .npy or zarr store")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder to write (its name is the run's name)")
    p.add_argument("--voxel-size", type=_voxel, default=None, metavar="Z,Y,X", help="voxel size in nm (slice spacing z, pixel y, x)")
    p.add_argument("--angle", type=float, default=52.0, metavar="DEG",
                   help="angle between electron beam and milled face (default 52; 90 = no foreshortening)")
    p.add_argument("--no-tilt", action="store_true", help="the stack is not foreshortened (micro-CT, already corrected): same as --angle 90")
    p.add_argument("--model", default="default", metavar="DIR", help="2D / 2.5D model (default: the shipped one)")
    p.add_argument("--refine-model", default="default", metavar="DIR", help="3D refinement model; 'none' to skip it")
    p.add_argument("--truth", default=None, metavar="LABELS", help="reference labels (1 = pore): adds metrics against them")
    p.add_argument("--truth-voxel-size", type=_voxel, default=None, metavar="Z,Y,X", help="voxel size of a TIFF/npy reference")
    p.add_argument("--methods", default="voxel_direct", metavar="M1,M2", help="meshing methods (default voxel_direct)")
    p.add_argument("--no-baseline", action="store_true", help="skip the threshold baseline")
    p.add_argument("--tta", action="store_true", help="test-time flips (slower; writes the uncertainty)")
    p.add_argument("--resample", action="store_true", help="segment at the voxel size the model was trained at")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it holds something else")
    p.add_argument("--dask", metavar="ADDRESS", help="use a running Dask scheduler (tcp://HOST:PORT)")
    p.add_argument("--ray", metavar="ADDRESS", help="join a running Ray cluster (HOST:PORT)")
    p.add_argument("--backend", choices=["numpy", "cupy", "auto"], default="numpy", help="array backend of the workers")
    p.add_argument("--workers", type=int, default=None, help="local Dask workers (default: one per core)")
    p.add_argument("--memory-limit", default=None, metavar="SIZE", help="memory limit per local worker, e.g. 4GiB")
    p.set_defaults(func=_run)


def _check_out(out: "Path", overwrite: bool, stack: str) -> None:  # noqa: F821
    import json
    import shutil

    from pipeline.errors import UserError

    if not out.exists() or not any(out.iterdir()):
        return
    manifest = out / "manifest.json"
    ours = False
    if manifest.is_file():
        try:
            ours = json.loads(manifest.read_text()).get("spec", {}).get("description") == f"porelab analyze {stack}"
        except (OSError, json.JSONDecodeError):
            ours = False
    if ours:
        return  # the same analysis: resume it
    if not overwrite:
        raise UserError(f"{out}: already holds something else; choose another --out or pass --overwrite to replace it")
    shutil.rmtree(out)


def _run(args: argparse.Namespace) -> int:
    import re
    from pathlib import Path

    import yaml

    from pipeline.errors import UserError
    from pipeline.io.stacks import open_stack
    from pipeline.io.stores import is_zarr_store
    from pipeline.jobs.recipes import analyze_job
    from pipeline.jobs.runner import run_job

    out = Path(args.out).resolve()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", out.name) or ".." in out.name:
        raise UserError(f"--out {args.out}: the folder name {out.name!r} must be letters, digits, _ . - (it names the run)")
    stack = Path(args.stack)
    if is_zarr_store(stack):
        from pipeline.io.stores import volume_from_store

        volume_from_store(stack, voxel_size_nm=args.voxel_size)  # checks it now, before anything runs
    else:
        open_stack(stack)
        if args.voxel_size is None:
            raise UserError(f"{stack}: a stack records no voxel size; pass --voxel-size Z,Y,X in nm")
    angle = 90.0 if args.no_tilt else args.angle
    if not 0 < angle <= 90:
        raise UserError(f"--angle {args.angle} is not valid; expected degrees in (0, 90]")
    from pipeline.models.folder import read_card, resolve_model

    def absolute(ref: str) -> str:  # a folder given on the command line, not a shipped model's name
        return str(Path(ref).resolve()) if Path(ref).exists() else ref

    model = absolute(args.model)
    card = read_card(resolve_model(model, task="segment"))
    refine = None if args.refine_model == "none" else absolute(args.refine_model)
    if refine is not None:
        resolve_model(refine, task="refine")
    methods = [m for m in args.methods.split(",") if m]
    dask = {k: v for k, v in (("n_workers", args.workers), ("memory_limit", args.memory_limit)) if v is not None}
    spec = analyze_job(stack, name=out.name, voxel_size_nm=args.voxel_size, angle_deg=angle, model=model,
                       refine=refine, truth=args.truth, truth_voxel_size_nm=args.truth_voxel_size, methods=methods,
                       baseline=not args.no_baseline, tta=args.tta, resample=args.resample, backend=args.backend, dask=dask)
    if args.truth and is_zarr_store(args.truth):
        from pipeline.io.volume import open_volume

        for st in spec["stages"]:
            if st.get("name") == "truth":
                st["variable"] = str(open_volume(args.truth).name)
    _check_out(out, args.overwrite, str(stack))
    out.mkdir(parents=True, exist_ok=True)
    job = out / "job.yaml"
    job.write_text("# written by porelab analyze; 'porelab run' of this file resumes or redoes the analysis\n"
                   + yaml.safe_dump(spec, sort_keys=False))
    from pipeline.segment.volume import check_voxel_size

    if args.voxel_size and not args.resample:
        warn = check_voxel_size(card, args.voxel_size)
        if warn:
            print(f"porelab analyze: warning: {warn}", file=sys.stderr)
    result = run_job(job, runs_dir=out.parent, dask_address=args.dask, ray_address=args.ray)
    _summary(out)
    if result.report is not None:
        print(f"report: {result.report}")
    return 0


def _summary(out: "Path") -> None:  # noqa: F821
    import json

    from pipeline.analyze.measure import summary_line

    m = json.loads((out / "metrics.json").read_text())
    line = f"{out}: {summary_line(m)}"
    if m.get("baseline"):
        b = m["baseline"]
        line += f"; threshold baseline porosity {b['porosity']:.4f}"
        if "sweep_spread" in b:
            line += f" (spread {b['sweep_spread']:.3f} over its parameter sweep)"
    print(line)
