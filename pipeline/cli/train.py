"""``porelab train``: run a job's stages up to its last training stage (train2d / train3d)."""

from __future__ import annotations

import argparse

from pipeline.cli._common import add_parser

__all__ = ["register", "TRAIN_KINDS"]

TRAIN_KINDS = ("train2d", "train3d")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "train",
        help="run a job's stages up to its last training stage (synthetic data, train2d, train3d)",
        description=(
            "Run the stages of JOB.yaml in order up to and including its last train2d / train3d stage, as 'porelab run'\n"
            "would (up-to-date stages are skipped; training resumes from its last checkpoint). Training runs on Ray\n"
            "Train workers (workers: {num_workers: N, use_gpu: true} in the stage) or in one process (executor: local).\n"
            "The model folders are runs/<name>/<stage>/model/ (weights.safetensors, model.json, README.md card)."
        ),
        example="porelab train jobs/train-default.yaml --ray 127.0.0.1:6379",
    )
    p.add_argument("job", help="YAML job file with train2d / train3d stages")
    p.add_argument("--dask", metavar="ADDRESS", help="use a running Dask scheduler (tcp://HOST:PORT)")
    p.add_argument("--ray", metavar="ADDRESS", help="join a running Ray cluster (HOST:PORT)")
    p.add_argument("--fresh", action="store_true", help="delete the run folder and start over")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="folder of run folders (default: runs)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.errors import UserError
    from pipeline.jobs.models import load_job
    from pipeline.jobs.runner import run_job

    spec = load_job(args.job)
    names = [s.name or s.stage for s in spec.stages if s.stage in TRAIN_KINDS]
    if not names:
        raise UserError(f"{args.job}: has no train2d or train3d stage; 'porelab run' runs a job without training")
    result = run_job(args.job, runs_dir=args.runs_dir, dask_address=args.dask, ray_address=args.ray, fresh=args.fresh,
                     until=names[-1])
    for name in names:
        model = result.run_dir / name / "model"
        print(f"{name}: {model}" if (model / "model.json").is_file() else f"{name}: no model written")
    if result.report is not None:
        print(f"report: {result.report}")
    return 0
