"""``porelab logs``: the log of a submitted job, whole or as it grows."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "logs",
        help="print the log of a submitted job (--follow: until it ends)",
        description=(
            "The output of a job that porelab submit started: SLURM's batch output, the Ray job's driver\n"
            "log, or the detached Dask run's log file. JOB_ID as submit printed it, or a RUN_DIR (its\n"
            "latest submission)."
        ),
        example="porelab logs 4242 --follow",
    )
    p.add_argument("ref", metavar="JOB_ID|RUN_DIR", help="a submitted job's id or its run folder")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job has ended")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="folder of run folders (default: runs)")
    p.set_defaults(func=_run)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _run(args: argparse.Namespace) -> int:
    from pipeline.submit.records import find_submission
    from pipeline.submit.submission import stream_logs

    stream_logs(find_submission(args.ref, args.runs_dir), follow=args.follow, write=_write)
    return 0
