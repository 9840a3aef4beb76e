"""Entry point of the ``porelab`` command line.

Each verb lives in its own module ``pipeline.cli.<verb>`` with
``register(subparsers)`` adding its parser (help with an example) and setting
``func(args) -> int``. A verb is listed here only once it really works.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

import pipeline
from pipeline.errors import UserError

__all__ = ["main", "build_parser", "COMMANDS"]

#: verb modules, in the order ``porelab --help`` lists them.
COMMANDS: list[str] = [
    "analyze",
    "ingest",
    "info",
    "validate",
    "schema",
    "run",
    "submit",
    "status",
    "logs",
    "correct",
    "preprocess",
    "synth",
    "train",
    "segment",
    "models",
    "mesh",
    "measure",
    "baseline",
    "report",
    "export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="porelab",
        description="FIB-SEM stacks of porous electrodes to 3D segmentation, porosity and pore sizes.",
        epilog="Run 'porelab VERB --help' for a verb's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"porelab {pipeline.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    sub = parser.add_subparsers(dest="command", metavar="VERB")
    for name in COMMANDS:
        importlib.import_module(f"pipeline.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )

    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"porelab {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"porelab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
