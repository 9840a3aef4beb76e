"""``porelab schema``: write the JSON Schema of job files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.cli._common import add_parser

__all__ = ["register", "schema_text"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "schema",
        help="write the JSON Schema of job files (or of model.json)",
        description="Print or write the JSON Schema generated from porelab's job models (for editors and CI);\n"
        "with --model, the schema of a model folder's model.json.",
        example="porelab schema --out schemas/job.schema.json   (porelab schema --model --out schemas/model.schema.json)",
    )
    p.add_argument("--out", metavar="PATH", help="file to write (default: standard output)")
    p.add_argument("--model", action="store_true", help="the schema of model.json instead of job files")
    p.set_defaults(func=_run)


def schema_text(model: bool = False) -> str:
    """The schema as checked in: sorted keys, two-space indent, final newline (``model``: of model.json)."""
    if model:
        from pipeline.models.card import model_schema

        return json.dumps(model_schema(), indent=2, sort_keys=True) + "\n"
    from pipeline.jobs.models import job_schema

    return json.dumps(job_schema(), indent=2, sort_keys=True) + "\n"


def _run(args: argparse.Namespace) -> int:
    text = schema_text(args.model)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
