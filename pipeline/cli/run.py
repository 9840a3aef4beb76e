"""``porelab run``: run a job file into runs/<name>/."""

from __future__ import annotations

import argparse
import signal
from types import FrameType

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "run",
        help="run a job file (stages, manifest, report) into runs/<name>/",
        description=(
            "Run the stages of a job in order. A stage whose output is up to date is skipped; an interrupted\n"
            "stage resumes without redoing finished blocks. Writes runs/<name>/manifest.json and the report."
        ),
        example="porelab run jobs/demo.yaml --dask tcp://127.0.0.1:8786",
    )
    p.add_argument("job", help="YAML job file")
    p.add_argument("--dask", metavar="ADDRESS", help="use a running Dask scheduler (tcp://HOST:PORT)")
    p.add_argument("--ray", metavar="ADDRESS", help="join a running Ray cluster (HOST:PORT)")
    p.add_argument("--fresh", action="store_true", help="delete the run folder and redo every stage")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="folder of run folders (default: runs)")
    p.set_defaults(func=_run)


def _terminated(signum: int, frame: FrameType | None) -> None:
    # scancel, a time limit, kill: unwind like Ctrl-C so the manifest says the stage stopped
    raise SystemExit(128 + signum)


def _run(args: argparse.Namespace) -> int:
    from pipeline.jobs.runner import run_job

    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        result = run_job(args.job, runs_dir=args.runs_dir, dask_address=args.dask, ray_address=args.ray, fresh=args.fresh)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not result.ran:
        print(f"{result.run_dir}: up to date, nothing to do (use --fresh to redo it)")
    else:
        print(f"{result.run_dir}: ran {', '.join(result.ran)}"
              + (f"; up to date: {', '.join(result.skipped)}" if result.skipped else ""))
    if result.report is not None:
        print(f"report: {result.report}")
    return 0
