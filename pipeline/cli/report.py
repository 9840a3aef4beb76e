"""``porelab report``: (re)write the HTML report of a run folder."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "report",
        help="write RUN_DIR/report/index.html, one self-contained page of plots and tables",
        description=(
            "Build the report of a run folder written by 'porelab run' from its manifest.json and stores: input,\n"
            "correction diagnostics, example slices with the segmentations, porosity per slice, pore-size\n"
            "distribution, mesh comparison, baseline sensitivity, every metric and the provenance. Sections appear\n"
            "only when the run has their data. 'porelab run' writes it at the end of every run."
        ),
        example="porelab report runs/demo",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (holds manifest.json)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.errors import UserError
    from pipeline.report import write_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such folder; expected a run folder written by 'porelab run'")
    path = write_report(run_dir)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stdout)
    return 0
