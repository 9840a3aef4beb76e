"""``porelab validate``: check a job file without running it."""

from __future__ import annotations

import argparse

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "validate",
        help="check a job file against the job schema",
        description="Validate a YAML job file: unknown keys, wrong types, out-of-range values and bad names are errors.",
        example="porelab validate jobs/demo.yaml",
    )
    p.add_argument("job", help="YAML job file")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.jobs.models import load_job

    spec = load_job(args.job)
    stages = ", ".join(f"{n} ({s.stage})" for n, s in zip(spec.stage_names(), spec.stages))
    print(f"{args.job}: valid job {spec.name!r} with {len(spec.stages)} stage(s): {stages}")
    return 0
