"""Small helpers shared by the command-line verbs."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["add_parser", "numbers"]


def add_parser(sub: argparse._SubParsersAction, name: str, *, help: str, description: str, example: str) -> argparse.ArgumentParser:
    """Add a verb's parser with its help line, description and an example in the epilog."""
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def numbers(kind: type = float, counts: tuple[int, ...] = (3,), what: str = "Z,Y,X",
            unit: str = "") -> Callable[[str], list]:
    """An argparse type: comma-separated positive numbers (``counts`` of them) such as ``10,5,5``."""
    noun = "integers" if kind is int else "numbers"
    many = " or ".join(str(c) for c in counts)

    def parse(text: str) -> list:
        try:
            v = [kind(t) for t in text.split(",")]
        except ValueError:
            v = []
        if len(v) not in counts or min(v) <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected {many} positive {noun} {what}{unit}")
        return v

    return parse
